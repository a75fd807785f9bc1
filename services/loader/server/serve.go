package server

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/validator"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// Config is a whole loader process.
type Config struct {
	Options
	// Grace is how long shutdown waits for calls to finish [10s].
	Grace time.Duration
	// Ready, when set, is called once the server serves: the
	// shared-memory directory has been scanned and health says SERVING.
	Ready func()
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
	gs, hs := NewGRPCServer(log)
	corelmv1.RegisterLoaderServiceServer(gs, srv)
	// Health answers NOT_SERVING, and calls wait, while the shared-memory
	// directory is scanned.
	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()
	if err := srv.Start(); err != nil {
		gs.Stop()
		return err
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(corelmv1.LoaderService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	log.Info("serving", "addr", lis.Addr().String(), "source_dir", srv.srcDir, "shm_dir", srv.shmDir, "budget", cfg.Budget)
	if cfg.Ready != nil {
		cfg.Ready()
	}

	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	log.Info("shutting down")
	hs.Shutdown()
	srv.Stop()
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(cfg.Grace):
		gs.Stop()
		<-done
	}
	return err
}

// NewGRPCServer builds a gRPC server with the loader's interceptors
// (logging, panic recovery, request validation), health (NOT_SERVING until
// told) and reflection. Services are registered by the caller.
func NewGRPCServer(log *slog.Logger) (*grpc.Server, *health.Server) {
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	recoverOpts := []recovery.Option{recovery.WithRecoveryHandler(func(p any) error {
		log.Error("panic in handler", "panic", p)
		return status.Errorf(codes.Internal, "internal error: %v", p)
	})}
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(
			logging.UnaryServerInterceptor(logger, logOpts...),
			recovery.UnaryServerInterceptor(recoverOpts...),
			validator.UnaryServerInterceptor(),
		),
		grpc.ChainStreamInterceptor(
			logging.StreamServerInterceptor(logger, logOpts...),
			recovery.StreamServerInterceptor(recoverOpts...),
			validator.StreamServerInterceptor(),
		),
	)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(corelmv1.LoaderService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return gs, hs
}
