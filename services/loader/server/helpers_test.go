package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/loader/internal/loadertest"
)

// inProcess runs the loader in the test process (for the seams) on a
// loopback listener.
func inProcess(t *testing.T, opts Options) corelmv1.LoaderServiceClient {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	conn, _ := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return Serve(ctx, lis, Config{Options: opts, Grace: 5 * time.Second})
	})
	return corelmv1.NewLoaderServiceClient(conn)
}

func TestLockNameAgrees(t *testing.T) {
	if lockName != loadertest.LockName {
		t.Fatalf("loadertest.LockName = %q, the server uses %q", loadertest.LockName, lockName)
	}
}
