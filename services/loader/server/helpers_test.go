package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, lis, Config{Options: opts, Grace: 5 * time.Second}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	loadertest.WaitServing(t, conn)
	return corelmv1.NewLoaderServiceClient(conn)
}

func TestLockNameAgrees(t *testing.T) {
	if lockName != loadertest.LockName {
		t.Fatalf("loadertest.LockName = %q, the server uses %q", loadertest.LockName, lockName)
	}
}
