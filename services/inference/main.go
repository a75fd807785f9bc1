// Command inference is corelm's inference server: corelm.v1.InferenceService
// over gRPC, running the models a loader publishes (--loader) or a model
// file given directly (--model-file; "stories" is the built-in demo model).
//
// Every flag has an environment variable, CORELM_<FLAG> with dashes as
// underscores (CORELM_MAX_SEQS, CORELM_AUTH_TOKEN, ...); a flag on the
// command line wins. Traces and metrics follow the standard OTEL_*
// variables (docs/tracing.md); --trace-level sets how much of a generation
// is traced, --metrics-listen serves Prometheus metrics.
package main

import (
	"context"
	"errors"

	"github.com/corelm/corelm/internal/envflag"
	"github.com/corelm/corelm/internal/tlsconfig"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/services/inference/server"
)

func main() { envflag.Main("inference", run) }

func run(ctx context.Context, args []string, getenv func(string) string) error {
	if err := kernels.Check(); err != nil {
		return err
	}
	fs := envflag.New("inference", "CORELM_", getenv)
	var (
		cfg       server.Config
		listen    string
		loaderTLS tlsconfig.Client
	)
	fs.String(&listen, "listen", "127.0.0.1:7071", "gRPC listen address, host:port")
	fs.String(&cfg.Loader, "loader", "", "the loader's address; serve the models it publishes")
	fs.String(&cfg.ModelFile, "model-file", "", `serve this GGUF or packed file directly ("stories": the built-in demo model)`)
	fs.String(&cfg.ModelID, "model-id", "", "model id of --model-file (default: the file name without extension)")
	fs.List(&cfg.RequireModels, "require-models", "not ready (health NOT_SERVING, requests for them Unavailable) until these models are served: ID,... "+
		"(default: until any model is)")
	// CORELM_LOADER_AUTH_TOKEN is also the loader's own --auth-token
	// variable: one setting configures both ends of the link.
	fs.String(&cfg.LoaderToken, "loader-auth-token", "", "bearer token sent to the loader (its --auth-token)")
	loaderTLS.Bind(fs, "loader")
	cfg.BindFlags(fs)
	tf := server.BindTelemetryFlags(fs, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.Loader == "" && cfg.ModelFile == "" {
		return errors.New("give --loader (CORELM_LOADER) or --model-file (CORELM_MODEL_FILE; \"stories\" for the built-in model)")
	}
	var err error
	if cfg.LoaderTLS, err = loaderTLS.Config(); err != nil {
		return err
	}
	p, err := tf.Start(ctx, "corelm-inference", listen, getenv)
	if err != nil {
		return err
	}
	defer p.Shutdown()
	cfg.Logger, cfg.Tracing.Telemetry = p.Log, p.Telemetry
	return server.Serve(ctx, p.Listener, cfg)
}
