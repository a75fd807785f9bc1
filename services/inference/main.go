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
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/services/inference/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "inference:", err)
		os.Exit(1)
	}
}

// flags is the command line before conversion.
type flags struct {
	listen, loader, modelFile, modelID, kvType, budget, authToken, logLevel string
	threads, maxSeqs, maxQueue, ctx, stepTokens                             int
	grace                                                                   time.Duration
}

func parseFlags(args []string, getenv func(string) string) (flags, error) {
	envName := func(name string) string { return "CORELM_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) }
	var errs []error
	fsys := flag.NewFlagSet("inference", flag.ContinueOnError)
	str := func(p *string, name, def, usage string) {
		if v := getenv(envName(name)); v != "" {
			def = v
		}
		fsys.StringVar(p, name, def, usage+" ("+envName(name)+")")
	}
	num := func(p *int, name string, def int, usage string) {
		if v := getenv(envName(name)); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", envName(name), err))
			}
			def = n
		}
		fsys.IntVar(p, name, def, usage+" ("+envName(name)+")")
	}
	var f flags
	str(&f.listen, "listen", "127.0.0.1:7071", "gRPC listen address, host:port")
	str(&f.loader, "loader", "", "the loader's address; serve the models it publishes")
	str(&f.modelFile, "model-file", "", `serve this GGUF or packed file directly ("stories": the built-in demo model)`)
	str(&f.modelID, "model-id", "", "model id of --model-file (default: the file name without extension)")
	num(&f.threads, "threads", 0, "kernel threads per model (0: the CPUs this process may use)")
	num(&f.maxSeqs, "max-seqs", 8, "sequences per model decoded together")
	num(&f.maxQueue, "max-queue", 0, "requests waiting for a slot per model (0: twice --max-seqs)")
	num(&f.ctx, "ctx", 0, "context length per sequence (0: the model's)")
	num(&f.stepTokens, "step-tokens", 128, "most tokens one forward step processes (prefill chunking)")
	str(&f.kvType, "kv-type", "f16", "KV cache type: f16 or q8_0")
	str(&f.budget, "budget", "1GiB", "KV cache memory per model, e.g. 2GiB (0: only --max-seqs limits)")
	str(&f.authToken, "auth-token", "", "require this bearer token on every call but health checks")
	str(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	grace := "10s"
	if v := getenv(envName("shutdown-grace")); v != "" {
		grace = v
	}
	fsys.StringVar(&grace, "shutdown-grace", grace, "how long SIGTERM waits for running generations ("+envName("shutdown-grace")+")")
	if err := errors.Join(errs...); err != nil {
		return f, err
	}
	if err := fsys.Parse(args); err != nil {
		return f, err
	}
	if fsys.NArg() != 0 {
		return f, fmt.Errorf("unexpected arguments %q", fsys.Args())
	}
	var err error
	if f.grace, err = time.ParseDuration(grace); err != nil {
		return f, fmt.Errorf("--shutdown-grace: %w", err)
	}
	if f.loader == "" && f.modelFile == "" {
		return f, errors.New("give --loader (CORELM_LOADER) or --model-file (CORELM_MODEL_FILE; \"stories\" for the built-in model)")
	}
	return f, nil
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	f, err := parseFlags(args, getenv)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	kv, err := kvcache.ParseType(f.kvType)
	if err != nil {
		return fmt.Errorf("--kv-type: %w", err)
	}
	budget, err := runtime.ParseBytes(f.budget)
	if err != nil {
		return fmt.Errorf("--budget: %w", err)
	}
	lis, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	return server.Serve(ctx, lis, server.Config{
		Options: server.Options{
			Threads: f.threads, MaxSeqs: f.maxSeqs, MaxQueue: f.maxQueue, Context: f.ctx, KVType: kv,
			Budget: budget, StepTokens: f.stepTokens,
			Logger: slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		},
		Loader: f.loader, ModelFile: f.modelFile, ModelID: f.modelID, AuthToken: f.authToken, Grace: f.grace,
	})
}
