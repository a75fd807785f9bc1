package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/corelm/corelm/internal/envflag"
	"github.com/corelm/corelm/internal/tlsconfig"
	"github.com/corelm/corelm/models"
	gateway "github.com/corelm/corelm/services/gateway/server"
	inference "github.com/corelm/corelm/services/inference/server"
	loader "github.com/corelm/corelm/services/loader/server"
)

// storiesID is the id the embedded demo model is published under.
const storiesID = "stories"

// serveAllMetrics is serve-all's --metrics-listen default: the quickstart
// has its /metrics on (the service binaries' is off unless set), on the
// port of the OpenTelemetry Prometheus exporter's convention.
const serveAllMetrics = "127.0.0.1:9464"

// runServeAll is the one-machine quickstart: the loader and the inference
// service in this process, talking over loopback gRPC exactly as the two
// binaries do. The loader validates and packs the models into a
// shared-memory directory; the inference service maps what it publishes.
// The service's flags are the inference binary's, and like them each has
// an environment variable, CORELM_<FLAG> with dashes as underscores. The
// HTTP gateway (OpenAI API, gRPC-Web, Connect) runs in the process too, on
// --http-listen, checking --auth-token itself.
func runServeAll(ctx context.Context, args []string) error {
	fs := envflag.New("corelm serve-all", "CORELM_", os.Getenv)
	var (
		cfg                       inference.Config
		listen, sourceDir, shmDir string
		httpListen                string
		httpCORS                  []string
		named                     []string
		watch                     time.Duration
	)
	fs.String(&listen, "listen", "127.0.0.1:50051", "the inference service's gRPC listen address")
	fs.String(&httpListen, "http-listen", "127.0.0.1:8080", `the HTTP gateway's listen address: OpenAI API, gRPC-Web and Connect ("": no gateway)`)
	fs.List(&httpCORS, "http-cors-origins", "browser origins allowed to call the HTTP gateway, ORIGIN,... (*: any; default: none)")
	fs.String(&sourceDir, "source-dir", "", "directory of GGUF files clients may ask the loader for (its "+storiesID+".gguf is served as "+storiesID+")")
	fs.String(&shmDir, "shm-dir", "", "directory packed files are published in (default: a temporary one in /dev/shm, else in the system's temporary directory)")
	fs.List(&named, "model", "serve model ID from the GGUF file PATH (absolute or relative to the working directory), reloaded when it changes: "+
		"ID=PATH, repeatable or comma-separated (default: the embedded "+storiesID+" model)")
	fs.Duration(&watch, "watch-interval", 10*time.Second, "how often the files of --model are checked for changes (0: never)")
	cfg.BindFlags(fs)
	tf := inference.BindTelemetryFlags(fs, serveAllMetrics)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err // -h, --version
		}
		return usagef("%v", err)
	}
	if err := cfg.LoadTLS(); err != nil {
		return usagef("%v", err)
	}
	extra, err := loader.ParseModels(named)
	if err != nil {
		return usagef("--model: %v", err)
	}
	demo, cleanDemo, err := serveAllDemo(sourceDir, extra)
	if err != nil {
		return err
	}
	defer cleanDemo()
	log, err := tf.Logger(os.Stderr)
	if err != nil {
		return usagef("%v", err)
	}

	// Listen first, so a taken port fails before any model is packed.
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	defer lis.Close()
	var httpLis net.Listener
	if httpListen != "" {
		if httpLis, err = net.Listen("tcp", httpListen); err != nil {
			return err
		}
		defer httpLis.Close()
		if cfg.TLS != nil { // --tls-cert: every listener serves TLS
			httpLis = tls.NewListener(httpLis, cfg.TLS)
		}
	}
	// Two services, two service names in the traces, one /metrics: the
	// loader records through the inference side's meter provider.
	inferenceLog, loaderLog := log.With("service", "inference"), log.With("service", "loader")
	tel, err := tf.Setup(ctx, "corelm-inference", os.Getenv, inferenceLog, nil)
	if err != nil {
		return err
	}
	defer tel.ShutdownWithin(5 * time.Second)
	loaderTel, err := tf.Setup(ctx, "corelm-loader", os.Getenv, loaderLog, tel)
	if err != nil {
		return err
	}
	defer loaderTel.ShutdownWithin(5 * time.Second)
	gatewayLog := log.With("service", "gateway")
	gatewayTel, err := tf.Setup(ctx, "corelm-gateway", os.Getenv, gatewayLog, tel)
	if err != nil {
		return err
	}
	defer gatewayTel.ShutdownWithin(5 * time.Second)
	shm, cleanShm, err := serveAllShmDir(shmDir)
	if err != nil {
		return err
	}
	defer cleanShm()
	load := append(demo, extra...)

	// The loader outlives the inference service, so the service's watch
	// does not see it go away while it drains.
	loaderLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	// The loader listens on loopback, but any local user could reach it:
	// its calls need a token only this process knows.
	loaderToken := rand.Text()
	loaderCtx, stopLoader := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoader()
	loaderReady, loaderDone := make(chan struct{}), make(chan error, 1)
	go func() {
		loaderDone <- loader.Serve(loaderCtx, loaderLis, loader.Config{
			Options:       loader.Options{SourceDir: sourceDir, ShmDir: shm, Models: load, Watch: watch, Logger: loaderLog, Telemetry: loaderTel},
			Grace:         cfg.Grace,
			AuthToken:     loaderToken,
			Ready:         func() { close(loaderReady) },
			ServerOptions: []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(loaderTel.GRPCOptions()...))},
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
	// The loader loads the models in the background; the inference
	// service answers meanwhile, its health NOT_SERVING and generations on
	// them Unavailable until they are published and mapped.
	loaderAddr := loaderLis.Addr().String()
	cfg.Logger, cfg.Loader, cfg.RequireModels = inferenceLog, loaderAddr, loader.IDs(load)
	cfg.LoaderToken = loaderToken
	cfg.Tracing.Telemetry = tel
	grpcurlTLS, httpScheme := "-plaintext", "http"
	if cfg.TLS != nil {
		grpcurlTLS, httpScheme = "-cacert CA.pem", "https"
	}
	cfg.Ready = func() {
		fmt.Fprintf(os.Stderr, "serving %s on %s (loader on %s, packed files in %s); try:\n"+
			"  grpcurl %s -d '{\"model_id\":\"%s\",\"text\":\"Once upon a time\",\"max_tokens\":32,\"sampling\":{\"temperature\":0}}' %s corelm.v1.InferenceService/GenerateStream\n",
			strings.Join(loader.IDs(load), ", "), lis.Addr(), loaderAddr, shm, grpcurlTLS, load[0].ID, lis.Addr())
		if httpLis != nil {
			fmt.Fprintf(os.Stderr, "OpenAI API on %s://%s/v1 (gRPC-Web and Connect on the same port)\n", httpScheme, httpLis.Addr())
		}
		if addr := tel.MetricsAddr(); addr != nil {
			fmt.Fprintf(os.Stderr, "metrics on http://%s/metrics\n", addr)
		}
	}
	gatewayDone, stopGateway := make(chan error, 1), func() {}
	if httpLis != nil {
		// A client of the inference service on loopback, as the gateway
		// binary is. On SIGTERM it stops taking connections and lets its
		// requests finish while the service drains them.
		gc := gateway.Config{Inference: lis.Addr().String(), AuthToken: cfg.AuthToken, InferenceToken: cfg.AuthToken,
			MaxBody: 1 << 20, Timeout: 10 * time.Minute, CORSOrigins: httpCORS, Logger: gatewayLog, Telemetry: gatewayTel,
			DialOptions: []grpc.DialOption{tlsconfig.DialOption(tlsconfig.Self(cfg.TLS))}}
		var gatewayCtx context.Context
		gatewayCtx, stopGateway = context.WithCancel(ctx)
		defer stopGateway()
		go func() { gatewayDone <- gateway.Serve(gatewayCtx, httpLis, gc, cfg.Grace) }()
	} else {
		gatewayDone <- nil
	}
	err = inference.Serve(ctx, lis, cfg)
	stopGateway()
	if gerr := <-gatewayDone; gerr != nil {
		err = errors.Join(err, fmt.Errorf("gateway: %w", gerr))
	}
	return stop(err)
}

// serveAllDemo returns the embedded demo model as a model named at start,
// unless --model names the id: the source directory's stories.gguf when
// there is a source directory, else the embedded model written to a
// temporary file that clean removes.
func serveAllDemo(sourceDir string, named []loader.Model) (demo []loader.Model, clean func(), err error) {
	clean = func() {}
	if slices.Contains(loader.IDs(named), storiesID) {
		return nil, clean, nil
	}
	if sourceDir != "" {
		path, err := filepath.Abs(filepath.Join(sourceDir, storiesID+".gguf"))
		if err != nil {
			return nil, nil, err
		}
		if _, err := os.Stat(path); err != nil {
			if len(named) == 0 {
				return nil, nil, usagef("nothing to serve: %s has no %s.gguf; give --model ID=PATH", sourceDir, storiesID)
			}
			return nil, clean, nil
		}
		return []loader.Model{{ID: storiesID, Path: path}}, clean, nil
	}
	if len(named) > 0 {
		return nil, clean, nil
	}
	dir, err := tempDir("", "corelm-src-")
	if err != nil {
		return nil, nil, err
	}
	clean = func() { os.RemoveAll(dir) }
	path := filepath.Join(dir, storiesID+".gguf")
	if err := os.WriteFile(path, models.Stories, 0o444); err != nil {
		clean()
		return nil, nil, err
	}
	return []loader.Model{{ID: storiesID, Path: path}}, clean, nil
}

// serveAllShmDir returns the directory packed files are published in: dir,
// or a temporary one removed by clean — in /dev/shm when it is writable, so
// the weights live in shared memory as in a real deployment.
func serveAllShmDir(dir string) (path string, clean func(), err error) {
	if dir != "" {
		return dir, func() {}, nil
	}
	if dir, err = tempDir("/dev/shm", "corelm-"); err != nil {
		if dir, err = tempDir("", "corelm-shm-"); err != nil {
			return "", nil, err
		}
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// tempDir makes a temporary directory in parent ("": the system's) named
// prefix<pid>-<random>, after removing the ones of that prefix left by
// serve-all processes that no longer run: a process that is SIGKILLed
// (a test's context, the OOM killer) cannot remove its own.
func tempDir(parent, prefix string) (string, error) {
	if parent == "" {
		parent = os.TempDir()
	}
	removeStale(parent, prefix)
	return os.MkdirTemp(parent, prefix+strconv.Itoa(os.Getpid())+"-")
}

// removeStale removes parent's directories named prefix<pid>-… whose
// process is gone (kill(pid, 0) says no such process) and that no loader
// still holds (the flock on its lock file, in case the process lives in
// another pid namespace sharing the directory). Other names are left.
func removeStale(parent, prefix string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		pidText, _, found := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || !found || err != nil || pid <= 0 || pid == os.Getpid() || !e.IsDir() {
			continue
		}
		if unix.Kill(pid, 0) != unix.ESRCH {
			continue // running (or another user's)
		}
		dir := filepath.Join(parent, e.Name())
		if lockHeld(filepath.Join(dir, loader.LockName)) {
			continue
		}
		os.RemoveAll(dir)
	}
}

// lockHeld reports whether another process holds the flock on path.
func lockHeld(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == unix.EWOULDBLOCK
}
