// Package server is corelm's loader: the corelm.v1.LoaderService that
// validates GGUF model files from a source directory, converts them to the
// packed layout and publishes them in a shared-memory directory for
// inference processes. The loader binary (services/loader) and
// `corelm serve-all` run it.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/internal/telemetry"
)

// Options configure a Server.
type Options struct {
	SourceDir string // GGUF files clients name are read from here only ("": none)
	ShmDir    string // packed files are published here
	// Budget is the bytes of packed files the directory may hold,
	// superseded generations still mapped included [DefaultBudget]
	// (budget.go).
	Budget int64
	// DrainTimeout bounds how long a load waits for superseded
	// generations to drain when the budget cannot hold it beside them
	// [DefaultDrainTimeout].
	DrainTimeout time.Duration
	Logger       *slog.Logger
	// Models are loaded at start and reloaded when their file changes,
	// checked every Watch (0: never); their paths are trusted
	// (startup.go).
	Models []Model
	Watch  time.Duration
	// Telemetry makes the load spans and metrics [telemetry.Nop(): none].
	Telemetry *telemetry.Telemetry

	// Test seams.
	writer        func(*os.File) io.WriterAt // what the packed file is written through
	afterValidate func(modelID string)
	drainWait     func(modelID string) // a load starts waiting for superseded generations to drain
}

// Server is the loader: it owns the shared-memory directory.
type Server struct {
	corelmv1.UnimplementedLoaderServiceServer

	opts   Options
	log    *slog.Logger
	srcDir string // absolute, symlinks resolved
	srcFD  int    // O_PATH descriptor of srcDir, for openat2
	shmDir string
	lock   *os.File // flock on the shm dir: one loader per directory

	// base is cancelled at shutdown: it stops loads and watchers.
	base     context.Context
	shutdown context.CancelFunc
	ready    chan struct{}  // closed when Start is done
	running  sync.WaitGroup // load goroutines

	mu        sync.Mutex
	published map[string]*published // by model id
	loads     map[string]*load      // in flight, by model id
	gens      map[string]uint64     // last generation handed out, by model id
	reserved  int64                 // bytes promised to loads in flight
	drains    drains                // superseded generations still mapped (budget.go)
	budgetHow string                // where opts.Budget comes from, for errors and the log
	hugeMount bool                  // shmDir's tmpfs gives huge pages (checkPages)
	watchers  map[*watcher]struct{}
}

// published is a model's current file.
type published struct {
	pb     *corelmv1.PublishedModel
	source sourceID
}

// sourceID identifies the version of a source file a model was packed from.
type sourceID struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

// New prepares the directories and takes the shared-memory directory's
// lock; Start then removes leftovers of earlier runs and re-announces the
// packed files already published.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: opts.Logger, srcFD: -1, ready: make(chan struct{}),
		published: map[string]*published{}, loads: map[string]*load{}, gens: map[string]uint64{}, watchers: map[*watcher]struct{}{}}
	s.base, s.shutdown = context.WithCancel(context.Background())
	if opts.ShmDir == "" || opts.SourceDir == "" && len(opts.Models) == 0 {
		return nil, errors.New("loader: a shared-memory directory is required, and a source directory or models named at start")
	}
	var err error
	if opts.SourceDir != "" {
		if s.srcDir, err = filepath.Abs(opts.SourceDir); err != nil {
			return nil, err
		}
		if s.srcDir, err = filepath.EvalSymlinks(s.srcDir); err != nil {
			return nil, fmt.Errorf("loader: source directory: %w", err)
		}
		if s.srcFD, err = unix.Open(s.srcDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			return nil, fmt.Errorf("loader: source directory %s: %w", s.srcDir, err)
		}
	}
	if err := os.MkdirAll(opts.ShmDir, 0o755); err != nil {
		s.Close()
		return nil, fmt.Errorf("loader: shared-memory directory: %w", err)
	}
	if s.shmDir, err = filepath.Abs(opts.ShmDir); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.resolveBudget(); err != nil {
		s.Close()
		return nil, err
	}
	if s.lock, err = os.OpenFile(filepath.Join(s.shmDir, lockName), os.O_CREATE|os.O_RDWR, 0o644); err != nil {
		s.Close()
		return nil, err
	}
	if err := unix.Flock(int(s.lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		s.Close()
		return nil, fmt.Errorf("loader: %s is in use by another loader: %w", s.shmDir, err)
	}
	s.checkPages()
	return s, nil
}

// Start re-announces what earlier runs published; calls wait until it is
// done. Then the models named at start load in the background.
func (s *Server) Start() error {
	s.mu.Lock()
	err := s.recover()
	s.mu.Unlock()
	if err == nil {
		close(s.ready)
		if len(s.opts.Models) > 0 {
			s.running.Add(1)
			go s.loadNamedModels()
		}
	}
	return err
}

// waitReady blocks a call until Start has finished.
func (s *Server) waitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.base.Done():
		return ErrStopping
	}
}

// Stop cancels loads in flight and ends watch streams, so a graceful stop
// of the gRPC server does not wait for them.
func (s *Server) Stop() { s.shutdown() }

// Close stops loads in flight, waits for them to clean up and releases the
// directories. Published files stay.
func (s *Server) Close() error {
	s.shutdown()
	s.running.Wait()
	if s.srcFD >= 0 {
		unix.Close(s.srcFD)
		s.srcFD = -1
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
	}
	return nil
}

// LoadModel implements corelmv1.LoaderServiceServer.
func (s *Server) LoadModel(req *corelmv1.LoadModelRequest, stream corelmv1.LoaderService_LoadModelServer) error {
	ctx := stream.Context()
	if err := s.waitReady(ctx); err != nil {
		return toStatus(err)
	}
	caller := trace.SpanFromContext(ctx)
	l, reused, err := s.startLoadFrom(caller.SpanContext(), req)
	if err != nil {
		return toStatus(err)
	}
	if l != nil && l.trace.TraceID() != caller.SpanContext().TraceID() && l.trace.IsValid() {
		// Joined a load another call started: its spans are in that trace.
		caller.AddLink(trace.Link{SpanContext: l.trace})
	}
	if reused != nil {
		return toStatus(stream.Send(&corelmv1.LoadModelResponse{Stage: corelmv1.LoadStage_LOAD_STAGE_READY, Model: reused, Reused: true}))
	}
	defer s.leave(l)
	sent, last := 0, (*corelmv1.LoadModelResponse)(nil)
	for {
		changed, err := l.sendNew(stream.Send, &sent, &last)
		if err != nil {
			return toStatus(err)
		}
		select {
		case <-changed:
		case <-l.done:
			if _, err := l.sendNew(stream.Send, &sent, &last); err != nil {
				return toStatus(err)
			}
			if l.err != nil {
				return toStatus(l.err)
			}
			return toStatus(stream.Send(&corelmv1.LoadModelResponse{Stage: corelmv1.LoadStage_LOAD_STAGE_READY, Model: l.result,
				BytesDone: l.result.GetSizeBytes(), BytesTotal: l.result.GetSizeBytes()}))
		case <-ctx.Done():
			return toStatus(ctx.Err())
		}
	}
}

// corelm's attributes on the loader's spans.
const (
	keyModel      = attribute.Key("corelm.model")
	keyPath       = attribute.Key("corelm.path")
	keyGeneration = attribute.Key("corelm.generation")
	keyBytes      = attribute.Key("corelm.bytes")
	keyDirect     = attribute.Key("corelm.direct_read")     // the source was cold: read with O_DIRECT
	keyHugeShare  = attribute.Key("corelm.huge_page_share") // of the packed file, read back: 0..1
)

// telemetry is the server's Telemetry, a no-op one when it has none.
func (s *Server) telemetry() *telemetry.Telemetry { return s.opts.Telemetry.OrNop() }

func (s *Server) tracer() trace.Tracer { return s.telemetry().Tracer(telemetry.ScopeName) }

// UnloadModel implements corelmv1.LoaderServiceServer.
func (s *Server) UnloadModel(ctx context.Context, req *corelmv1.UnloadModelRequest) (*corelmv1.UnloadModelResponse, error) {
	if err := s.waitReady(ctx); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	p, ok := s.published[req.GetModelId()]
	if !ok {
		s.mu.Unlock()
		return nil, toStatus(fmt.Errorf("%w: model %q is not published", ErrNotFound, req.GetModelId()))
	}
	delete(s.published, req.GetModelId())
	s.broadcastLocked(&corelmv1.WatchModelsResponse{Kind: corelmv1.ModelEventKind_MODEL_EVENT_KIND_UNLOADED, Model: p.pb})
	s.retireLocked(p.pb)
	s.mu.Unlock()
	s.log.Info("unloaded", "model", req.GetModelId(), "generation", p.pb.GetGeneration())
	return &corelmv1.UnloadModelResponse{Generation: p.pb.GetGeneration()}, nil
}

// ListModels implements corelmv1.LoaderServiceServer.
func (s *Server) ListModels(ctx context.Context, req *corelmv1.LoaderServiceListModelsRequest) (*corelmv1.LoaderServiceListModelsResponse, error) {
	if err := s.waitReady(ctx); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &corelmv1.LoaderServiceListModelsResponse{Models: s.snapshotLocked()}, nil
}

func (s *Server) snapshotLocked() []*corelmv1.PublishedModel {
	out := make([]*corelmv1.PublishedModel, 0, len(s.published))
	for _, p := range s.published {
		out = append(out, p.pb)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetModelId() < out[j].GetModelId() })
	return out
}

// watcher is one WatchModels stream's queue of events.
type watcher struct {
	events  chan *corelmv1.WatchModelsResponse
	overrun bool // set (under Server.mu) when events was full
}

// watchQueue is how many events a slow watcher may fall behind by before it
// is dropped (it can watch again and get a fresh snapshot).
const watchQueue = 256

// WatchModels implements corelmv1.LoaderServiceServer.
func (s *Server) WatchModels(req *corelmv1.WatchModelsRequest, stream corelmv1.LoaderService_WatchModelsServer) error {
	if err := s.waitReady(stream.Context()); err != nil {
		return toStatus(err)
	}
	w := &watcher{events: make(chan *corelmv1.WatchModelsResponse, watchQueue)}
	s.mu.Lock()
	snapshot := s.snapshotLocked()
	s.watchers[w] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watchers, w)
		s.mu.Unlock()
	}()
	for _, m := range snapshot {
		if err := stream.Send(&corelmv1.WatchModelsResponse{Kind: corelmv1.ModelEventKind_MODEL_EVENT_KIND_PUBLISHED, Model: m}); err != nil {
			return toStatus(err)
		}
	}
	if err := stream.Send(&corelmv1.WatchModelsResponse{Kind: corelmv1.ModelEventKind_MODEL_EVENT_KIND_SYNCED}); err != nil {
		return toStatus(err)
	}
	for {
		select {
		case ev, ok := <-w.events:
			if !ok {
				return toStatus(fmt.Errorf("%w: watcher fell more than %d events behind; watch again", ErrNoSpace, watchQueue))
			}
			if err := stream.Send(ev); err != nil {
				return toStatus(err)
			}
		case <-stream.Context().Done():
			return toStatus(stream.Context().Err())
		case <-s.base.Done():
			return toStatus(ErrStopping)
		}
	}
}

// broadcastLocked queues ev for every watcher; s.mu is held. Events queued
// before a watcher's snapshot was taken are not sent to it twice because
// the watcher registers under the same lock as the snapshot.
func (s *Server) broadcastLocked(ev *corelmv1.WatchModelsResponse) {
	for w := range s.watchers {
		if w.overrun {
			continue
		}
		select {
		case w.events <- ev:
		default:
			w.overrun = true
			close(w.events)
		}
	}
}
