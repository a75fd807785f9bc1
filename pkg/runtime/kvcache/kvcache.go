// Package kvcache stores the keys and values of a sequence's past positions,
// per layer, in f16 (default) or q8_0, and computes attention over them.
// Sliding-window layers keep a ring of window+chunk slots so their memory
// stops growing at the window.
package kvcache

import (
	"errors"
	"fmt"
	"math"

	"github.com/corelm/corelm/pkg/kernels"
)

// Type is the element format of the cache.
type Type int

const (
	F16  Type = iota // 2 bytes per element; the default, like llama.cpp
	Q8_0             // 34 bytes per 32 elements: half of f16's memory
)

func (t Type) String() string {
	switch t {
	case F16:
		return "f16"
	case Q8_0:
		return "q8_0"
	}
	return fmt.Sprintf("kvcache.Type(%d)", int(t))
}

// ParseType maps "f16" / "q8_0" to a Type.
func ParseType(s string) (Type, error) {
	switch s {
	case "f16", "F16", "":
		return F16, nil
	case "q8_0", "Q8_0", "q8":
		return Q8_0, nil
	}
	return 0, fmt.Errorf("unknown KV cache type %q (want f16 or q8_0)", s)
}

func (t Type) dtype() kernels.DType {
	if t == Q8_0 {
		return kernels.Q8_0
	}
	return kernels.F16
}

// ErrContextFull is returned when a sequence would grow past its context.
var ErrContextFull = errors.New("context window full")

// Geometry describes the cache of one sequence.
type Geometry struct {
	Type    Type
	Layers  int
	KVHeads int
	HeadDim int
	Context int   // maximum positions of the sequence
	Window  []int // per layer: sliding window in positions, 0 = global attention
	Chunk   int   // most positions one step may add (slack of ring buffers)
}

// Validate checks that the geometry can be stored.
func (g *Geometry) Validate() error {
	if g.Context <= 0 || g.Layers <= 0 || g.KVHeads <= 0 || g.HeadDim <= 0 {
		return fmt.Errorf("kvcache: invalid geometry %+v", *g)
	}
	if g.Type == Q8_0 && g.HeadDim%32 != 0 {
		return fmt.Errorf("kvcache: a q8_0 cache needs a head width that is a multiple of 32, this model's is %d: use f16", g.HeadDim)
	}
	if g.Window != nil && len(g.Window) != g.Layers {
		return fmt.Errorf("kvcache: %d windows for %d layers", len(g.Window), g.Layers)
	}
	return nil
}

// slots is how many positions layer l keeps.
func (g *Geometry) slots(l int) int {
	if g.Window != nil && g.Window[l] > 0 {
		chunk := g.Chunk
		if chunk <= 0 {
			chunk = g.Context
		}
		if n := g.Window[l] + chunk; n < g.Context {
			return n
		}
	}
	return g.Context
}

func (g *Geometry) headBytes() int {
	n, _ := g.Type.dtype().RowBytes(g.HeadDim)
	return n
}

// Bytes is the memory the cache of one sequence takes.
func (g *Geometry) Bytes() int64 {
	var total int64
	row := int64(g.KVHeads * g.headBytes())
	for l := 0; l < g.Layers; l++ {
		total += 2 * int64(g.slots(l)) * row
	}
	return total
}

// Cache holds one sequence's keys and values.
type Cache struct {
	g      Geometry
	dt     kernels.DType
	row    int // bytes of one position's keys (all KV heads)
	head   int // bytes of one head's keys at one position
	layers []layerCache
}

type layerCache struct {
	k, v   []byte
	slots  int
	window int
}

// New allocates a cache. Memory is committed by the OS as it is written.
func New(g Geometry) (*Cache, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	c := &Cache{g: g, dt: g.Type.dtype(), head: g.headBytes()}
	c.row = g.KVHeads * c.head
	c.layers = make([]layerCache, g.Layers)
	for l := range c.layers {
		n := g.slots(l)
		w := 0
		if g.Window != nil {
			w = g.Window[l]
		}
		c.layers[l] = layerCache{k: make([]byte, n*c.row), v: make([]byte, n*c.row), slots: n, window: w}
	}
	return c, nil
}

// Geometry returns the cache's geometry.
func (c *Cache) Geometry() Geometry { return c.g }

// Bytes is the memory held by the cache.
func (c *Cache) Bytes() int64 { return c.g.Bytes() }

// Store encodes the keys and values (all KV heads, KVHeads×HeadDim floats
// each) of position pos in layer l.
func (c *Cache) Store(l, pos int, k, v []float32) {
	lc := &c.layers[l]
	off := (pos % lc.slots) * c.row
	kernels.Quantize(c.dt, k, lc.k[off:off+c.row])
	kernels.Quantize(c.dt, v, lc.v[off:off+c.row])
}

// AttnParams configures one attention computation.
type AttnParams struct {
	Scale   float32 // multiplies q·k, usually 1/sqrt(head width)
	Softcap float32 // when > 0, scores become Softcap·tanh(score/Softcap) (Gemma-2)
}

// Scratch is per-caller working memory of Attend.
type Scratch struct {
	scores []float32
	vrow   []float32
}

// AttendHead computes causal attention for query head h (of heads) of the
// token at position pos of layer l, over positions [lo, pos] where lo is 0,
// or pos-window+1 for sliding-window layers, and writes the head's output
// (HeadDim floats). Query head h reads KV head h/(heads/KVHeads).
func (c *Cache) AttendHead(l, pos, h, heads int, q []float32, p AttnParams, out []float32, s *Scratch) {
	lc := &c.layers[l]
	hd := c.g.HeadDim
	kvh := h / (heads / c.g.KVHeads)
	lo := 0
	if lc.window > 0 && pos-lc.window+1 > 0 {
		lo = pos - lc.window + 1
	}
	if lc.slots < c.g.Context && pos-lo+1 > lc.slots {
		// Only reachable if a caller broke the Chunk contract.
		panic(fmt.Sprintf("kvcache: layer %d ring of %d slots cannot serve %d positions", l, lc.slots, pos-lo+1))
	}
	n := pos - lo + 1
	if cap(s.scores) < n {
		s.scores = make([]float32, n)
	}
	scores := s.scores[:n]
	if cap(s.vrow) < hd {
		s.vrow = make([]float32, hd)
	}
	vrow := s.vrow[:hd]
	for i := range scores {
		off := ((lo+i)%lc.slots)*c.row + kvh*c.head
		x := kernels.DotF32(c.dt, lc.k[off:off+c.head], q) * p.Scale
		if p.Softcap > 0 {
			x = p.Softcap * float32(math.Tanh(float64(x/p.Softcap)))
		}
		scores[i] = x
	}
	kernels.Softmax(scores)
	clear(out[:hd])
	for i, w := range scores {
		off := ((lo+i)%lc.slots)*c.row + kvh*c.head
		kernels.Dequantize(c.dt, lc.v[off:off+c.head], vrow)
		for j, x := range vrow {
			out[j] += w * x
		}
	}
}
