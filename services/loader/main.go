// Command loader is corelm's loader sidecar: it validates GGUF model files
// from a source directory, converts them to the packed layout and publishes
// them in a shared-memory directory for inference processes, over the
// corelm.v1.LoaderService gRPC API.
//
// Every flag has an environment variable (CORELM_LOADER_<FLAG>); a flag on
// the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
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

	"github.com/corelm/corelm/pkg/runtime"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "loader:", err)
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	listen, sourceDir, shmDir, budget, logLevel string
	shutdownGrace                               time.Duration
}

func parseFlags(args []string, getenv func(string) string) (config, error) {
	env := func(name, def string) string {
		if v := getenv("CORELM_LOADER_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))); v != "" {
			return v
		}
		return def
	}
	var c config
	fs := flag.NewFlagSet("loader", flag.ContinueOnError)
	fs.StringVar(&c.listen, "listen", env("listen", "127.0.0.1:7070"), "gRPC listen address, host:port (CORELM_LOADER_LISTEN)")
	fs.StringVar(&c.sourceDir, "source-dir", env("source-dir", ""), "directory of GGUF model files; requests name paths inside it (CORELM_LOADER_SOURCE_DIR)")
	fs.StringVar(&c.shmDir, "shm-dir", env("shm-dir", "/dev/shm/corelm"), "shared-memory directory packed files are published in (CORELM_LOADER_SHM_DIR)")
	fs.StringVar(&c.budget, "budget", env("budget", "0"), "bytes of published models allowed, e.g. 12GiB; 0: the directory's free space (CORELM_LOADER_BUDGET)")
	fs.StringVar(&c.logLevel, "log-level", env("log-level", "info"), "debug, info, warn or error (CORELM_LOADER_LOG_LEVEL)")
	grace := env("shutdown-grace", "10s")
	fs.Func("shutdown-grace", "how long SIGTERM waits for calls to finish (CORELM_LOADER_SHUTDOWN_GRACE; default 10s)", func(s string) error {
		grace = s
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() != 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.sourceDir == "" {
		return c, errors.New("--source-dir (CORELM_LOADER_SOURCE_DIR) is required")
	}
	var err error
	if c.shutdownGrace, err = time.ParseDuration(grace); err != nil {
		return c, fmt.Errorf("--shutdown-grace: %w", err)
	}
	return c, nil
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	c, err := parseFlags(args, getenv)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	budget, err := runtime.ParseBytes(c.budget)
	if err != nil {
		return fmt.Errorf("--budget: %w", err)
	}
	lis, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	return serve(ctx, lis, Options{SourceDir: c.sourceDir, ShmDir: c.shmDir, Budget: budget, Logger: log}, c.shutdownGrace)
}

// serve runs the loader on lis until ctx is cancelled, then stops
// gracefully.
func serve(ctx context.Context, lis net.Listener, opts Options, grace time.Duration) error {
	log := opts.Logger
	srv, err := NewServer(opts)
	if err != nil {
		return err
	}
	defer srv.Close()
	gs, hs := newGRPCServer(log)
	corelmv1.RegisterLoaderServiceServer(gs, srv)
	// Health answers NOT_SERVING, and calls wait, while the shared-memory
	// directory is scanned.
	go gs.Serve(lis)
	if err := srv.Start(); err != nil {
		gs.Stop()
		return err
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(corelmv1.LoaderService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	log.Info("serving", "addr", lis.Addr().String(), "source_dir", srv.srcDir, "shm_dir", srv.shmDir, "budget", opts.Budget)

	<-ctx.Done()
	log.Info("shutting down")
	hs.Shutdown()
	srv.Stop()
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		gs.Stop()
	}
	return nil
}

// newGRPCServer builds the server with its interceptors, health and
// reflection; services are registered by the caller.
func newGRPCServer(log *slog.Logger) (*grpc.Server, *health.Server) {
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
