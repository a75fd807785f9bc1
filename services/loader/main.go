// Command loader is corelm's loader sidecar: it validates GGUF model files
// from a source directory, converts them to the packed layout and publishes
// them in a shared-memory directory for inference processes, over the
// corelm.v1.LoaderService gRPC API.
//
// Every flag has an environment variable (CORELM_LOADER_<FLAG>); a flag on
// the command line wins. The server itself is package
// services/loader/server.
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

	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/services/loader/server"
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
	return server.Serve(ctx, lis, server.Config{
		Options: server.Options{SourceDir: c.sourceDir, ShmDir: c.shmDir, Budget: budget, Logger: log},
		Grace:   c.shutdownGrace,
	})
}
