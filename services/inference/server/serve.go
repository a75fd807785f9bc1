package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/validator"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// Config is a whole inference process.
type Config struct {
	Options
	// Loader is the loader's address; its published models are served.
	Loader string
	// ModelFile is served directly under ModelID (EmbeddedModel: the
	// built-in stories model).
	ModelFile, ModelID string
	// AuthToken, when set, is required as "authorization: Bearer <token>"
	// on every call but health checks.
	AuthToken string
	// Grace is how long shutdown waits for running generations [10s].
	Grace time.Duration
	// Ready, when set, is called once the server serves (after the
	// loader's first snapshot when there is a loader).
	Ready func()
}

// Serve runs the inference service on lis until ctx ends, then shuts down
// gracefully: health turns NOT_SERVING, new generations are refused,
// running ones get up to Grace to finish, then the gRPC server stops.
func Serve(ctx context.Context, lis net.Listener, cfg Config) error {
	if cfg.Loader == "" && cfg.ModelFile == "" {
		return errors.New("nothing to serve: give a loader address or a model file")
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	srv := New(cfg.Options)
	log := srv.log
	if cfg.ModelFile != "" {
		if err := srv.ServeFile(cfg.ModelFile, cfg.ModelID); err != nil {
			return err
		}
	}
	gs, hs := NewGRPCServer(log, cfg.AuthToken)
	srv.health = hs
	corelmv1.RegisterInferenceServiceServer(gs, srv)
	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()

	setServing := func() {
		hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		hs.SetServingStatus(corelmv1.InferenceService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
		log.Info("serving", "addr", lis.Addr().String())
		if cfg.Ready != nil {
			cfg.Ready()
		}
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := make(chan struct{})
	if cfg.Loader != "" {
		cc, err := grpc.NewClient(cfg.Loader, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			gs.Stop()
			return err
		}
		defer cc.Close()
		go func() {
			defer close(watchDone)
			srv.WatchLoader(watchCtx, cc, setServing)
		}()
	} else {
		close(watchDone)
		setServing()
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	log.Info("shutting down", "grace", cfg.Grace)
	hs.Shutdown()
	stopWatch()
	<-watchDone
	graceCtx, cancel := context.WithTimeout(context.Background(), cfg.Grace)
	defer cancel()
	srv.Shutdown(graceCtx)
	// The generations have ended (drained or cancelled); their streams
	// still need a moment to deliver the final frames.
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		gs.Stop()
		<-stopped
	}
	return err
}

// NewGRPCServer builds a gRPC server with corelm's interceptors (logging,
// panic recovery, request validation, optional bearer-token auth), health
// (NOT_SERVING until told) and reflection. Services are registered by the
// caller.
func NewGRPCServer(log *slog.Logger, token string) (*grpc.Server, *health.Server) {
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	recoverOpts := []recovery.Option{recovery.WithRecoveryHandler(func(p any) error {
		log.Error("panic in handler", "panic", p)
		return toError(errors.New("internal error"))
	})}
	unary := []grpc.UnaryServerInterceptor{
		logging.UnaryServerInterceptor(logger, logOpts...),
		recovery.UnaryServerInterceptor(recoverOpts...),
	}
	stream := []grpc.StreamServerInterceptor{
		logging.StreamServerInterceptor(logger, logOpts...),
		recovery.StreamServerInterceptor(recoverOpts...),
	}
	if token != "" {
		check := bearer(token)
		notHealth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
			return c.Service != healthpb.Health_ServiceDesc.ServiceName
		})
		unary = append(unary, selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(check), notHealth))
		stream = append(stream, selector.StreamServerInterceptor(auth.StreamServerInterceptor(check), notHealth))
	}
	unary = append(unary, validator.UnaryServerInterceptor())
	stream = append(stream, validator.StreamServerInterceptor())
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...))
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(corelmv1.InferenceService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return gs, hs
}

// bearer checks "authorization: Bearer <token>" in constant time.
func bearer(token string) auth.AuthFunc {
	return func(ctx context.Context) (context.Context, error) {
		got, err := auth.AuthFromMD(ctx, "bearer")
		if err != nil || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			return nil, toError(ErrUnauthenticated)
		}
		return ctx, nil
	}
}
