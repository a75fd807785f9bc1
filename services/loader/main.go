// Command loader is corelm's loader sidecar: it validates GGUF model files,
// converts them to the packed layout and publishes them in a shared-memory
// directory for inference processes, over the corelm.v1.LoaderService gRPC
// API. It loads the models named with --model at start (and again when
// their files change), and those clients ask for from --source-dir.
//
// Every flag has an environment variable (CORELM_LOADER_<FLAG>); a flag on
// the command line wins. The server itself is package
// services/loader/server.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/corelm/corelm/internal/envflag"
	"github.com/corelm/corelm/pkg/kernels"
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
		level  slog.Level
	)
	fs.String(&listen, "listen", "127.0.0.1:7070", "gRPC listen address, host:port")
	fs.String(&cfg.SourceDir, "source-dir", "", "directory of GGUF model files; requests name paths inside it (optional with --model)")
	fs.List(&models, "model", "load model ID from the GGUF file PATH at start, and again when the file changes: ID=PATH, repeatable or comma-separated; "+
		"PATH is absolute or relative to the working directory, and trusted (it may lie outside --source-dir)")
	fs.Duration(&cfg.Watch, "watch-interval", 10*time.Second, "how often the files of --model are checked for changes (0: never)")
	fs.String(&cfg.ShmDir, "shm-dir", "/dev/shm/corelm", "shared-memory directory packed files are published in")
	fs.Bytes(&cfg.Budget, "budget", "0", "bytes of published models allowed, e.g. 12GiB; 0: the directory's free space")
	fs.Duration(&cfg.Grace, "shutdown-grace", 10*time.Second, "how long SIGTERM waits for calls to finish")
	fs.LogLevel(&level)
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
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	return server.Serve(ctx, lis, cfg)
}
