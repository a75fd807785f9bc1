// Command gateway is corelm's HTTP gateway: the OpenAI API (POST
// /v1/chat/completions and /v1/completions, streaming as server-sent
// events; GET /v1/models), corelm.v1.InferenceService as gRPC-Web and
// Connect, /healthz and /readyz, all on one port and all answered by an
// inference service over gRPC (--inference; dns:///name:port spreads calls
// over every replica the name resolves to).
//
// Every flag has an environment variable, CORELM_GATEWAY_<FLAG> with
// dashes as underscores; a flag on the command line wins. Traces follow the
// standard OTEL_* variables (docs/tracing.md): the gateway's HTTP span is
// the parent of the inference call's. --tls-cert/--tls-key serve HTTPS
// (HTTP/2 by ALPN); --inference-tls-ca and --inference-client-cert/-key
// make the link to inference TLS (mTLS).
package main

import (
	"context"
	"crypto/tls"
	"time"

	"github.com/corelm/corelm/internal/envflag"
	"github.com/corelm/corelm/internal/tlsconfig"
	"github.com/corelm/corelm/services/gateway/server"
	"github.com/corelm/corelm/services/internal/telemetry"
)

func main() { envflag.Main("gateway", run) }

func run(ctx context.Context, args []string, getenv func(string) string) error {
	fs := envflag.New("gateway", "CORELM_GATEWAY_", getenv)
	var (
		cfg          server.Config
		listen       string
		grace        time.Duration
		tlsf         tlsconfig.Server
		inferenceTLS tlsconfig.Client
	)
	fs.String(&listen, "listen", "127.0.0.1:8080", "HTTP listen address, host:port")
	fs.String(&cfg.Inference, "inference", "127.0.0.1:7071", "the inference service's gRPC target: host:port, or dns:///name:port for several replicas (round-robin)")
	server.BindFlags(fs, &cfg)
	fs.Duration(&grace, "shutdown-grace", 10*time.Second, "how long SIGTERM waits for running requests")
	tlsf.Bind(fs)
	inferenceTLS.Bind(fs, "inference")
	tf := &telemetry.Flags{}
	tf.Bind(fs, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	serverTLS, err := tlsf.Config()
	if err != nil {
		return err
	}
	clientTLS, err := inferenceTLS.Config()
	if err != nil {
		return err
	}
	cfg.DialOptions = append(cfg.DialOptions, tlsconfig.DialOption(clientTLS))
	p, err := tf.Start(ctx, "corelm-gateway", listen, getenv)
	if err != nil {
		return err
	}
	defer p.Shutdown()
	lis := p.Listener
	if serverTLS != nil {
		lis = tls.NewListener(lis, serverTLS)
	}
	cfg.Logger, cfg.Telemetry = p.Log, p.Telemetry
	return server.Serve(ctx, lis, cfg, grace)
}
