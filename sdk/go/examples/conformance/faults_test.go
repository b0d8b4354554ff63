package main

// Fault tests against the real server of scripts/test-server.sh: restarted in the middle of calls
// and of a watch, and a rate-limited (Bronze) tenant. See sdk/PRODUCTION.md for the semantics.

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/aiprod/aiprod/sdk/go/aiprod"
	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

// hookCounts counts the attempts the client's hook saw.
type hookCounts struct {
	mu      sync.Mutex
	retries map[codes.Code]int // attempts after an error, by the code of the attempt before
	last    map[string]codes.Code
	total   int
}

func (h *hookCounts) option() aiprod.Option {
	h.retries, h.last = map[codes.Code]int{}, map[string]codes.Code{}
	return aiprod.WithUnaryInterceptor(aiprod.AttemptHook(func(a aiprod.AttemptInfo) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.total++
		if a.Attempt > 1 {
			h.retries[h.last[a.Method]]++
		}
		h.last[a.Method] = a.Code // calls of one method run one at a time in these tests
	}))
}

func (h *hookCounts) retried(code codes.Code) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.retries[code]
}

// restart restarts the server in the background (scripts/test-server.sh restart) with downMs of
// downtime; the returned channel receives the script's result once the server is back.
func restart(t *testing.T, envFile string, downMs int) <-chan error {
	t.Helper()
	script := os.Getenv("AIPROD_TEST_SERVER")
	if script == "" {
		script = filepath.Join("..", "..", "..", "..", "scripts", "test-server.sh")
	}
	cmd := exec.Command(script, "restart", filepath.Dir(envFile))
	cmd.Env = append(os.Environ(), "AIPROD_RESTART_DOWN_MS="+strconv.Itoa(downMs))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return done
}

// TestRestartMidCall restarts the server (1.5 s down) while a loop of reads and CreateJob runs:
// no call fails, the hook counts retries, and no CreateJob made a second job.
func TestRestartMidCall(t *testing.T) {
	envFile := serverEnv(t)
	var hook hookCounts
	// 20 attempts: the per-call deadline (20 s), not the budget, bounds the outage a call rides out.
	client, err := aiprod.New(os.Getenv("AIPROD_ENDPOINT"), os.Getenv("AIPROD_API_KEY"), hook.option(), aiprod.WithMaxAttempts(20))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	bg := context.Background()
	label := strings.ToLower(rand.Text()[:12])
	create := func(ctx context.Context) (string, error) {
		resp, err := client.Render.CreateJob(ctx, &aiprodv1.CreateJobRequest{ // request_id filled by the SDK
			PresetId: "brand_campaign", Brief: "Restart test: runners at dawn on wet asphalt.",
			DurationS: proto.Uint32(20), Labels: map[string]string{"fault_test": label}})
		return resp.GetJob().GetJobId(), err
	}
	first, err := create(bg)
	if err != nil {
		t.Fatal(err)
	}
	jobs := map[string]bool{first: true}

	done := restart(t, envFile, 1500)
	var failures []error
	calls, after := 0, 0
	for back := false; !back || after < 10; calls++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("restart: %v", err)
			}
			back = true
		default:
		}
		if back {
			after++
		}
		ctx, cancel := context.WithTimeout(bg, 20*time.Second)
		switch calls % 4 {
		case 0:
			_, err = client.Presets.ListPresets(ctx, &aiprodv1.ListPresetsRequest{})
		case 1:
			_, err = client.Render.GetJob(ctx, &aiprodv1.GetJobRequest{JobId: first})
		case 2:
			_, err = client.CostEstimator.EstimateCost(ctx, &aiprodv1.EstimateCostRequest{PresetId: "quick_social"})
		case 3:
			if len(jobs) < 12 {
				var id string
				if id, err = create(ctx); err == nil {
					jobs[id] = true
				}
			}
		}
		cancel()
		if err != nil {
			failures = append(failures, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d calls failed across the restart, first: %v", len(failures), calls, failures[0])
	}
	unavailable := hook.retried(codes.Unavailable)
	if unavailable == 0 {
		t.Fatalf("no retry after UNAVAILABLE in %d calls (%d attempts): the restart was not seen", calls, hook.total)
	}
	// Every CreateJob made exactly one job, although some were retried across the restart.
	listed := 0
	for job, err := range client.Jobs(bg, &aiprodv1.ListJobsRequest{Labels: map[string]string{"fault_test": label}}) {
		if err != nil {
			t.Fatal(err)
		}
		listed++
		if !jobs[job.JobId] {
			t.Errorf("job %s was created but no CreateJob returned it", job.JobId)
		}
		if _, err := client.Render.CancelJob(bg, &aiprodv1.CancelJobRequest{JobId: job.JobId}); err != nil {
			t.Errorf("cancel %s: %v", job.JobId, err)
		}
	}
	if listed != len(jobs) {
		t.Fatalf("%d jobs listed, %d created", listed, len(jobs))
	}
	t.Logf("%d calls across a restart, 0 failed, %d attempts, %d retries after UNAVAILABLE, %d jobs created once each",
		calls, hook.total, unavailable, len(jobs))
}

// TestRestartMidWatch restarts the server while a watch is open on a job that waits for approval;
// the job is approved once the server is back, and the watch resumes to DELIVERED without a gap.
func TestRestartMidWatch(t *testing.T) {
	envFile := serverEnv(t)
	var mu sync.Mutex
	streams := 0
	countWatches := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if strings.HasSuffix(method, "/WatchJob") {
			mu.Lock()
			streams++
			mu.Unlock()
		}
		return streamer(ctx, desc, cc, method, opts...)
	}
	client, err := aiprod.New(os.Getenv("AIPROD_ENDPOINT"), os.Getenv("AIPROD_API_KEY"),
		aiprod.WithMaxAttempts(20), aiprod.WithDialOptions(grpc.WithChainStreamInterceptor(countWatches)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	job, err := client.Render.CreateJob(ctx, &aiprodv1.CreateJobRequest{PresetId: "brand_campaign",
		Brief: "Watch restart test: runners at dawn on wet asphalt.", DurationS: proto.Uint32(20)})
	if err != nil {
		t.Fatal(err)
	}
	jobID := job.Job.JobId
	approved := make(chan error, 1)
	restarted := false
	var seqs []uint64
	var last aiprodv1.JobState
	for ev, err := range client.WatchJob(ctx, jobID, 0) {
		if err != nil {
			t.Fatalf("watch: %v (after sequences %v)", err, seqs)
		}
		seqs, last = append(seqs, ev.Sequence), ev.State
		if ev.State == aiprodv1.JobState_JOB_STATE_AWAITING_APPROVAL && !restarted {
			// The job cannot move on before the approval, which comes after the restart: the
			// watch is open while the server goes down and comes back.
			restarted = true
			done := restart(t, envFile, 1500)
			go func() {
				if err := <-done; err != nil {
					approved <- err
					return
				}
				m, err := client.Icc.GetManifest(ctx, &aiprodv1.GetManifestRequest{JobId: jobID})
				if err == nil {
					_, err = client.Icc.ApproveManifest(ctx, &aiprodv1.ApproveManifestRequest{JobId: jobID, Etag: m.Manifest.Etag})
				}
				approved <- err
			}()
		}
	}
	if !restarted {
		t.Fatalf("the watch never saw AWAITING_APPROVAL: %v", seqs)
	}
	if err := <-approved; err != nil {
		t.Fatalf("restart or approval: %v", err)
	}
	t.Logf("sequences %v", seqs)
	if last != aiprodv1.JobState_JOB_STATE_DELIVERED {
		t.Fatalf("the watch ended in %s", last)
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("sequences with a gap or a duplicate: %v", seqs)
		}
	}
	if streams < 2 {
		t.Fatalf("%d WatchJob streams: the watch did not resume", streams)
	}
}

// TestRateLimitedTenant bursts 15 calls at the Bronze tenant (10 requests a minute, one more every
// 6 s): with retries every call succeeds within its 20 s deadline, waiting as RetryInfo says; with
// max attempts 1 the burst fails with RESOURCE_EXHAUSTED and RetryInfo; and a deadline shorter than
// the RetryInfo delay gives the error at once instead of sleeping past it.
func TestRateLimitedTenant(t *testing.T) {
	t.Parallel() // after the restart tests (sequential); another tenant than TestConformance
	serverEnv(t)
	endpoint, key := os.Getenv("AIPROD_ENDPOINT"), os.Getenv("AIPROD_BRONZE_API_KEY")
	var hook hookCounts
	bronze, err := aiprod.New(endpoint, key, hook.option()) // the default budget: 5 attempts
	if err != nil {
		t.Fatal(err)
	}
	defer bronze.Close()
	start := time.Now()
	for i := range 15 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := bronze.Presets.ListPresets(ctx, &aiprodv1.ListPresetsRequest{})
		cancel()
		if err != nil {
			t.Fatalf("call %d of the burst: %v", i+1, err)
		}
	}
	limited := hook.retried(codes.ResourceExhausted)
	if limited < 5 {
		t.Fatalf("%d retries after RESOURCE_EXHAUSTED for 15 calls on a 10-call bucket", limited)
	}
	t.Logf("burst of 15: all succeeded in %v, %d retries after RESOURCE_EXHAUSTED", time.Since(start).Round(time.Millisecond), limited)

	once, err := aiprod.New(endpoint, key, aiprod.WithMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	defer once.Close()
	var refused *aiprod.Error
	for range 15 {
		if _, err := once.Presets.ListPresets(context.Background(), &aiprodv1.ListPresetsRequest{}); err != nil {
			refused, _ = aiprod.AsError(err)
			break
		}
	}
	if refused == nil || refused.Code() != codes.ResourceExhausted {
		t.Fatalf("max attempts 1: want RESOURCE_EXHAUSTED, got %v", refused)
	}
	delay, ok := refused.RetryDelay()
	if !ok || delay <= 0 || !refused.IsTransient() {
		t.Fatalf("max attempts 1: RESOURCE_EXHAUSTED without RetryInfo: %v", refused)
	}

	// The bucket is empty: the next token is about 6 s away, longer than a 1 s deadline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start = time.Now()
	_, err = bronze.Presets.ListPresets(ctx, &aiprodv1.ListPresetsRequest{})
	took := time.Since(start)
	if code := aiprod.Code(err); code != codes.ResourceExhausted && code != codes.DeadlineExceeded {
		t.Fatalf("deadline 1 s: got %v", err)
	}
	if took > 500*time.Millisecond {
		t.Fatalf("deadline 1 s, RetryInfo %v: the error came after %v (slept instead of giving up)", delay, took)
	}
	// A deadline that expires during the call is DEADLINE_EXCEEDED.
	ctx, cancel = context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	_, err = bronze.Presets.ListPresets(ctx, &aiprodv1.ListPresetsRequest{})
	if aiprod.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("an expired deadline: want DEADLINE_EXCEEDED, got %v", err)
	}
}
