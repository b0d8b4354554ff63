package aiprod_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/bytestream"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

const (
	apiKey     = "aiprod_test_unit"
	adminToken = "admin-unit"
)

var states = []aiprodv1.JobState{
	aiprodv1.JobState_JOB_STATE_QUEUED,
	aiprodv1.JobState_JOB_STATE_PLANNING,
	aiprodv1.JobState_JOB_STATE_AWAITING_APPROVAL,
	aiprodv1.JobState_JOB_STATE_RENDERING,
	aiprodv1.JobState_JOB_STATE_QUALITY_CHECK,
	aiprodv1.JobState_JOB_STATE_DELIVERED,
}

func event(job string, seq uint64) *aiprodv1.WatchJobResponse {
	return &aiprodv1.WatchJobResponse{Event: &aiprodv1.JobEvent{JobId: job, Sequence: seq, State: states[seq-1]}}
}

// recorder keeps what the fake server saw.
type recorder struct {
	mu         sync.Mutex
	auth       map[string]string
	deadline   map[string]time.Duration // 0: none
	watchAfter []uint64
	userAgent  string
	calls      map[string]int // attempts per method/key, for the retry tests
	requestIDs []string       // of every CreateJob attempt
}

// attempts returns how many attempts of key the server saw.
func (r *recorder) attempts(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[key]
}

// count adds one attempt of key and returns how many there were.
func (r *recorder) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[key]++
	return r.calls[key]
}

func (r *recorder) record(ctx context.Context, method string) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.auth[method] = first(md.Get("authorization"))
	r.userAgent = first(md.Get("user-agent"))
	if d, ok := ctx.Deadline(); ok {
		r.deadline[method] = time.Until(d)
	} else {
		r.deadline[method] = 0
	}
}

func (r *recorder) watches() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.watchAfter...)
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func checkAuth(ctx context.Context, token string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if first(md.Get("authorization")) != "Bearer "+token {
		st, _ := status.New(codes.Unauthenticated, "missing or invalid bearer token").
			WithDetails(&errdetails.ErrorInfo{Reason: "API_KEY_INVALID", Domain: "aiprod.dev"})
		return st.Err()
	}
	return nil
}

type fakePresets struct {
	aiprodv1.UnimplementedPresetServiceServer
	rec *recorder
}

func (f *fakePresets) ListPresets(ctx context.Context, _ *aiprodv1.ListPresetsRequest) (*aiprodv1.ListPresetsResponse, error) {
	f.rec.record(ctx, "ListPresets")
	if err := checkAuth(ctx, apiKey); err != nil {
		return nil, err
	}
	var out []*aiprodv1.Preset
	for _, id := range []string{"quick_social", "brand_campaign", "premium_spot"} {
		out = append(out, &aiprodv1.Preset{PresetId: id})
	}
	return &aiprodv1.ListPresetsResponse{Presets: out}, nil
}

func (f *fakePresets) GetPreset(ctx context.Context, req *aiprodv1.GetPresetRequest) (*aiprodv1.GetPresetResponse, error) {
	f.rec.record(ctx, "GetPreset")
	// "fail-N": UNAVAILABLE on the first N attempts; "down": always UNAVAILABLE.
	if n, ok := strings.CutPrefix(req.GetPresetId(), "fail-"); ok {
		if limit, _ := strconv.Atoi(n); f.rec.count("GetPreset/"+req.GetPresetId()) <= limit {
			return nil, status.Error(codes.Unavailable, "connection refused")
		}
	}
	if req.GetPresetId() == "down" {
		f.rec.count("GetPreset/down")
		return nil, status.Error(codes.Unavailable, "connection refused")
	}
	if req.GetPresetId() == "slow" {
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &aiprodv1.GetPresetResponse{Preset: &aiprodv1.Preset{PresetId: req.GetPresetId()}}, nil
}

type fakeRender struct {
	aiprodv1.UnimplementedRenderServiceServer
	rec   *recorder
	store *fakeStore
	mu    sync.Mutex
	n     map[string]int // WatchJob connections per job
}

func (f *fakeRender) CreateJob(ctx context.Context, req *aiprodv1.CreateJobRequest) (*aiprodv1.CreateJobResponse, error) {
	if err := checkAuth(ctx, apiKey); err != nil {
		return nil, err
	}
	f.rec.mu.Lock()
	f.rec.requestIDs = append(f.rec.requestIDs, req.GetRequestId())
	f.rec.mu.Unlock()
	if req.GetBrief() == "lost response brief" && f.rec.count("CreateJob/lost") == 1 {
		return nil, status.Error(codes.Unavailable, "connection reset") // as if the reply were lost
	}
	br := &errdetails.BadRequest{}
	add := func(f, d string) {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f, Description: d})
	}
	if req.GetRequestId() == "" {
		add("request_id", "is required")
	}
	if len(req.GetBrief()) < 10 {
		add("brief", "must be 10-10000 characters")
	}
	if req.DurationS != nil && (req.GetDurationS() < 5 || req.GetDurationS() > 300) {
		add("duration_s", "must be 5-300")
	}
	if len(br.FieldViolations) > 0 {
		st, _ := status.New(codes.InvalidArgument, "invalid CreateJob").WithDetails(br)
		return nil, st.Err()
	}
	return &aiprodv1.CreateJobResponse{Job: &aiprodv1.Job{JobId: "job-new", State: aiprodv1.JobState_JOB_STATE_QUEUED}}, nil
}

func (f *fakeRender) GetJob(ctx context.Context, req *aiprodv1.GetJobRequest) (*aiprodv1.GetJobResponse, error) {
	if job := f.store.getJob(req.GetJobId()); job != nil {
		return &aiprodv1.GetJobResponse{Job: job}, nil
	}
	switch req.GetJobId() {
	case "flaky":
		return &aiprodv1.GetJobResponse{Job: &aiprodv1.Job{JobId: "flaky", State: aiprodv1.JobState_JOB_STATE_RENDERING, LastSequence: 4}}, nil
	case "done", "ok":
		return &aiprodv1.GetJobResponse{Job: &aiprodv1.Job{JobId: req.GetJobId(), State: aiprodv1.JobState_JOB_STATE_DELIVERED, LastSequence: 6}}, nil
	case "busy":
		st, _ := status.New(codes.ResourceExhausted, "rate limited").WithDetails(
			&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "tenant:acme", Description: "rps"}}},
			&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)})
		return nil, st.Err()
	case "late":
		st, _ := status.New(codes.FailedPrecondition, "job is DELIVERED").WithDetails(
			&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{Type: "STATE", Subject: "job:late", Description: "already delivered"}}})
		return nil, st.Err()
	}
	return nil, status.Errorf(codes.NotFound, "job %s not found", req.GetJobId())
}

func (f *fakeRender) ListJobs(ctx context.Context, req *aiprodv1.ListJobsRequest) (*aiprodv1.ListJobsResponse, error) {
	f.rec.record(ctx, "ListJobs")
	size := int(req.GetPageSize())
	if size == 0 {
		size = 3
	}
	start, _ := strconv.Atoi(req.GetPageToken())
	resp := &aiprodv1.ListJobsResponse{}
	for i := start; i < start+size && i < 7; i++ {
		resp.Jobs = append(resp.Jobs, &aiprodv1.Job{JobId: "job-" + strconv.Itoa(i)})
	}
	if start+size < 7 {
		resp.NextPageToken = strconv.Itoa(start + size)
	}
	return resp, nil
}

func (f *fakeRender) WatchJob(req *aiprodv1.WatchJobRequest, stream grpc.ServerStreamingServer[aiprodv1.WatchJobResponse]) error {
	if err := checkAuth(stream.Context(), apiKey); err != nil {
		return err
	}
	job, after := req.GetJobId(), req.GetAfterSequence()
	f.rec.mu.Lock()
	f.rec.watchAfter = append(f.rec.watchAfter, after)
	f.rec.mu.Unlock()
	f.mu.Lock()
	f.n[job]++
	n := f.n[job]
	f.mu.Unlock()
	switch job {
	case "done":
		return nil // delivered long ago: nothing after after_sequence=6
	case "gone":
		return status.Error(codes.NotFound, "job gone not found")
	case "down":
		st, _ := status.New(codes.Unavailable, "shutting down").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Millisecond)})
		return st.Err()
	case "flaky":
		// 1st: 1..3 then UNAVAILABLE; 2nd: an old event again, one new, then an early end; 3rd: the rest.
		if n == 1 {
			for s := after + 1; s <= 3; s++ {
				if err := stream.Send(event(job, s)); err != nil {
					return err
				}
			}
			return status.Error(codes.Unavailable, "server shutting down")
		}
		if n == 2 {
			_ = stream.Send(event(job, after))
			return stream.Send(event(job, after+1))
		}
	}
	for s := after + 1; s <= 6; s++ {
		if job == "slow" {
			time.Sleep(50 * time.Millisecond)
		}
		if err := stream.Send(event(job, s)); err != nil {
			return err
		}
	}
	return stream.Send(event(job, 6)) // never yielded: after the terminal event
}

type fakeAdmin struct {
	aiprodv1.UnimplementedAdminServiceServer
	rec *recorder
}

// CreateTenant (not safe to repeat) by name: "down" is always UNAVAILABLE; "limited" is
// RESOURCE_EXHAUSTED with a 50 ms RetryInfo on the first attempt; "quota" is always
// RESOURCE_EXHAUSTED without RetryInfo.
func (f *fakeAdmin) CreateTenant(_ context.Context, req *aiprodv1.CreateTenantRequest) (*aiprodv1.CreateTenantResponse, error) {
	n := f.rec.count("CreateTenant/" + req.GetName())
	switch req.GetName() {
	case "down":
		return nil, status.Error(codes.Unavailable, "connection refused")
	case "limited":
		if n == 1 {
			st, _ := status.New(codes.ResourceExhausted, "rate limited").WithDetails(
				&errdetails.RetryInfo{RetryDelay: durationpb.New(50 * time.Millisecond)})
			return nil, st.Err()
		}
	case "quota":
		return nil, status.Error(codes.ResourceExhausted, "job quota used up")
	}
	return &aiprodv1.CreateTenantResponse{Tenant: &aiprodv1.Tenant{TenantId: "ten_new", Name: req.GetName()}}, nil
}

func (f *fakeAdmin) ListTenants(ctx context.Context, req *aiprodv1.ListTenantsRequest) (*aiprodv1.ListTenantsResponse, error) {
	f.rec.record(ctx, "ListTenants")
	if err := checkAuth(ctx, adminToken); err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = 2
	}
	start, _ := strconv.Atoi(req.GetPageToken())
	resp := &aiprodv1.ListTenantsResponse{}
	for i := start; i < start+size && i < 5; i++ {
		resp.Tenants = append(resp.Tenants, &aiprodv1.Tenant{TenantId: "ten_" + strconv.Itoa(i)})
	}
	if start+size < 5 {
		resp.NextPageToken = strconv.Itoa(start + size)
	}
	return resp, nil
}

// startFake serves the fake services on a loopback port; it returns the endpoint.
func startFake(t *testing.T) (string, *recorder) {
	t.Helper()
	ep, rec, _ := startFakeStore(t)
	return ep, rec
}

// startFakeStore is startFake that also returns the fake artifact store (jobs with videos, and
// the ByteStream service that serves them).
func startFakeStore(t *testing.T, serverOpts ...grpc.ServerOption) (string, *recorder, *fakeStore) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{auth: map[string]string{}, deadline: map[string]time.Duration{}, calls: map[string]int{}}
	srv := grpc.NewServer(serverOpts...)
	aiprodv1.RegisterPresetServiceServer(srv, &fakePresets{rec: rec})
	store := newFakeStore()
	aiprodv1.RegisterRenderServiceServer(srv, &fakeRender{rec: rec, n: map[string]int{}, store: store})
	aiprodv1.RegisterAdminServiceServer(srv, &fakeAdmin{rec: rec})
	bytestream.RegisterByteStreamServer(srv, &fakeByteStream{store: store})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return "http://" + lis.Addr().String(), rec, store
}
