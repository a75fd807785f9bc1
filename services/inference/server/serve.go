package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/corelm/corelm/internal/tlsconfig"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/internal/grpcserver"
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
	// TLS serves TLS (nil: plaintext; with ClientAuth set, clients must
	// present a certificate). Limits bound what a client may send
	// (grpcserver.Limits: zero fields take the defaults). Both are built
	// from the flags of BindFlags when left nil/zero.
	TLS    *tls.Config
	Limits grpcserver.Limits
	// LoaderTLS is the loader link's TLS (nil: plaintext; Certificates:
	// mTLS), LoaderToken the bearer token it sends the loader.
	LoaderTLS   *tls.Config
	LoaderToken string
	// Grace is how long shutdown waits for running generations [10s].
	Grace time.Duration
	// RequireModels are the models the server must serve to be ready
	// (ready.go): until each has a generation mapped, health says
	// NOT_SERVING and requests for them get Unavailable with a retry hint.
	// Empty: ready once any model is mapped.
	RequireModels []string
	// Ready, when set, is called the first time the server is ready.
	Ready func()
	// ServerOptions are added to the gRPC server's: a stats handler,
	// more interceptors (see grpcserver.Options).
	ServerOptions []grpc.ServerOption

	files transportFiles // the TLS flags' files (flags.go)
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
	if err := cfg.LoadTLS(); err != nil {
		return err
	}
	srv := New(cfg.Options)
	srv.RequireModels(cfg.RequireModels)
	log := srv.log
	if cfg.ModelFile != "" {
		if err := srv.ServeFile(cfg.ModelFile, cfg.ModelID); err != nil {
			return err
		}
	}
	gs := grpcserver.New(grpcserver.Options{
		Logger: log, Services: []string{corelmv1.InferenceService_ServiceDesc.ServiceName},
		AuthToken: cfg.AuthToken, TLS: cfg.TLS, Limits: cfg.Limits, ToStatus: toError, ServerOptions: append(srv.grpcServerOptions(), cfg.ServerOptions...),
	})
	srv.health = gs.Health
	corelmv1.RegisterInferenceServiceServer(gs, srv)
	gs.Start(lis)

	srv.ready.onReady = func() {
		log.Info("serving", "addr", lis.Addr().String())
		if cfg.Ready != nil {
			cfg.Ready()
		}
	}
	log.Info("listening", "addr", lis.Addr().String(), "require_models", cfg.RequireModels)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := make(chan struct{})
	if cfg.Loader != "" {
		// The connection's own reconnect backoff (gRPC's default grows to
		// 120 s) is capped like the watch's, so a restarted loader is
		// noticed within seconds, not minutes.
		reconnect := backoff.DefaultConfig
		reconnect.MaxDelay = maxWatchBackoff
		opts := append(srv.loaderDialOptions(), tlsconfig.DialOption(cfg.LoaderTLS),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnect, MinConnectTimeout: 5 * time.Second}))
		if cfg.LoaderToken != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(tlsconfig.Bearer{Token: cfg.LoaderToken, TLS: cfg.LoaderTLS != nil}))
		}
		cc, err := grpc.NewClient(cfg.Loader, opts...)
		if err != nil {
			gs.Stop()
			return err
		}
		defer cc.Close()
		go func() {
			defer close(watchDone)
			srv.WatchLoader(watchCtx, cc, srv.checkReady)
		}()
	} else {
		close(watchDone)
		srv.checkReady()
	}

	err := gs.AwaitShutdown(ctx)
	log.Info("shutting down", "grace", cfg.Grace)
	stopWatch()
	<-watchDone
	graceCtx, cancel := context.WithTimeout(context.Background(), cfg.Grace)
	defer cancel()
	srv.Shutdown(graceCtx)
	// The generations have ended (drained or cancelled); their streams
	// still need a moment to deliver the final frames.
	gs.StopWithin(2 * time.Second)
	return err
}
