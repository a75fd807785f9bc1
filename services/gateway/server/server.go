// Package server is corelm's HTTP gateway: the OpenAI API (chat
// completions, completions, models; server-sent events when streaming)
// and the inference service itself as gRPC-Web and Connect, all answered
// by calls to a corelm.v1.InferenceService over gRPC. It holds no model
// and no state of its own: every answer is one inference call, so the gRPC
// API is proven sufficient by construction.
package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/internal/telemetry"
)

// serviceConfig spreads calls over every address the resolver gives: with
// a dns:/// target naming a headless Service, over every replica.
const serviceConfig = `{"loadBalancingConfig": [{"round_robin": {}}]}`

// Config is a gateway.
type Config struct {
	// Inference is the inference service's gRPC target (host:port, or
	// dns:///name:port for several replicas, spread round-robin).
	Inference string
	// AuthToken, when set, is required as "Authorization: Bearer <token>"
	// on every request but /healthz and /readyz.
	AuthToken string
	// PassAuth forwards the client's Authorization header to inference,
	// which checks it (its own --auth-token).
	PassAuth bool
	// InferenceToken is the bearer token the gateway sends to inference
	// when it does not pass the client's on.
	InferenceToken string
	// MaxBody is the largest request body, in bytes [1 MiB].
	MaxBody int64
	// Timeout bounds each request (0: none; a client that goes away
	// cancels its request at once either way).
	Timeout time.Duration
	// CORSOrigins are the browser origins allowed to call ("*": any);
	// none: no CORS headers, browsers refuse cross-origin calls.
	CORSOrigins []string
	// Logger [discard] and Telemetry [telemetry.Nop()].
	Logger    *slog.Logger
	Telemetry *telemetry.Telemetry
	// DialOptions are added to the gRPC client's (TLS credentials, ...).
	DialOptions []grpc.DialOption
}

// Server is a gateway: an http.Handler over a gRPC client connection.
type Server struct {
	cfg     Config
	log     *slog.Logger
	conn    *grpc.ClientConn
	client  corelmv1.InferenceServiceClient
	health  healthpb.HealthClient
	handler http.Handler
}

// New connects (lazily) to cfg.Inference and builds the handler.
func New(cfg Config) (*Server, error) {
	if cfg.Inference == "" {
		return nil, errors.New("no inference address")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Telemetry == nil {
		cfg.Telemetry = telemetry.Nop()
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(cfg.Telemetry.GRPCOptions()...)),
	}, cfg.DialOptions...)
	conn, err := grpc.NewClient(cfg.Inference, opts...)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, conn: conn,
		client: corelmv1.NewInferenceServiceClient(conn), health: healthpb.NewHealthClient(conn)}
	connect, err := s.connectHandler()
	if err != nil {
		conn.Close()
		return nil, err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.ready)
	mux.Handle("/"+healthpb.Health_ServiceDesc.ServiceName+"/", connect) // no auth, like the probes
	api := http.NewServeMux()
	api.HandleFunc("POST /v1/chat/completions", s.chatCompletions)
	api.HandleFunc("POST /v1/completions", s.completions)
	api.HandleFunc("POST /v1/embeddings", s.embeddings)
	api.HandleFunc("GET /v1/models", s.listModels)
	api.HandleFunc("GET /v1/models/{id}", s.getModel)
	api.Handle("/"+corelmv1.InferenceService_ServiceDesc.ServiceName+"/", connect)
	api.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, newHTTPError(http.StatusNotFound, "invalid_request_error",
			r.Method+" "+r.URL.Path+" is not an endpoint of this server", "", "unknown_url").body)
	})
	mux.Handle("/", s.limits(s.auth(api)))

	tel := cfg.Telemetry
	s.handler = s.cors(otelhttp.NewHandler(mux, "corelm-gateway",
		otelhttp.WithTracerProvider(tel.TracerProvider()),
		otelhttp.WithMeterProvider(tel.MeterProvider()),
		otelhttp.WithPropagators(tel.Propagator()),
		otelhttp.WithSpanNameFormatter(spanName),
		otelhttp.WithFilter(func(r *http.Request) bool { return r.URL.Path != "/healthz" && r.URL.Path != "/readyz" }),
	))
	return s, nil
}

// spanName names the HTTP span by route, not by path (a model id in the
// path would make a name per model).
func spanName(_ string, r *http.Request) string {
	p := r.URL.Path
	if strings.HasPrefix(p, "/v1/models/") {
		p = "/v1/models/{id}"
	}
	return r.Method + " " + p
}

// ServeHTTP serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Close closes the connection to inference.
func (s *Server) Close() error { return s.conn.Close() }

// Serve runs a gateway on lis until ctx ends, then stops taking requests
// and gives running ones up to grace to finish (streams longer than that
// are cancelled, and so are their generations).
func Serve(ctx context.Context, lis net.Listener, cfg Config, grace time.Duration) error {
	s, err := New(cfg)
	if err != nil {
		lis.Close()
		return err
	}
	defer s.Close()
	baseCtx, cancelAll := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelAll()
	// HTTP/1.1 for browsers and curl; cleartext HTTP/2 for gRPC clients
	// (and `corelm health`), which speak it with prior knowledge.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true) // over TLS (a tls.Listener: --tls-cert), negotiated by ALPN
	hs := &http.Server{
		Handler:           s,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(lis) }()
	s.log.Info("serving", "addr", lis.Addr().String(), "inference", cfg.Inference)
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	graceCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := hs.Shutdown(graceCtx); err != nil {
		cancelAll() // the streams still running: their generations stop
		hs.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ready is /readyz: 200 when inference's health of the InferenceService
// is SERVING (its required models are mapped; the whole server's health,
// "", says only that the process is up).
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	resp, err := s.health.Check(ctx, &healthpb.HealthCheckRequest{Service: corelmv1.InferenceService_ServiceDesc.ServiceName})
	switch {
	case err != nil:
		http.Error(w, "inference unreachable: "+err.Error(), http.StatusServiceUnavailable)
	case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		http.Error(w, "inference "+resp.GetStatus().String(), http.StatusServiceUnavailable)
	default:
		w.Write([]byte("ok\n"))
	}
}

// auth checks --auth-token.
func (s *Server) auth(next http.Handler) http.Handler {
	if s.cfg.AuthToken == "" {
		return next
	}
	want := []byte("Bearer " + s.cfg.AuthToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeError(w, ErrUnauthenticated)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limits bounds the body and the request's time.
func (s *Server) limits(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
		if s.cfg.Timeout > 0 {
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
			defer cancel()
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(w, r)
	})
}

// cors answers browsers from the allowed origins; with none allowed it
// adds nothing.
func (s *Server) cors(next http.Handler) http.Handler {
	if len(s.cfg.CORSOrigins) == 0 {
		return next
	}
	any := slices.Contains(s.cfg.CORSOrigins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || !(any || slices.Contains(s.cfg.CORSOrigins, origin)) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Expose-Headers", "Retry-After, Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, Connect-Content-Encoding")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			if rh := r.Header.Get("Access-Control-Request-Headers"); rh != "" {
				h.Set("Access-Control-Allow-Headers", rh)
			}
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// outgoing is the context of r's inference call: r's (cancelled when the
// client goes away, carrying the HTTP span) with the bearer token to
// send.
func (s *Server) outgoing(r *http.Request) context.Context {
	return s.withAuth(r.Context(), r.Header.Get("Authorization"))
}

// withAuth adds the bearer token for inference to ctx: the client's
// authorization with PassAuth, else InferenceToken's.
func (s *Server) withAuth(ctx context.Context, authorization string) context.Context {
	switch {
	case s.cfg.PassAuth && authorization != "":
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", authorization)
	case s.cfg.InferenceToken != "":
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.cfg.InferenceToken)
	}
	return ctx
}
