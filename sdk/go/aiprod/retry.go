package aiprod

import (
	"context"
	crand "crypto/rand"
	"math/rand/v2"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	aiprodv1 "github.com/aiprod/aiprod/sdk/go/gen/aiprod/v1"
)

// Defaults of the retry semantics shared by every AIPROD SDK (see sdk/PRODUCTION.md).
const (
	// DefaultMaxAttempts is the attempt budget of a unary call, the first attempt included.
	DefaultMaxAttempts = 5
	// DefaultInitialBackoff is the ceiling of the first retry's wait.
	DefaultInitialBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff caps the ceiling of any wait.
	DefaultMaxBackoff = 5 * time.Second
	// DefaultWatchResumeTimeout is how long WatchJob keeps reconnecting without receiving an event.
	DefaultWatchResumeTimeout = 120 * time.Second
)

// retryWait is the wait before retry n (n ≥ 1): exponential with full jitter,
// uniform(0, min(maxB, initial × mult^(n-1))), and never less than floor (a RetryInfo delay).
func retryWait(initial, maxB time.Duration, mult float64, n int, floor time.Duration) time.Duration {
	ceil := float64(initial)
	for i := 1; i < n && ceil < float64(maxB); i++ {
		ceil *= mult
	}
	ceil = min(ceil, float64(maxB))
	return max(time.Duration(rand.Float64()*ceil), floor)
}

// retrySafe reports whether repeating the unary method cannot do harm: every read (Get*, List*,
// EstimateCost, QueryWriteStatus), CreateJob (idempotent by request_id, which the SDK fills before
// the first attempt) and CancelJob.
func retrySafe(fullMethod string) bool {
	name := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	switch {
	case strings.HasPrefix(name, "Get"), strings.HasPrefix(name, "List"):
		return true
	}
	switch name {
	case "EstimateCost", "QueryWriteStatus", "CreateJob", "CancelJob":
		return true
	}
	return false
}

type attemptKey struct{}

// AttemptFromContext returns the attempt number (1 for the first, 2 for the first retry...) of the
// unary call whose context ctx is, as seen by an interceptor added with WithUnaryInterceptor; 0
// outside one.
func AttemptFromContext(ctx context.Context) int {
	n, _ := ctx.Value(attemptKey{}).(int)
	return n
}

// AttemptInfo describes one attempt of a unary call, for AttemptHook.
type AttemptInfo struct {
	// Method is the full gRPC method, e.g. "/aiprod.v1.RenderService/GetJob".
	Method string
	// Attempt is 1 for the first attempt, 2 for the first retry, and so on.
	Attempt int
	// Code is the attempt's status code (codes.OK on success).
	Code codes.Code
	// Duration is how long the attempt took (the wait before it is not included).
	Duration time.Duration
	// Err is the attempt's error, nil on success.
	Err error
}

// AttemptHook returns an interceptor for WithUnaryInterceptor that calls fn after every attempt of
// every unary call: a logging or metrics hook.
//
//	aiprod.WithUnaryInterceptor(aiprod.AttemptHook(func(a aiprod.AttemptInfo) {
//		log.Printf("%s attempt %d: %s in %v", a.Method, a.Attempt, a.Code, a.Duration)
//	}))
func AttemptHook(fn func(AttemptInfo)) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, opts...)
		fn(AttemptInfo{Method: method, Attempt: AttemptFromContext(ctx), Code: status.Code(err), Duration: time.Since(start), Err: err})
		return err
	}
}

// retrier is the unary interceptor that retries calls (see sdk/PRODUCTION.md).
type retrier struct {
	maxAttempts   int
	initial, maxB time.Duration
}

// newRequestID is the idempotency key the SDK gives a CreateJob that has none.
func newRequestID() string { return "sdk-go-" + crand.Text() }

func (r retrier) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if cr, ok := req.(*aiprodv1.CreateJobRequest); ok && cr.GetRequestId() == "" {
		// Filled once, before the first attempt, so that every retry carries the same key. A copy:
		// a caller reusing its request for another job must not replay this one.
		cr = proto.Clone(cr).(*aiprodv1.CreateJobRequest)
		cr.RequestId = newRequestID()
		req = cr
	}
	safe := retrySafe(method)
	for attempt := 1; ; attempt++ {
		err := invoker(context.WithValue(ctx, attemptKey{}, attempt), method, req, reply, cc, opts...)
		if err == nil {
			return nil
		}
		e := FromError(err)
		floor, hasRetryInfo := e.RetryDelay()
		retryable := (e.Code() == codes.Unavailable && safe) || (e.Code() == codes.ResourceExhausted && hasRetryInfo)
		if !retryable || attempt >= r.maxAttempts {
			return err
		}
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		wait := retryWait(r.initial, r.maxB, 2, attempt, floor)
		if deadline, ok := ctx.Deadline(); ok && time.Now().Add(wait).After(deadline) {
			return err // the wait would outlast the caller's deadline: no point sleeping
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return status.FromContextError(ctx.Err()).Err()
		case <-t.C:
		}
	}
}
