package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/aiprod/aiprod/sdk/go/aiprod"
	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

// serverEnv loads the env file of scripts/test-server.sh named by AIPROD_ENV_FILE and returns its
// path. Without one the test is skipped, unless AIPROD_REQUIRE_CONFORMANCE=1 (test.sh) makes it fail.
func serverEnv(t *testing.T) string {
	t.Helper()
	envFile := os.Getenv("AIPROD_ENV_FILE")
	if envFile == "" {
		if os.Getenv("AIPROD_REQUIRE_CONFORMANCE") == "1" {
			t.Fatal("AIPROD_ENV_FILE is not set: no server to run against")
		}
		t.Skip("no server: set AIPROD_ENV_FILE to the env file of scripts/test-server.sh")
	}
	if err := loadEnv(envFile); err != nil {
		t.Fatal(err)
	}
	return envFile
}

// TestConformance runs the README's quickstart (main.go) in a temporary directory, checks the
// video it saved against the server's answer, then runs the 11-step conformance scenario.
func TestConformance(t *testing.T) {
	t.Parallel() // alongside TestRateLimitedTenant, which mostly waits for its tenant's tokens
	serverEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := inTempDir(func() error { // the quickstart saves video.mp4 in the current directory
		if err := quickstart(ctx); err != nil {
			return err
		}
		return checkQuickstartVideo(ctx, "video.mp4")
	})
	if err != nil {
		t.Fatalf("quickstart: %v", err)
	}
	summary, err := conformance(ctx)
	if err != nil {
		t.Fatalf("conformance (go): FAILED: %v", err)
	}
	t.Logf("conformance (go): 11 steps passed: %s", summary)
}

// checkQuickstartVideo checks that path holds the video of the newest quick_social job, as the
// server describes it (size and SHA-256).
func checkQuickstartVideo(ctx context.Context, path string) error {
	client, err := aiprod.NewFromEnv()
	if err != nil {
		return err
	}
	defer client.Close()
	for job, err := range client.Jobs(ctx, &aiprodv1.ListJobsRequest{PresetId: "quick_social", PageSize: 1}) {
		if err != nil {
			return err
		}
		info, err := os.Stat(path)
		if err != nil {
			return err
		}
		if job.State != aiprodv1.JobState_JOB_STATE_DELIVERED || uint64(info.Size()) != job.Video.GetSizeBytes() ||
			fileSHA256(path) != job.Video.GetSha256() {
			return fmt.Errorf("%s (%d bytes) is not the video of %s (%s, %d bytes, sha256 %s)",
				path, info.Size(), job.JobId, job.State, job.Video.GetSizeBytes(), job.Video.GetSha256())
		}
		return nil
	}
	return fmt.Errorf("no quick_social job")
}

// conformance runs the scenario, turning a failed check into an error.
func conformance(ctx context.Context) (summary string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: %v", step, r)
		}
	}()
	step = "step 1"
	return scenario(ctx), nil
}
