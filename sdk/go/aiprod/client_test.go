package aiprod_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aiprod/aiprod/sdk/go/aiprod"
	"github.com/aiprod/aiprod/sdk/go/aiprod/aiprodtest"
	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

var fast = aiprod.RetryPolicy{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Multiplier: 2}

func newClient(t *testing.T, endpoint string, opts ...aiprod.Option) *aiprod.Client {
	t.Helper()
	c, err := aiprod.New(endpoint, apiKey, append([]aiprod.Option{aiprod.WithAdminToken(adminToken),
		aiprod.WithBackoff(10*time.Millisecond, 50*time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestBearerTokensAndDefaultDeadline(t *testing.T) {
	ep, rec := startFake(t)
	c := newClient(t, ep, aiprod.WithTimeout(12*time.Second))
	ctx := context.Background()
	resp, err := c.Presets.ListPresets(ctx, &aiprodv1.ListPresetsRequest{})
	if err != nil || len(resp.GetPresets()) != 3 {
		t.Fatalf("ListPresets: %v %v", resp, err)
	}
	if _, err := c.Admin.ListTenants(ctx, &aiprodv1.ListTenantsRequest{}); err != nil {
		t.Fatal(err)
	}
	if rec.auth["ListPresets"] != "Bearer "+apiKey || rec.auth["ListTenants"] != "Bearer "+adminToken {
		t.Fatalf("auth: %v", rec.auth)
	}
	if d := rec.deadline["ListPresets"]; d < 10*time.Second || d > 12500*time.Millisecond {
		t.Fatalf("default deadline: %v", d)
	}
}

func TestPerCallDeadlines(t *testing.T) {
	ep, rec := startFake(t)
	c := newClient(t, ep, aiprod.WithTimeout(12*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := c.Presets.GetPreset(ctx, &aiprodv1.GetPresetRequest{PresetId: "x"}); err != nil {
		t.Fatal(err)
	}
	if d := rec.deadline["GetPreset"]; d <= 0 || d > 3500*time.Millisecond {
		t.Fatalf("ctx deadline not used: %v", d)
	}
	if _, err := c.Presets.GetPreset(aiprod.NoTimeout(context.Background()), &aiprodv1.GetPresetRequest{PresetId: "x"}); err != nil {
		t.Fatal(err)
	}
	if d := rec.deadline["GetPreset"]; d != 0 {
		t.Fatalf("NoTimeout still sent a deadline: %v", d)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	_, err := c.Presets.GetPreset(short, &aiprodv1.GetPresetRequest{PresetId: "slow"})
	if aiprod.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
}

func TestUnauthenticatedErrorInfo(t *testing.T) {
	ep, _ := startFake(t)
	c, err := aiprod.New(ep, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Presets.ListPresets(context.Background(), &aiprodv1.ListPresetsRequest{})
	e, ok := aiprod.AsError(err)
	if !ok || e.Code() != codes.Unauthenticated || e.Reason() != "API_KEY_INVALID" || e.ErrorInfo().GetDomain() != "aiprod.dev" {
		t.Fatalf("got %#v", err)
	}
}

func TestFieldViolations(t *testing.T) {
	ep, _ := startFake(t)
	c := newClient(t, ep)
	d := uint32(1000)
	// request_id is left empty: the SDK fills it, so only brief and duration_s are refused.
	_, err := c.Render.CreateJob(context.Background(), &aiprodv1.CreateJobRequest{PresetId: "quick_social", DurationS: &d})
	var e *aiprod.Error
	if !errors.As(err, &e) || e.Code() != codes.InvalidArgument || e.Message() != "invalid CreateJob" {
		t.Fatalf("got %v", err)
	}
	var fields []string
	for _, v := range e.FieldViolations() {
		fields = append(fields, v.Field)
	}
	if !slices.Equal(fields, []string{"brief", "duration_s"}) {
		t.Fatalf("fields %v", fields)
	}
	if !strings.Contains(e.Error(), "brief: must be 10-10000 characters") {
		t.Fatalf("message %q", e.Error())
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatal("status.Code must still work")
	}
}

func TestQuotaRetryPreconditionDetails(t *testing.T) {
	ep, _ := startFake(t)
	c := newClient(t, ep)
	ctx := context.Background()
	_, err := c.Render.GetJob(ctx, &aiprodv1.GetJobRequest{JobId: "busy"})
	e, _ := aiprod.AsError(err)
	if e == nil || e.Code() != codes.ResourceExhausted || len(e.QuotaViolations()) != 1 || e.QuotaViolations()[0].GetSubject() != "tenant:acme" {
		t.Fatalf("got %v", err)
	}
	if d, ok := e.RetryDelay(); !ok || d != 1500*time.Millisecond {
		t.Fatalf("retry delay %v %v", d, ok)
	}
	_, err = c.Render.GetJob(ctx, &aiprodv1.GetJobRequest{JobId: "late"})
	e, _ = aiprod.AsError(err)
	if e == nil || len(e.PreconditionViolations()) != 1 || e.PreconditionViolations()[0].GetType() != "STATE" {
		t.Fatalf("got %v", err)
	}
	_, err = c.Render.GetJob(ctx, &aiprodv1.GetJobRequest{JobId: "nope"})
	if e, _ := aiprod.AsError(err); e == nil || e.Code() != codes.NotFound || len(e.Details()) != 0 || e.FieldViolations() != nil {
		t.Fatalf("got %v", err)
	}
}

func TestIterators(t *testing.T) {
	ep, _ := startFake(t)
	c := newClient(t, ep)
	ctx := context.Background()
	var ids []string
	for j, err := range c.Jobs(ctx, &aiprodv1.ListJobsRequest{PageSize: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.GetJobId())
	}
	if len(ids) != 7 || ids[0] != "job-0" || ids[6] != "job-6" {
		t.Fatalf("jobs %v", ids)
	}
	n := 0
	for range c.Jobs(ctx, nil) {
		n++
		if n == 4 {
			break // stopping early must not panic
		}
	}
	var tenants []string
	for tn, err := range c.Tenants(ctx, 0) {
		if err != nil {
			t.Fatal(err)
		}
		tenants = append(tenants, tn.GetTenantId())
	}
	if len(tenants) != 5 {
		t.Fatalf("tenants %v", tenants)
	}
}

func collect(t *testing.T, seq func(func(*aiprodv1.JobEvent, error) bool)) ([]uint64, error) {
	t.Helper()
	var out []uint64
	for ev, err := range seq {
		if err != nil {
			return out, err
		}
		out = append(out, ev.GetSequence())
	}
	return out, nil
}

func TestWatchUntilTerminal(t *testing.T) {
	ep, _ := startFake(t)
	c := newClient(t, ep)
	got, err := collect(t, c.WatchJob(context.Background(), "ok", 0))
	if err != nil || !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("%v %v", got, err)
	}
	got, err = collect(t, c.WatchJob(context.Background(), "ok", 4))
	if err != nil || !slices.Equal(got, []uint64{5, 6}) {
		t.Fatalf("%v %v", got, err)
	}
}

func TestWatchResumesWithoutGapOrDuplicate(t *testing.T) {
	ep, rec := startFake(t)
	c := newClient(t, ep)
	got, err := collect(t, c.WatchJob(context.Background(), "flaky", 0))
	if err != nil || !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("%v %v", got, err)
	}
	if w := rec.watches(); !slices.Equal(w, []uint64{0, 3, 4}) {
		t.Fatalf("resume points %v", w)
	}
}

func TestWatchNotFoundIsNotRetried(t *testing.T) {
	ep, rec := startFake(t)
	c := newClient(t, ep)
	_, err := collect(t, c.WatchJob(context.Background(), "gone", 0))
	if aiprod.Code(err) != codes.NotFound || len(rec.watches()) != 1 {
		t.Fatalf("%v %v", err, rec.watches())
	}
}

func TestWatchGivesUpAfterTheResumeTimeout(t *testing.T) {
	ep, rec := startFake(t)
	c := newClient(t, ep, aiprod.WithWatchResumeTimeout(300*time.Millisecond))
	start := time.Now()
	_, err := collect(t, c.WatchJob(context.Background(), "down", 0))
	took := time.Since(start)
	// Waits of at most 50 ms: several reconnects, and no wait that would end past the window.
	if aiprod.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "gave up after") || len(rec.watches()) < 3 {
		t.Fatalf("%v %v", err, rec.watches())
	}
	if took > 300*time.Millisecond+200*time.Millisecond {
		t.Fatalf("gave up after %v, want about 300 ms", took)
	}
	// A per-watch override.
	n := len(rec.watches())
	_, err = collect(t, c.WatchJob(context.Background(), "down", 0, aiprod.WithResumeTimeout(0)))
	if aiprod.Code(err) != codes.Unavailable || len(rec.watches()) != n+1 {
		t.Fatalf("WithResumeTimeout(0): %v, %d watches", err, len(rec.watches())-n)
	}
}

func TestWatchStopsOnContextCancel(t *testing.T) {
	ep, _ := startFake(t)
	c := newClient(t, ep)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var err error
	n := 0
	for _, e := range c.WatchJob(ctx, "slow", 0) {
		if e != nil {
			err = e
			break
		}
		n++
		cancel()
	}
	if aiprod.Code(err) != codes.Canceled || n != 1 {
		t.Fatalf("n=%d err=%v", n, err)
	}
}

func TestWatchResumesAfterRealConnectionDrop(t *testing.T) {
	ep, rec := startFake(t)
	d := aiprodtest.NewDropDialer()
	c := newClient(t, ep, aiprod.WithDialOptions(grpc.WithContextDialer(d.DialContext)))
	var got []uint64
	for ev, err := range c.WatchJob(context.Background(), "slow", 0) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.GetSequence())
		if len(got) == 2 && d.Drop() == 0 {
			t.Fatal("no connection to drop")
		}
	}
	if !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("got %v", got)
	}
	if w := rec.watches(); len(w) < 2 || w[0] != 0 || w[1] != 2 || d.Dials() < 2 {
		t.Fatalf("resume points %v, dials %d", w, d.Dials())
	}
}

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in     string
		target string
		tls    bool
	}{
		{"http://127.0.0.1:5000", "127.0.0.1:5000", false},
		{"https://api.example.com", "api.example.com:443", true},
		{"api.example.com:8443", "api.example.com:8443", true},
		{"localhost:50051", "localhost:50051", false},
	} {
		target, tls, err := aiprod.ParseEndpoint(tc.in)
		if err != nil || target != tc.target || tls != tc.tls {
			t.Errorf("%s: %s %v %v", tc.in, target, tls, err)
		}
	}
	if _, _, err := aiprod.ParseEndpoint("ftp://x"); err == nil {
		t.Error("ftp accepted")
	}
}

func TestWatchAfterTheTerminalEventEndsAtOnce(t *testing.T) {
	ep, rec := startFake(t)
	c := newClient(t, ep)
	for _, job := range []string{"done", "ok"} {
		got, err := collect(t, c.WatchJob(context.Background(), job, 6))
		if err != nil || len(got) != 0 {
			t.Fatalf("%s: %v %v", job, got, err)
		}
	}
	if w := rec.watches(); !slices.Equal(w, []uint64{6, 6}) {
		t.Fatalf("watches %v", w)
	}
}
