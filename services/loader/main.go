// Command loader is corelm's loader sidecar: it validates GGUF model files,
// converts them to the packed layout and publishes them in a shared-memory
// directory for inference processes, over the corelm.v1.LoaderService gRPC
// API. It loads the models named with --model at start (and again when
// their files change), and those clients ask for from --source-dir.
//
// Every flag has an environment variable (CORELM_LOADER_<FLAG>); a flag on
// the command line wins. Traces and metrics follow the standard OTEL_*
// variables (docs/tracing.md); --metrics-listen serves Prometheus metrics. The server itself is package
// services/loader/server.
package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"

	"github.com/corelm/corelm/internal/envflag"
	"github.com/corelm/corelm/internal/tlsconfig"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/services/internal/telemetry"
	"github.com/corelm/corelm/services/loader/server"
)

func main() { envflag.Main("loader", run) }

func run(ctx context.Context, args []string, getenv func(string) string) error {
	if err := kernels.Check(); err != nil {
		return err
	}
	fs := envflag.New("loader", "CORELM_LOADER_", getenv)
	var (
		cfg    server.Config
		listen string
		models []string
		tf     telemetry.Flags
		tlsf   tlsconfig.Server
	)
	fs.String(&listen, "listen", "127.0.0.1:7070", "gRPC listen address, host:port")
	fs.String(&cfg.SourceDir, "source-dir", "", "directory of GGUF model files; requests name paths inside it (optional with --model)")
	fs.List(&models, "model", "load model ID from the GGUF file PATH at start, and again when the file changes: ID=PATH, repeatable or comma-separated; "+
		"PATH is absolute or relative to the working directory, and trusted (it may lie outside --source-dir)")
	fs.Duration(&cfg.Watch, "watch-interval", 10*time.Second, "how often the files of --model are checked for changes (0: never)")
	fs.String(&cfg.ShmDir, "shm-dir", "/dev/shm/corelm", "shared-memory directory packed files are published in")
	fs.Bytes(&cfg.Budget, "budget", "0", "bytes of packed files the directory may hold, superseded generations still mapped included, e.g. 5GiB; "+
		"0: the directory's file system size, at most the memory limit (cgroup or physical) less a margin")
	fs.Duration(&cfg.DrainTimeout, "drain-timeout", server.DefaultDrainTimeout, "how long a load waits for superseded generations to drain "+
		"when the budget cannot hold it beside them (keep it above the inference service's --drain-timeout)")
	fs.Duration(&cfg.Grace, "shutdown-grace", 10*time.Second, "how long SIGTERM waits for calls to finish")
	fs.String(&cfg.AuthToken, "auth-token", "", "require this bearer token on every call but health checks (the inference side sends it: its --loader-auth-token, the same variable)")
	tlsf.Bind(fs)
	cfg.Limits.Bind(fs)
	tf.Bind(fs, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if cfg.Models, err = server.ParseModels(models); err != nil {
		return fmt.Errorf("--model: %w", err)
	}
	if cfg.SourceDir == "" && len(cfg.Models) == 0 {
		return errors.New("give --source-dir (CORELM_LOADER_SOURCE_DIR) or --model (CORELM_LOADER_MODEL), or both")
	}
	if cfg.TLS, err = tlsf.Config(); err != nil {
		return err
	}
	p, err := tf.Start(ctx, "corelm-loader", listen, getenv)
	if err != nil {
		return err
	}
	defer p.Shutdown()
	cfg.Logger, cfg.Telemetry = p.Log, p.Telemetry
	cfg.ServerOptions = append(cfg.ServerOptions, grpc.StatsHandler(otelgrpc.NewServerHandler(p.Telemetry.GRPCOptions()...)))
	return server.Serve(ctx, p.Listener, cfg)
}
