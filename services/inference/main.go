// Command inference is corelm's inference server: corelm.v1.InferenceService
// over gRPC, running the models a loader publishes (--loader) or a model
// file given directly (--model-file; "stories" is the built-in demo model).
//
// Every flag has an environment variable, CORELM_<FLAG> with dashes as
// underscores (CORELM_MAX_SEQS, CORELM_AUTH_TOKEN, ...); a flag on the
// command line wins.
package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"

	"github.com/corelm/corelm/internal/envflag"
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
		cfg    server.Config
		listen string
		level  slog.Level
	)
	fs.String(&listen, "listen", "127.0.0.1:7071", "gRPC listen address, host:port")
	fs.String(&cfg.Loader, "loader", "", "the loader's address; serve the models it publishes")
	fs.String(&cfg.ModelFile, "model-file", "", `serve this GGUF or packed file directly ("stories": the built-in demo model)`)
	fs.String(&cfg.ModelID, "model-id", "", "model id of --model-file (default: the file name without extension)")
	cfg.BindFlags(fs)
	fs.LogLevel(&level)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.Loader == "" && cfg.ModelFile == "" {
		return errors.New("give --loader (CORELM_LOADER) or --model-file (CORELM_MODEL_FILE; \"stories\" for the built-in model)")
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	return server.Serve(ctx, lis, cfg)
}
