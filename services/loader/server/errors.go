package server

import (
	"context"
	"errors"
	"io/fs"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/services/internal/grpcserver"
)

// Sentinel errors of the loader. Every error a handler returns wraps at most
// one of them (or a context error), and toStatus turns it into a gRPC status.
var (
	// ErrBadFile: the source is not a model corelm can run (format,
	// metadata, tensors, not a regular file, changed while loading).
	ErrBadFile = errors.New("invalid model file")
	// ErrBadRequest: the request itself is malformed.
	ErrBadRequest = errors.New("invalid request")
	// ErrEscape: the path leaves the source directory.
	ErrEscape = errors.New("path escapes the source directory")
	// ErrNotFound: no such source file or published model.
	ErrNotFound = errors.New("not found")
	// ErrNoSpace: the budget or the shared-memory directory is full.
	ErrNoSpace = errors.New("out of space")
	// ErrBusy: the model is being loaded from another path or with other
	// options.
	ErrBusy = errors.New("model is being loaded with different parameters")
	// ErrStopping: the server is shutting down.
	ErrStopping = errors.New("loader is shutting down")
)

// toStatus maps an error to its gRPC status; it is the only place that does.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status (from an interceptor or a nested call)
	}
	msg := err.Error()
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, msg)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, msg)
	case errors.Is(err, ErrEscape):
		return status.Error(codes.PermissionDenied, msg)
	case errors.Is(err, ErrNoSpace), errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return status.Error(codes.ResourceExhausted, msg)
	case errors.Is(err, ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return status.Error(codes.NotFound, msg)
	case errors.Is(err, ErrBadFile), errors.Is(err, ErrBadRequest):
		return status.Error(codes.InvalidArgument, msg)
	case errors.Is(err, ErrBusy):
		return status.Error(codes.Aborted, msg)
	case errors.Is(err, ErrStopping):
		return status.Error(codes.Unavailable, msg)
	case errors.Is(err, grpcserver.ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, msg)
	}
	return status.Error(codes.Internal, msg)
}
