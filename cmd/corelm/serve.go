package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/corelm/corelm/internal/envflag"
	"github.com/corelm/corelm/models"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	inference "github.com/corelm/corelm/services/inference/server"
	loader "github.com/corelm/corelm/services/loader/server"
)

// storiesID is the id the embedded demo model is published under.
const storiesID = "stories"

// runServeAll is the one-machine quickstart: the loader and the inference
// service in this process, talking over loopback gRPC exactly as the two
// binaries do. The loader validates and packs the models into a
// shared-memory directory; the inference service maps what it publishes.
// The service's flags are the inference binary's, and like them each has
// an environment variable, CORELM_<FLAG> with dashes as underscores.
func runServeAll(ctx context.Context, args []string) error {
	fs := envflag.New("corelm serve-all", "CORELM_", os.Getenv)
	var (
		cfg                       inference.Config
		listen, sourceDir, shmDir string
		extra                     modelFlags
		level                     slog.Level
	)
	fs.String(&listen, "listen", "127.0.0.1:50051", "the inference service's gRPC listen address")
	fs.String(&sourceDir, "source-dir", "", "directory of GGUF files the loader reads (default: a temporary one holding the embedded "+storiesID+" model)")
	fs.String(&shmDir, "shm-dir", "", "directory packed files are published in (default: a temporary one in /dev/shm, else in the system's temporary directory)")
	fs.Var(&extra, "model", "also load model ID from PATH inside --source-dir: --model ID=PATH (repeatable)")
	cfg.BindFlags(fs)
	fs.LogLevel(&level)
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if len(extra) > 0 && sourceDir == "" {
		return usagef("--model needs --source-dir: the loader reads model files from that directory only")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// Listen first, so a taken port fails before any model is packed.
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	defer lis.Close()
	src, cleanSrc, err := serveAllSourceDir(sourceDir)
	if err != nil {
		return err
	}
	defer cleanSrc()
	shm, cleanShm, err := serveAllShmDir(shmDir)
	if err != nil {
		return err
	}
	defer cleanShm()
	load, err := serveAllModels(src, extra)
	if err != nil {
		return err
	}

	// The loader outlives the inference service, so the service's watch
	// does not see it go away while it drains.
	loaderLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	loaderCtx, stopLoader := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoader()
	loaderReady, loaderDone := make(chan struct{}), make(chan error, 1)
	go func() {
		loaderDone <- loader.Serve(loaderCtx, loaderLis, loader.Config{
			Options: loader.Options{SourceDir: src, ShmDir: shm, Logger: log.With("service", "loader")},
			Grace:   cfg.Grace,
			Ready:   func() { close(loaderReady) },
		})
	}()
	stop := func(err error) error {
		stopLoader()
		if lerr := <-loaderDone; lerr != nil {
			err = errors.Join(err, fmt.Errorf("loader: %w", lerr))
		}
		return err
	}
	select {
	case <-loaderReady:
	case err := <-loaderDone:
		return fmt.Errorf("loader: %w", err)
	case <-ctx.Done():
		return stop(nil)
	}
	loaderAddr := loaderLis.Addr().String()
	if err := loadModels(ctx, loaderAddr, load); err != nil {
		if ctx.Err() != nil {
			err = nil // interrupted while loading: a normal stop
		}
		return stop(err)
	}

	cfg.Logger, cfg.Loader = log.With("service", "inference"), loaderAddr
	cfg.Ready = func() {
		fmt.Fprintf(os.Stderr, "serving %s on %s (loader on %s, packed files in %s); try:\n"+
			"  grpcurl -plaintext -d '{\"model_id\":\"%s\",\"text\":\"Once upon a time\",\"max_tokens\":32,\"sampling\":{\"temperature\":0}}' %s corelm.v1.InferenceService/GenerateStream\n",
			strings.Join(load.ids(), ", "), lis.Addr(), loaderAddr, shm, load[0].id, lis.Addr())
	}
	return stop(inference.Serve(ctx, lis, cfg))
}

// modelToLoad is one --model flag: a model id and its path relative to the
// source directory.
type modelToLoad struct{ id, path string }

// modelFlags collects --model ID=PATH.
type modelFlags []modelToLoad

func (m *modelFlags) String() string { return strings.Join(m.ids(), ",") }

func (m *modelFlags) Set(s string) error {
	id, path, ok := strings.Cut(s, "=")
	if !ok || path == "" {
		return fmt.Errorf("%q: want ID=PATH", s)
	}
	if err := corelmv1.ValidateModelID(id); err != nil {
		return err
	}
	*m = append(*m, modelToLoad{id, path})
	return nil
}

func (m modelFlags) ids() []string {
	ids := make([]string, len(m))
	for i, x := range m {
		ids[i] = x.id
	}
	return ids
}

// serveAllSourceDir returns the loader's source directory: dir, or a
// temporary one holding the embedded model, removed by clean.
func serveAllSourceDir(dir string) (path string, clean func(), err error) {
	if dir != "" {
		return dir, func() {}, nil
	}
	if dir, err = os.MkdirTemp("", "corelm-src-"); err != nil {
		return "", nil, err
	}
	clean = func() { os.RemoveAll(dir) }
	if err := os.WriteFile(filepath.Join(dir, storiesID+".gguf"), models.Stories, 0o444); err != nil {
		clean()
		return "", nil, err
	}
	return dir, clean, nil
}

// serveAllShmDir returns the directory packed files are published in: dir,
// or a temporary one removed by clean — in /dev/shm when it is writable, so
// the weights live in shared memory as in a real deployment.
func serveAllShmDir(dir string) (path string, clean func(), err error) {
	if dir != "" {
		return dir, func() {}, nil
	}
	if dir, err = os.MkdirTemp("/dev/shm", "corelm-"); err != nil {
		if dir, err = os.MkdirTemp("", "corelm-shm-"); err != nil {
			return "", nil, err
		}
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// serveAllModels lists what the loader is asked to publish: the demo model
// when the source directory has it (the temporary one always does), then
// the --model flags; a flag may take over the demo model's id. Paths
// become relative to the source directory, which the loader requires.
func serveAllModels(src string, extra modelFlags) (modelFlags, error) {
	var out modelFlags
	if _, err := os.Stat(filepath.Join(src, storiesID+".gguf")); err == nil && !slices.Contains(extra.ids(), storiesID) {
		out = append(out, modelToLoad{storiesID, storiesID + ".gguf"})
	}
	absSrc, err := filepath.Abs(src)
	if err != nil {
		return nil, err
	}
	for _, m := range extra {
		if filepath.IsAbs(m.path) {
			rel, err := filepath.Rel(absSrc, m.path)
			if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				return nil, usagef("--model %s=%s: the file must be inside --source-dir %s", m.id, m.path, src)
			}
			m.path = rel
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, usagef("nothing to serve: %s has no %s.gguf; give --model ID=PATH", src, storiesID)
	}
	return out, nil
}

// loadModels asks the loader at addr to publish each model and waits until
// it has.
func loadModels(ctx context.Context, addr string, load modelFlags) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	client := corelmv1.NewLoaderServiceClient(cc)
	for _, m := range load {
		stream, err := client.LoadModel(ctx, &corelmv1.LoadModelRequest{ModelId: m.id, Path: m.path})
		if err != nil {
			return fmt.Errorf("load %s: %w", m.id, err)
		}
		var last *corelmv1.LoadModelResponse
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("load %s from %s: %w", m.id, m.path, err)
			}
			last = resp
		}
		if last.GetStage() != corelmv1.LoadStage_LOAD_STAGE_READY {
			return fmt.Errorf("load %s from %s: the loader ended at stage %v", m.id, m.path, last.GetStage())
		}
	}
	return nil
}
