package server

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/sched"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
	"github.com/corelm/corelm/services/internal/grpcserver"
)

// Sentinel errors of the inference server. Handlers wrap them (or the
// scheduler's, tokenizer's and sampler's) with %w; toStatus alone turns
// errors into gRPC statuses.
var (
	// ErrBadRequest: the request is malformed; the message says why.
	ErrBadRequest = errors.New("invalid request")
	// ErrModelNotFound: no model of that id is being served.
	ErrModelNotFound = errors.New("model not found")
	// ErrModelUnavailable: the model is known but cannot be served now
	// (its on-demand load or mapping failed); the message says why.
	ErrModelUnavailable = errors.New("model unavailable")
	// ErrModelLoading: a model the server must serve (RequireModels) has
	// no generation mapped yet.
	ErrModelLoading = errors.New("model is loading")
	// ErrStopping: the server is shutting down.
	ErrStopping = errors.New("server is shutting down")
	// ErrUnknownRequest: a Cancel names no generation running on its
	// stream.
	ErrUnknownRequest = errors.New("no generation of that request_id is running on this stream")
	// ErrUnauthenticated: missing or wrong bearer token (the auth
	// interceptor's).
	ErrUnauthenticated = grpcserver.ErrUnauthenticated
)

// StreamLimitError refuses a Start on a Generate stream that already runs
// Options.MaxStreamGenerations generations.
type StreamLimitError struct{ Running int }

func (e *StreamLimitError) Error() string {
	return fmt.Sprintf("this stream already runs %d generations, the most one stream may (--max-stream-generations): "+
		"wait for one to finish or open another stream", e.Running)
}

func badRequestf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, a...))
}

// toStatus maps an error to its gRPC status; it is the only place that does.
// Overload carries a RetryInfo detail with the scheduler's hint.
func toStatus(err error) *status.Status {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return st // already a status (an interceptor, a nested call)
	}
	msg := err.Error()
	var (
		oe *sched.OverloadError
		se *StreamLimitError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, msg)
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, msg)
	case errors.As(err, &oe):
		st := status.New(codes.ResourceExhausted, msg)
		if oe.RetryAfter > 0 {
			if d, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(oe.RetryAfter)}); derr == nil {
				st = d
			}
		}
		return st
	case errors.Is(err, ErrModelLoading):
		st := status.New(codes.Unavailable, msg)
		if d, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(loadingRetry)}); derr == nil {
			st = d
		}
		return st
	case errors.As(err, &se):
		return status.New(codes.ResourceExhausted, msg)
	case errors.Is(err, ErrModelNotFound), errors.Is(err, ErrUnknownRequest):
		return status.New(codes.NotFound, msg)
	case errors.Is(err, ErrBadRequest), errors.Is(err, sched.ErrInvalidRequest),
		errors.Is(err, sched.ErrPromptTooLong), errors.Is(err, sample.ErrParams),
		errors.Is(err, tokenizer.ErrTokenID), errors.Is(err, tokenizer.ErrNoBOS),
		errors.Is(err, sched.ErrConstraint): // a constraint this model's vocabulary cannot spell
		return status.New(codes.InvalidArgument, msg)
	case errors.Is(err, ErrStopping), errors.Is(err, sched.ErrClosed), errors.Is(err, ErrModelUnavailable):
		return status.New(codes.Unavailable, msg)
	case errors.Is(err, ErrUnauthenticated):
		return status.New(codes.Unauthenticated, msg)
	case errors.Is(err, sched.ErrModelPanic):
		// The panic and its stack are in the log ("generation finished").
		return status.New(codes.Internal, grpcserver.ErrInternal.Error()+": "+sched.ErrModelPanic.Error())
	}
	return status.New(codes.Internal, msg)
}

// toError is toStatus for handlers' return values.
func toError(err error) error {
	if err == nil {
		return nil
	}
	return toStatus(err).Err()
}
