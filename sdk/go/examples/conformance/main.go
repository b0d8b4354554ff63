// [START quickstart]

// Quickstart of the AIPROD Go SDK: quote a 30-second social clip, create the job (it approves its
// own manifest), follow it to DELIVERED, and download the video to video.mp4 (SHA-256 verified).
//
//	AIPROD_ENDPOINT=http://127.0.0.1:50051 AIPROD_API_KEY=aiprod_test_... go run .
package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/aiprod/aiprod/sdk/go/aiprod"
	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := quickstart(ctx); err != nil {
		log.Fatal(err)
	}
}

func quickstart(ctx context.Context) error {
	// Retries, backoff, keepalive and TLS (for https://) are on by default.
	client, err := aiprod.New(os.Getenv("AIPROD_ENDPOINT"), os.Getenv("AIPROD_API_KEY"))
	if err != nil {
		return err
	}
	defer client.Close()

	// What will it cost? Amounts are integer micro-USD.
	est, err := client.CostEstimator.EstimateCost(ctx, &aiprodv1.EstimateCostRequest{
		PresetId: "quick_social", DurationS: proto.Uint32(30)})
	if err != nil {
		return err
	}
	fmt.Printf("quote $%.2f, at most $%.2f\n",
		float64(est.Recommended.TotalMicros)/1e6, float64(est.Recommended.GuaranteedMaxMicros)/1e6)

	created, err := client.Render.CreateJob(ctx, &aiprodv1.CreateJobRequest{
		RequestId:   rand.Text(), // idempotency key: retrying with it never creates a second job
		PresetId:    "quick_social",
		Brief:       "A 30-second clip for the acme-shoes spring line: runners at dawn.",
		DurationS:   proto.Uint32(30),
		AutoApprove: true, // no manifest review (see the SDK README for reviewing and editing it)
	})
	if err != nil {
		return err
	}
	jobID := created.Job.JobId

	for event, err := range client.WatchJob(ctx, jobID, 0) { // resumes by itself if the connection drops
		if err != nil {
			return err
		}
		fmt.Println(event.Sequence, event.State)
	}

	costs, err := client.CostEstimator.GetJobCosts(ctx, &aiprodv1.GetJobCostsRequest{JobId: jobID})
	if err != nil {
		return err
	}
	fmt.Printf("billed $%.2f (guaranteed max $%.2f)\n",
		float64(costs.Report.BilledMicros)/1e6, float64(costs.Report.GuaranteedMaxMicros)/1e6)

	video, err := client.DownloadVideo(ctx, jobID, "video.mp4") // resumes after drops, verifies the SHA-256
	if err != nil {
		return err
	}
	fmt.Printf("video.mp4: %d bytes, %dx%d, sha256 %s\n", video.SizeBytes, video.Width, video.Height, video.Sha256)
	return nil
}

// [END quickstart]
