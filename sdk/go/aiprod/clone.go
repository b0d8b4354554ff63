package aiprod

import (
	"google.golang.org/protobuf/proto"

	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

func cloneListJobs(r *aiprodv1.ListJobsRequest) *aiprodv1.ListJobsRequest {
	return proto.Clone(r).(*aiprodv1.ListJobsRequest)
}
