// Package server is corelm's inference service: the gRPC handlers of
// corelm.v1.InferenceService, the models it serves (published generations
// from the loader, or files given directly) with one continuous-batching
// scheduler each, and the process around them (Serve: the gRPC server
// that services/internal/grpcserver builds, the loader watch, graceful
// shutdown; BindFlags: the knobs' flags). The inference binary and `corelm
// serve-all` both run it through Serve.
package server

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/health"

	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/sched"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// Options configure a Server. Zero values take the defaults in brackets.
type Options struct {
	Threads  int          // kernel threads per model [the CPUs the process may use]
	MaxSeqs  int          // sequences per model stepped together [8]
	MaxQueue int          // requests waiting for a slot, per model [2×MaxSeqs]
	Context  int          // context per sequence [the largest that fits, up to model.DefaultContextCap]
	KVType   kvcache.Type // KV cache element type [f16]
	Budget   int64        // KV cache cap per model [0: what MemoryBudget leaves; memory.go]
	// MemoryBudget is what the whole process may use for every model's
	// weights, KV cache and compute buffers [0: runtime.DefaultMemoryBudget;
	// < 0: no limit].
	MemoryBudget int64
	// StepTokens caps the tokens of one forward step [sched.DefaultStepTokens].
	StepTokens int
	// KVCacheDir, when set, keeps each model's prefix cache across
	// restarts: written there when a model generation stops, read back
	// when one of the same weights and KV type starts ("": in memory only).
	KVCacheDir string
	// PackCache is where a --model-file GGUF is packed for this host's
	// kernels and kept for later starts ["auto": runtime.DefaultPackCache;
	// "" or "off": served as it is].
	PackCache string
	// Drain is how long a superseded generation may finish its requests
	// before they are cancelled [5m].
	Drain time.Duration
	// MaxPromptBytes bounds a prompt's bytes before it is tokenized
	// [DefaultMaxPromptBytes]; MaxStreamGenerations the generations
	// running at once on one Generate stream [DefaultMaxStreamGenerations].
	MaxPromptBytes       int
	MaxStreamGenerations int
	Logger               *slog.Logger
	// Tracing: telemetry and trace levels [none] (tracing.go).
	Tracing Tracing
}

// Server implements corelm.v1.InferenceService.
type Server struct {
	corelmv1.UnimplementedInferenceServiceServer
	opts   Options
	log    *slog.Logger
	models *registry
	health *health.Server // may be nil (tests); set by Serve
	// ondemand loads the models requests ask for; set while WatchLoader
	// runs (ondemand.go).
	ondemand atomic.Pointer[onDemand]
	ready    readiness // health follows the models served (ready.go)

	stopOnce sync.Once
	stop     chan struct{} // closed when shutdown begins: no new generations
	drained  chan struct{} // closed when the schedulers have drained
}

// New returns a server with no models; add them with ServeFile or
// WatchLoader.
func New(opts Options) *Server {
	if opts.Drain <= 0 {
		opts.Drain = 5 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxPromptBytes <= 0 {
		opts.MaxPromptBytes = DefaultMaxPromptBytes
	}
	if opts.MaxStreamGenerations <= 0 {
		opts.MaxStreamGenerations = DefaultMaxStreamGenerations
	}
	how := resolveMemoryBudget(&opts)
	opts.Logger.Info("memory budget", "bytes", opts.MemoryBudget, "budget", runtime.FormatBytes(opts.MemoryBudget), "from", how)
	return &Server{
		opts:    opts,
		log:     opts.Logger,
		models:  newRegistry(opts.Drain),
		stop:    make(chan struct{}),
		drained: make(chan struct{}),
	}
}

// packCache is the pack cache dir names (see Options.PackCache).
func packCache(dir string) *runtime.PackCache {
	switch dir {
	case "auto":
		return runtime.DefaultPackCache()
	case "", "off":
		return nil
	}
	return runtime.NewPackCache(dir)
}

func (s *Server) modelConfig() modelConfig {
	o := s.opts
	return modelConfig{threads: o.Threads, tel: s.telemetry(), sched: sched.Config{MaxSeqs: o.MaxSeqs, MaxQueue: o.MaxQueue,
		Context: o.Context, KVType: o.KVType, KVBudget: o.Budget, StepTokens: o.StepTokens},
		memory: func(id string) (int64, int64) { return s.models.memoryFor(id, o.MemoryBudget) }, log: s.log,
		cacheDir: o.KVCacheDir, packCache: packCache(o.PackCache)}
}

// ServeFile serves a model file directly, without a loader: a GGUF file, a
// packed file, or EmbeddedModel.
func (s *Server) ServeFile(path, id string) error {
	if id == "" {
		id = DefaultModelID(path)
	}
	if err := corelmv1.ValidateModelID(id); err != nil {
		return err
	}
	e, err := openFile(path, id, s.modelConfig())
	if err != nil {
		return err
	}
	if !s.models.publish(e) {
		e.close()
		return ErrStopping
	}
	s.log.Info("serving model", "model_id", id, "file", path, "generation", e.gen)
	return nil
}

func (s *Server) stopping() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// Shutdown stops taking generations and waits up to ctx for the running
// ones; the rest are cancelled. Open Generate streams then end with
// Unavailable, so a gRPC GracefulStop can complete.
func (s *Server) Shutdown(ctx context.Context) {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.models.shutdown(ctx)
		close(s.drained)
	})
}

// Tokenize converts text to token ids.
func (s *Server) Tokenize(ctx context.Context, req *corelmv1.TokenizeRequest) (*corelmv1.TokenizeResponse, error) {
	e, err := s.models.acquire(req.GetModelId())
	if err != nil {
		return nil, toError(err)
	}
	defer s.models.release(e)
	ids, err := encode(e, req.GetText(), tokenizer.EncodeOptions{AddBOS: bosMode(req.AddBos), ParseSpecial: req.GetParseSpecial()})
	if err != nil {
		return nil, toError(err)
	}
	resp := &corelmv1.TokenizeResponse{Ids: ids, Pieces: make([][]byte, len(ids))}
	for i, id := range ids {
		resp.Pieces[i] = e.tok.TokenBytes(id)
	}
	return resp, nil
}

// Detokenize converts token ids to text.
func (s *Server) Detokenize(ctx context.Context, req *corelmv1.DetokenizeRequest) (*corelmv1.DetokenizeResponse, error) {
	e, err := s.models.acquire(req.GetModelId())
	if err != nil {
		return nil, toError(err)
	}
	defer s.models.release(e)
	raw, err := e.tok.Decode(req.GetIds())
	if err != nil {
		return nil, toError(badRequestf("%v", err))
	}
	return &corelmv1.DetokenizeResponse{Text: strings.ToValidUTF8(raw, "\uFFFD"), Raw: []byte(raw)}, nil
}

// ListModels lists the models being served.
func (s *Server) ListModels(ctx context.Context, req *corelmv1.ListModelsRequest) (*corelmv1.ListModelsResponse, error) {
	current, _ := s.models.entries()
	resp := &corelmv1.ListModelsResponse{}
	for _, e := range current {
		resp.Models = append(resp.Models, e.info)
	}
	resp.Models = append(resp.Models, s.models.loadingInfos()...)
	return resp, nil
}

// GetModel describes one model.
func (s *Server) GetModel(ctx context.Context, req *corelmv1.GetModelRequest) (*corelmv1.GetModelResponse, error) {
	if err := corelmv1.ValidateModelID(req.GetModelId()); err != nil {
		return nil, toError(badRequestf("%v", err))
	}
	e, err := s.models.acquire(req.GetModelId())
	if errors.Is(err, ErrModelLoading) {
		return &corelmv1.GetModelResponse{Model: &corelmv1.ModelInfo{ModelId: req.GetModelId(), State: corelmv1.ModelState_MODEL_STATE_LOADING}}, nil
	}
	if err != nil {
		return nil, toError(err)
	}
	defer s.models.release(e)
	return &corelmv1.GetModelResponse{Model: e.info}, nil
}

// GetStatus reports sequences and KV memory, per model and in total
// (superseded generations still draining count in the totals).
func (s *Server) GetStatus(ctx context.Context, req *corelmv1.GetStatusRequest) (*corelmv1.GetStatusResponse, error) {
	current, retiring := s.models.entries()
	resp := &corelmv1.GetStatusResponse{}
	for _, e := range current {
		st := e.sched.Stats()
		resp.Models = append(resp.Models, &corelmv1.ModelStatus{
			ModelId: e.id, Generation: e.gen, ActiveSequences: int32(st.Active),
			QueuedRequests: int32(st.Queued), KvBytesInUse: st.KVBytesInUse, KvBytesBudget: st.KVBudget,
			CacheBytes: st.CacheBytes, CacheBytesBudget: st.CacheBudget, CacheHits: st.CacheHits, CacheMisses: st.CacheMisses,
			CachedTokens: st.CachedTokens, CacheEvictions: st.CacheEvictions, Preempted: st.Preempted,
		})
		resp.KvBytesBudget += st.KVBudget
	}
	for _, e := range append(current, retiring...) {
		st := e.sched.Stats()
		resp.ActiveSequences += int32(st.Active)
		resp.QueuedRequests += int32(st.Queued)
		resp.KvBytesInUse += st.KVBytesInUse
	}
	return resp, nil
}
