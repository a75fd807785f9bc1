package model

import (
	"fmt"

	"github.com/corelm/corelm/pkg/kernels"

	"github.com/corelm/corelm/pkg/runtime/kvcache"
)

// StateOptions sizes a sequence's state.
type StateOptions struct {
	Context int          // positions the sequence may reach; 0 = the model's trained context
	KVType  kvcache.Type // f16 or q8_0
	Chunk   int          // most tokens one forward step adds for this sequence (ring slack)
}

// State is one sequence: its KV cache and how many positions it has consumed.
type State struct {
	Cache *kvcache.Cache
	Pos   int
}

// NewState builds a State with a cache of geometry g.
func NewState(g kvcache.Geometry) (*State, error) {
	c, err := kvcache.New(g)
	if err != nil {
		return nil, err
	}
	return &State{Cache: c}, nil
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
// windows gives per-layer sliding windows (nil: all global).
func CacheGeometry(cfg *Config, opts StateOptions, windows []int) kvcache.Geometry {
	ctx := opts.Context
	if ctx <= 0 || ctx > cfg.Context {
		ctx = cfg.Context
	}
	return kvcache.Geometry{
		Type:    opts.KVType,
		Layers:  cfg.Layers,
		KVHeads: cfg.KVHeads,
		HeadDim: cfg.HeadDim,
		Context: ctx,
		Window:  windows,
		Chunk:   opts.Chunk,
	}
}
