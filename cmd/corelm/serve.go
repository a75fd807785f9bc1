package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/services/inference/server"
)

func init() {
	commands["serve-all"] = command{"serve models over gRPC in one process (the built-in stories model by default)", runServeAll}
}

// runServeAll is the one-machine quickstart: the inference service in this
// process, serving a model file directly. The loader's work for a single
// process (validate, map read-only, check) is done in place by the
// inference server's direct mode, so no loopback hop is needed; with
// --loader it also serves what an external loader publishes.
func runServeAll(ctx context.Context, args []string) error {
	fs := newFlags("serve-all")
	listen := fs.String("listen", "127.0.0.1:7071", "gRPC listen address")
	modelFile := fs.String("model-file", server.EmbeddedModel, `GGUF or packed file to serve ("stories": the built-in model)`)
	modelID := fs.String("model-id", "", "model id (default: stories for the built-in model, else the file name)")
	loader := fs.String("loader", "", "also serve the models this loader publishes")
	threads := fs.Int("threads", 0, "kernel threads (0: the CPUs this process may use)")
	maxSeqs := fs.Int("max-seqs", 8, "sequences decoded together")
	ctxLen := fs.Int("ctx", 0, "context per sequence (0: the model's)")
	kvType := fs.String("kv-type", "f16", "KV cache type: f16 or q8_0")
	budgetS := fs.String("budget", "1GiB", "KV cache memory per model")
	token := fs.String("auth-token", os.Getenv("CORELM_AUTH_TOKEN"), "require this bearer token (CORELM_AUTH_TOKEN)")
	grace := fs.Duration("shutdown-grace", 10*time.Second, "how long Ctrl-C waits for running generations")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if fs.NArg() != 0 {
		return usagef("usage: corelm serve-all [flags]")
	}
	kv, err := kvcache.ParseType(*kvType)
	if err != nil {
		return usagef("--kv-type: %v", err)
	}
	budget, err := runtime.ParseBytes(*budgetS)
	if err != nil {
		return usagef("--budget: %v", err)
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	id := *modelID
	if id == "" {
		id = server.DefaultModelID(*modelFile)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	return server.Serve(ctx, lis, server.Config{
		Options: server.Options{Threads: *threads, MaxSeqs: *maxSeqs, Context: *ctxLen, KVType: kv, Budget: budget, Logger: log},
		Loader:  *loader, ModelFile: *modelFile, ModelID: id, AuthToken: *token, Grace: *grace,
		Ready: func() {
			fmt.Fprintf(os.Stderr, "try: grpcurl -plaintext -d '{\"model_id\":\"%s\",\"text\":\"Once upon a time\",\"max_tokens\":32}' %s corelm.v1.InferenceService/GenerateStream\n",
				id, lis.Addr())
		},
	})
}
