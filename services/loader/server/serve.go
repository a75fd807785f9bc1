package server

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"google.golang.org/grpc"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/internal/grpcserver"
)

// Config is a whole loader process.
type Config struct {
	Options
	// Grace is how long shutdown waits for calls to finish [10s].
	Grace time.Duration
	// Ready, when set, is called once the server serves: the
	// shared-memory directory has been scanned and health says SERVING.
	Ready func()
	// AuthToken, when set, is required as "authorization: Bearer <token>"
	// on every call but health checks.
	AuthToken string
	// TLS serves TLS (nil: plaintext); Limits bound what a client may
	// send (grpcserver.Limits: zero fields take the defaults).
	TLS    *tls.Config
	Limits grpcserver.Limits
	// ServerOptions are added to the gRPC server's: a stats handler, TLS
	// credentials, more interceptors (see grpcserver.Options).
	ServerOptions []grpc.ServerOption
}

// Serve runs the loader on lis until ctx ends, then stops gracefully:
// health turns NOT_SERVING, loads in flight and watch streams end, and
// calls get up to Grace to finish. Published files stay.
func Serve(ctx context.Context, lis net.Listener, cfg Config) error {
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	srv, err := New(cfg.Options)
	if err != nil {
		return err
	}
	defer srv.Close()
	log := srv.log
	gs := grpcserver.New(grpcserver.Options{
		Logger: log, Services: []string{corelmv1.LoaderService_ServiceDesc.ServiceName},
		AuthToken: cfg.AuthToken, TLS: cfg.TLS, Limits: cfg.Limits,
		ToStatus: toStatus, ServerOptions: cfg.ServerOptions,
	})
	corelmv1.RegisterLoaderServiceServer(gs, srv)
	// Health answers NOT_SERVING, and calls wait, while the shared-memory
	// directory is scanned.
	gs.Start(lis)
	if err := srv.Start(); err != nil {
		gs.Stop()
		return err
	}
	gs.SetServing()
	log.Info("serving", "addr", lis.Addr().String(), "source_dir", srv.srcDir, "shm_dir", srv.shmDir, "budget", srv.opts.Budget, "budget_from", srv.budgetHow, "drain_timeout", srv.opts.DrainTimeout)
	if cfg.Ready != nil {
		cfg.Ready()
	}

	err = gs.AwaitShutdown(ctx)
	log.Info("shutting down")
	srv.Stop()
	gs.StopWithin(cfg.Grace)
	return err
}
