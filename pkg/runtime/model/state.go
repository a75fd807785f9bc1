package model

import (
	"fmt"

	"github.com/corelm/corelm/pkg/kernels"

	"github.com/corelm/corelm/pkg/runtime/kvcache"
)

// StateOptions sizes a sequence's state.
type StateOptions struct {
	// Context is the context the model is served with: the most positions
	// any of its sequences may reach (0: the trained context; see
	// Config.ClampContext). What depends on the context length rather than
	// on one sequence follows it — Phi-3's choice of LongRoPE factors — as
	// llama.cpp's follows the n_ctx of its context, so a sequence's logits
	// do not depend on how long it is allowed to grow.
	Context int
	// Length is how many positions this sequence's KV cache holds, at most
	// Context (0: Context). The scheduler gives a request its prompt plus
	// max_tokens.
	Length int
	KVType kvcache.Type // f16 or q8_0
	Chunk  int          // most tokens one forward step adds for this sequence (ring slack)
	// Pool, when set, is where the sequence's KV blocks come from as it
	// grows (a scheduler's pool, shared by its sequences); without one the
	// state gets a cache of its own holding all Length positions.
	Pool *kvcache.Pool
}

// Resolve fills in the defaults of o for a model of cfg: the served context
// clamped, the length within it.
func (o StateOptions) Resolve(cfg *Config) StateOptions {
	o.Context = cfg.ClampContext(o.Context)
	if o.Length <= 0 || o.Length > o.Context {
		o.Length = o.Context
	}
	return o
}

// State is one sequence: its KV cache and how many positions it has consumed.
type State struct {
	Cache *kvcache.Cache
	Pos   int
	// Context is the context the model is served with
	// (StateOptions.Context, resolved); the cache may hold fewer positions.
	Context int
}

// NewState allocates the state of a sequence of a model of cfg with opts;
// windows gives per-layer sliding windows (nil: all global).
func NewState(cfg *Config, opts StateOptions, windows []int) (*State, error) {
	opts = opts.Resolve(cfg)
	g := CacheGeometry(cfg, opts, windows)
	var c *kvcache.Cache
	var err error
	if opts.Pool != nil {
		c, err = kvcache.NewIn(opts.Pool, g)
	} else {
		c, err = kvcache.New(g)
	}
	if err != nil {
		return nil, err
	}
	return &State{Cache: c, Context: opts.Context}, nil
}

// CheckRoom returns an error when n more tokens would not fit the
// sequence's context, or are more than its ring buffers can take in one step.
func (s *State) CheckRoom(n int) error {
	if limit := s.Cache.Geometry().Context; s.Pos+n > limit {
		return fmt.Errorf("%w: %d positions used + %d new > context %d", kvcache.ErrContextFull, s.Pos, n, limit)
	}
	return s.Cache.CheckStep(n)
}

// Env is what the runtime lends a model: the thread pool its kernels split
// rows over.
type Env struct {
	Pool *kernels.Pool
}

// CacheGeometry is the KV cache geometry of a sequence of cfg with opts;
// windows gives per-layer sliding windows (nil: all global). Its size,
// Bytes, is what Model.KVBytes reports.
func CacheGeometry(cfg *Config, opts StateOptions, windows []int) kvcache.Geometry {
	opts = opts.Resolve(cfg)
	return kvcache.Geometry{
		Type:    opts.KVType,
		Layers:  cfg.Layers,
		KVHeads: cfg.KVHeads,
		HeadDim: cfg.HeadDim,
		Context: opts.Length,
		Window:  windows,
		Chunk:   opts.Chunk,
	}
}

// KVBytes is the size of the cache NewState(cfg, opts, windows) allocates:
// what an architecture's Model.KVBytes returns.
func KVBytes(cfg *Config, opts StateOptions, windows []int) int64 {
	g := CacheGeometry(cfg, opts, windows)
	return g.Bytes()
}
