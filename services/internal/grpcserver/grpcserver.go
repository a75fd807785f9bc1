// Package grpcserver builds the gRPC server both corelm services run: the
// interceptors (call logging, panic recovery, optional bearer-token auth,
// request validation), optional TLS (internal/tlsconfig), the limits on
// what one client may send (limits.go), grpc.health.v1 health and server reflection, and
// the graceful stop. The services register their own service on it and
// keep their own error→status function, which it uses for the errors it
// makes itself.
package grpcserver

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/validator"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/tlsconfig"
)

// Errors the interceptors give Options.ToStatus.
var (
	// ErrUnauthenticated: the call lacks the bearer token, or has another.
	ErrUnauthenticated = errors.New("missing or invalid bearer token")
	// ErrInternal: a handler panicked. Clients get only this; the panic
	// and its stack are logged.
	ErrInternal = errors.New("internal error")
)

// Options configure New.
type Options struct {
	// Logger gets a line per finished call (at debug for health checks
	// and reflection) and each recovered panic [discard].
	Logger *slog.Logger
	// Services are the service names health reports on besides the whole
	// server (""); all say NOT_SERVING until SetServing.
	Services []string
	// AuthToken, when set, is required as "authorization: Bearer <token>"
	// on every call but health checks.
	AuthToken string
	// TLS, when set, serves TLS (tlsconfig.Server: with ClientAuth set,
	// clients must present a certificate); nil: plaintext.
	TLS *tls.Config
	// Limits bound message sizes, streams per connection and keepalive;
	// zero fields take DefaultLimits.
	Limits Limits
	// ToStatus is the service's error→status function; ErrUnauthenticated
	// and ErrInternal go through it [Unauthenticated and Internal].
	ToStatus func(error) error
	// ServerOptions are added after corelm's: a stats handler
	// (grpc.StatsHandler(otelgrpc.NewServerHandler())),
	// interceptors run after corelm's, nearest the
	// handler (grpc.ChainUnaryInterceptor(...)), limits.
	ServerOptions []grpc.ServerOption
}

// Server is a gRPC server with health. Register services on it, Start it,
// SetServing when the service is ready, and on the way out AwaitShutdown,
// let the service drain, then StopWithin.
type Server struct {
	*grpc.Server
	// Health is the server's grpc.health.v1 service.
	Health *health.Server

	services []string
	served   chan error // Serve's result
}

// New builds a server with the interceptors, health (NOT_SERVING) and
// reflection registered.
func New(opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	toStatus := opts.ToStatus
	if toStatus == nil {
		toStatus = defaultStatus
	}
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		if lvl == logging.LevelInfo && probe(fields) {
			lvl = logging.LevelDebug // probes and tools every few seconds would drown the calls
		}
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	recoverOpts := []recovery.Option{recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		log.ErrorContext(ctx, "panic in handler", "method", method, "panic", p, "stack", string(debug.Stack()))
		return toStatus(ErrInternal)
	})}
	// Logging is outermost so that it records the codes of recovered
	// panics and refused tokens too.
	unary := []grpc.UnaryServerInterceptor{
		logging.UnaryServerInterceptor(logger, logOpts...),
		recovery.UnaryServerInterceptor(recoverOpts...),
	}
	stream := []grpc.StreamServerInterceptor{
		logging.StreamServerInterceptor(logger, logOpts...),
		recovery.StreamServerInterceptor(recoverOpts...),
	}
	if opts.AuthToken != "" {
		check := bearer(opts.AuthToken, toStatus)
		notHealth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
			return c.Service != healthpb.Health_ServiceDesc.ServiceName
		})
		unary = append(unary, selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(check), notHealth))
		stream = append(stream, selector.StreamServerInterceptor(auth.StreamServerInterceptor(check), notHealth))
	}
	// Nearest the handler: a message with invalid UTF-8 (utf8.go) is
	// refused for itself, after the validator saw its repaired text.
	unary = append(unary, validator.UnaryServerInterceptor(), utf8Unary)
	stream = append(stream, validator.StreamServerInterceptor(), utf8Stream)

	sopts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...),
		grpc.ForceServerCodecV2(newCodec()), grpc.InTapHandle(protoOnly)}
	sopts = append(sopts, opts.Limits.serverOptions()...)
	sopts = append(sopts, tlsconfig.ServerOption(opts.TLS)...)
	s := &Server{
		Server:   grpc.NewServer(append(sopts, opts.ServerOptions...)...),
		Health:   health.NewServer(),
		services: append([]string{""}, opts.Services...),
		served:   make(chan error, 1),
	}
	s.setStatus(healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s.Server, s.Health)
	reflection.Register(s.Server)
	return s
}

// probe reports whether a call's log fields are those of a health check or
// a reflection call, which log at debug rather than info.
func probe(fields []any) bool {
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] == logging.ServiceFieldKey {
			svc, _ := fields[i+1].(string)
			return svc == healthpb.Health_ServiceDesc.ServiceName || strings.HasPrefix(svc, "grpc.reflection.")
		}
	}
	return false
}

// bearer checks "authorization: Bearer <token>" in constant time.
func bearer(token string, toStatus func(error) error) auth.AuthFunc {
	return func(ctx context.Context) (context.Context, error) {
		got, err := auth.AuthFromMD(ctx, "bearer")
		if err != nil || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			return nil, toStatus(ErrUnauthenticated)
		}
		return ctx, nil
	}
}

// defaultStatus is ToStatus for a service that gives none.
func defaultStatus(err error) error {
	if errors.Is(err, ErrUnauthenticated) {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// setStatus tells health st for the server ("", services[0]) and its
// services. Turning SERVING, the services go first, so that a client that
// sees the whole server SERVING finds each of its services SERVING too;
// turning NOT_SERVING, the whole server goes first.
func (s *Server) setStatus(st healthpb.HealthCheckResponse_ServingStatus) {
	names := s.services
	if st == healthpb.HealthCheckResponse_SERVING {
		names = append(slices.Clone(names[1:]), names[0])
	}
	for _, name := range names {
		s.Health.SetServingStatus(name, st)
	}
}

// Start serves lis in the background.
func (s *Server) Start(lis net.Listener) {
	go func() { s.served <- s.Server.Serve(lis) }()
}

// SetServing turns health SERVING for the server and its services.
func (s *Server) SetServing() { s.setStatus(healthpb.HealthCheckResponse_SERVING) }

// AwaitShutdown blocks until ctx ends or serving fails, then turns health
// NOT_SERVING for good, so that balancers and probes send no new calls
// while the service drains. It returns serving's error, nil when ctx
// ended.
func (s *Server) AwaitShutdown(ctx context.Context) error {
	var err error
	select {
	case <-ctx.Done():
	case err = <-s.served:
	}
	s.Health.Shutdown()
	return err
}

// StopWithin stops the server gracefully, letting open calls finish, and
// cuts those still open after grace.
func (s *Server) StopWithin(grace time.Duration) {
	stopped := make(chan struct{})
	go func() { s.GracefulStop(); close(stopped) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		s.Stop()
		<-stopped
	}
}
