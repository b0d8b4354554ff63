package aiprod

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a failed AIPROD call: the gRPC status code, its message and its google.rpc details
// (sent by the server in grpc-status-details-bin) decoded into Go values.
//
// Every error returned by the Client's services is an *Error; use errors.As, AsError or Code:
//
//	if e, ok := aiprod.AsError(err); ok && e.Code() == codes.InvalidArgument {
//		for _, v := range e.FieldViolations() {
//			fmt.Println(v.Field, v.Description)
//		}
//	}
//
// It also implements GRPCStatus, so status.FromError and status.Code keep working.
type Error struct {
	st *status.Status
}

// FieldViolation is one invalid request field (google.rpc.BadRequest.FieldViolation).
type FieldViolation struct {
	// Field is the proto field path, e.g. "brief" or "shots[0].duration_s".
	Field string
	// Description says why the value is invalid.
	Description string
	// Reason is a machine-readable reason, if the server set one.
	Reason string
}

// FromError converts any error of a gRPC call into an *Error (nil for nil). Context errors become
// Canceled / DeadlineExceeded; errors without a status become Unknown.
func FromError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if st, ok := status.FromError(err); ok {
		return &Error{st: st}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &Error{st: status.FromContextError(err)}
	}
	return &Error{st: status.New(codes.Unknown, err.Error())}
}

// AsError returns err as an *Error if it is (or wraps) one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Code returns the status code of any error (OK for nil, Unknown for a non-gRPC error).
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	return FromError(err).Code()
}

// Error implements error: "CODE: message [field: description; ...]".
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "aiprod: %s: %s", e.Code(), e.Message())
	if vs := e.FieldViolations(); len(vs) > 0 {
		b.WriteString(" [")
		for i, v := range vs {
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "%s: %s", v.Field, v.Description)
		}
		b.WriteString("]")
	}
	return b.String()
}

// Code is the gRPC status code.
func (e *Error) Code() codes.Code { return e.st.Code() }

// Message is the status message.
func (e *Error) Message() string { return e.st.Message() }

// GRPCStatus returns the underlying status (for status.FromError and status.Code).
func (e *Error) GRPCStatus() *status.Status { return e.st }

// Details returns the decoded google.rpc detail messages, e.g. *errdetails.BadRequest,
// *errdetails.ErrorInfo, *errdetails.PreconditionFailure, *errdetails.QuotaFailure,
// *errdetails.RetryInfo. A detail that cannot be decoded is an error value in the slice.
func (e *Error) Details() []any { return e.st.Details() }

func detailsOf[T any](e *Error) []T {
	var out []T
	for _, d := range e.st.Details() {
		if t, ok := d.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// FieldViolations returns every field violation of every BadRequest detail.
func (e *Error) FieldViolations() []FieldViolation {
	var out []FieldViolation
	for _, br := range detailsOf[*errdetails.BadRequest](e) {
		for _, v := range br.GetFieldViolations() {
			out = append(out, FieldViolation{Field: v.GetField(), Description: v.GetDescription(), Reason: v.GetReason()})
		}
	}
	return out
}

// ErrorInfo returns the ErrorInfo detail (reason, domain, metadata), or nil.
func (e *Error) ErrorInfo() *errdetails.ErrorInfo {
	if infos := detailsOf[*errdetails.ErrorInfo](e); len(infos) > 0 {
		return infos[0]
	}
	return nil
}

// Reason returns ErrorInfo.Reason, or "" when there is no ErrorInfo.
func (e *Error) Reason() string { return e.ErrorInfo().GetReason() }

// PreconditionViolations returns every violation of every PreconditionFailure detail.
func (e *Error) PreconditionViolations() []*errdetails.PreconditionFailure_Violation {
	var out []*errdetails.PreconditionFailure_Violation
	for _, d := range detailsOf[*errdetails.PreconditionFailure](e) {
		out = append(out, d.GetViolations()...)
	}
	return out
}

// QuotaViolations returns every violation of every QuotaFailure detail.
func (e *Error) QuotaViolations() []*errdetails.QuotaFailure_Violation {
	var out []*errdetails.QuotaFailure_Violation
	for _, d := range detailsOf[*errdetails.QuotaFailure](e) {
		out = append(out, d.GetViolations()...)
	}
	return out
}

// RetryDelay returns RetryInfo.retry_delay, if the server said when to retry.
func (e *Error) RetryDelay() (time.Duration, bool) {
	infos := detailsOf[*errdetails.RetryInfo](e)
	if len(infos) == 0 || infos[0].GetRetryDelay() == nil {
		return 0, false
	}
	return infos[0].GetRetryDelay().AsDuration(), true
}

// IsTransient reports whether the same call may succeed later: UNAVAILABLE, DEADLINE_EXCEEDED, or
// RESOURCE_EXHAUSTED with a RetryInfo delay (a rate limit, as opposed to a used-up quota).
func (e *Error) IsTransient() bool {
	switch e.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	case codes.ResourceExhausted:
		_, ok := e.RetryDelay()
		return ok
	}
	return false
}

// IsTransient is FromError(err).IsTransient() (false for nil).
func IsTransient(err error) bool { return err != nil && FromError(err).IsTransient() }
