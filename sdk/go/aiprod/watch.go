package aiprod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

// RetryPolicy bounds how a download or ReadResource resumes after UNAVAILABLE, a lost connection,
// a reset stream or RESOURCE_EXHAUSTED with RetryInfo. MaxAttempts is the number of retries in a
// row that read no new byte; retry n waits uniform(0, min(MaxBackoff, InitialBackoff ×
// Multiplier^(n-1))) (full jitter), and at least the server's RetryInfo delay.
type RetryPolicy struct {
	MaxAttempts    int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
}

// DefaultRetryPolicy (downloads) is 8 retries without progress, 100 ms doubling up to 5 s.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 8, InitialBackoff: DefaultInitialBackoff, MaxBackoff: DefaultMaxBackoff, Multiplier: 2}

func (p RetryPolicy) delay(attempt int, hint time.Duration) time.Duration {
	return retryWait(p.InitialBackoff, p.MaxBackoff, p.Multiplier, attempt, hint)
}

// IsTerminal reports whether a job state is terminal (DELIVERED, CANCELLED, FAILED).
func IsTerminal(s aiprodv1.JobState) bool {
	return s == aiprodv1.JobState_JOB_STATE_DELIVERED || s == aiprodv1.JobState_JOB_STATE_CANCELLED ||
		s == aiprodv1.JobState_JOB_STATE_FAILED
}

// resumable reports whether a broken WatchJob stream is a transport problem to resume from.
func resumable(e *Error) bool {
	switch e.Code() {
	case codes.Unavailable:
		return true
	case codes.Internal, codes.Unknown, codes.Canceled:
		msg := strings.ToLower(e.Message())
		for _, s := range []string{"rst_stream", "stream terminated", "connection reset", "transport is closing", "eof", "goaway", "closed network connection"} {
			if strings.Contains(msg, s) {
				return true
			}
		}
	}
	return false
}

// WatchOption configures one WatchJob call.
type WatchOption func(*watchOptions)

type watchOptions struct{ resumeTimeout time.Duration }

// WithResumeTimeout overrides, for one watch, how long it keeps reconnecting while no event
// arrives (the client's WithWatchResumeTimeout, 120 s by default).
func WithResumeTimeout(d time.Duration) WatchOption {
	return func(o *watchOptions) { o.resumeTimeout = d }
}

// WatchJob streams the job's events with a sequence greater than afterSequence until the
// terminal event (DELIVERED, CANCELLED or FAILED), then ends.
//
// It reconnects transparently on UNAVAILABLE, a lost connection or a reset stream, resuming after
// the last sequence it yielded, so no event is skipped or yielded twice; the waits between
// reconnects follow the client's backoff (WithBackoff), at least the server's RetryInfo delay. If a
// stream ends cleanly before a terminal event, it asks GetJob: a terminal job whose events were all
// seen ends the watch (e.g. afterSequence was already past the terminal event); otherwise it
// resumes. It keeps trying for the resume timeout (WithWatchResumeTimeout, 120 s by default) of
// continuous failure, the clock restarting at every event; then it yields the last error and
// ends. Any other error (NOT_FOUND, INVALID_ARGUMENT, ctx cancelled...) is yielded at once as
// *Error. The stream has no default deadline: bound it with ctx. Breaking out of the loop cancels
// the stream.
//
//	for ev, err := range client.WatchJob(ctx, jobID, 0) {
//		if err != nil { return err }
//		fmt.Println(ev.GetSequence(), ev.GetState())
//	}
func (c *Client) WatchJob(ctx context.Context, jobID string, afterSequence uint64, opts ...WatchOption) iter.Seq2[*aiprodv1.JobEvent, error] {
	o := watchOptions{resumeTimeout: c.watchResumeTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	return func(yield func(*aiprodv1.JobEvent, error) bool) {
		last := afterSequence
		failures := 0              // reconnects since the last event
		var failingSince time.Time // when the current run of failures began
		for {
			err := c.watchOnce(ctx, jobID, &last, &failures, yield)
			if err == errStop {
				return
			}
			if ctx.Err() != nil {
				yield(nil, FromError(ctx.Err()))
				return
			}
			if err == nil {
				// A clean end without a terminal event: the watch may have started after it.
				job, gerr := c.Render.GetJob(ctx, &aiprodv1.GetJobRequest{JobId: jobID})
				if gerr == nil && IsTerminal(job.GetJob().GetState()) && last >= job.GetJob().GetLastSequence() {
					return
				}
				err = gerr
			}
			var e *Error
			if err != nil {
				e = FromError(err)
				if !resumable(e) {
					yield(nil, e)
					return
				}
			}
			if e == nil {
				e = FromError(status.Error(codes.Unavailable, "stream ended before the terminal event"))
			}
			if failures == 0 {
				failingSince = time.Now()
			}
			failures++
			hint, _ := e.RetryDelay()
			wait := retryWait(c.initialBackoff, c.maxBackoff, 2, failures, hint)
			if time.Since(failingSince)+wait > o.resumeTimeout {
				yield(nil, &Error{st: status.New(e.Code(), fmt.Sprintf(
					"watch of %s gave up after %v without an event (%d reconnects, last sequence %d): %s",
					jobID, time.Since(failingSince).Round(time.Millisecond), failures-1, last, e.Message()))})
				return
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				yield(nil, FromError(ctx.Err()))
				return
			case <-t.C:
			}
		}
	}
}

var errStop = errors.New("stop")

// watchOnce runs one WatchJob stream; it returns errStop when the watch is over (terminal event
// or the consumer stopped), nil when the stream ended early, or the stream's error.
func (c *Client) watchOnce(ctx context.Context, jobID string, last *uint64, failures *int, yield func(*aiprodv1.JobEvent, error) bool) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Render.WatchJob(sctx, &aiprodv1.WatchJobRequest{JobId: jobID, AfterSequence: *last})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		ev := resp.GetEvent()
		if ev.GetSequence() <= *last {
			continue // seen before a reconnect: never yield twice
		}
		*last = ev.GetSequence()
		*failures = 0
		if !yield(ev, nil) || IsTerminal(ev.GetState()) {
			return errStop
		}
	}
}

// Jobs iterates over every job matching req's filters (states, preset_id, labels), newest first,
// following next_page_token; req may be nil. An error is yielded once, and ends the iteration.
func (c *Client) Jobs(ctx context.Context, req *aiprodv1.ListJobsRequest) iter.Seq2[*aiprodv1.Job, error] {
	return func(yield func(*aiprodv1.Job, error) bool) {
		r := &aiprodv1.ListJobsRequest{}
		if req != nil {
			r = cloneListJobs(req)
		}
		for {
			page, err := c.Render.ListJobs(ctx, r)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, j := range page.GetJobs() {
				if !yield(j, nil) {
					return
				}
			}
			if page.GetNextPageToken() == "" {
				return
			}
			r.PageToken = page.GetNextPageToken()
		}
	}
}

// Tenants iterates over every tenant, oldest first, following next_page_token (admin token).
func (c *Client) Tenants(ctx context.Context, pageSize uint32) iter.Seq2[*aiprodv1.Tenant, error] {
	return func(yield func(*aiprodv1.Tenant, error) bool) {
		r := &aiprodv1.ListTenantsRequest{PageSize: pageSize}
		for {
			page, err := c.Admin.ListTenants(ctx, r)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, t := range page.GetTenants() {
				if !yield(t, nil) {
					return
				}
			}
			if page.GetNextPageToken() == "" {
				return
			}
			r.PageToken = page.GetNextPageToken()
		}
	}
}
