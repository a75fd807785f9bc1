// Package kvcache stores the keys and values of a sequence's past positions,
// per layer, in f16 (default) or q8_0, and computes attention over them.
// An f32 cache exists for comparisons with llama.cpp run with an F32 cache.
//
// q8_0 stores 32 values in 34 bytes (32 int8 and an f16 scale), so its
// cache is 34/64 = 53% of f16's: about half, the scales being the rest.
//
// Sliding-window layers keep a ring of window+chunk slots so their memory
// stops growing at the window. A forward step stores all its positions
// before attending, so the step's first token must still find its window
// after the step's last one is written: a step may add at most Chunk
// positions (CheckStep), which is the slack the ring was given.
package kvcache

import (
	"errors"
	"fmt"
	"iter"
	"math"

	"github.com/corelm/corelm/pkg/kernels"
)

// Type is the element format of the cache.
type Type int

const (
	F16  Type = iota // 2 bytes per element; the default, like llama.cpp
	Q8_0             // 34 bytes per 32 elements: 53% of f16's memory
	F32              // 4 bytes per element: exact, for reference comparisons
)

var typeNames = [...]string{F16: "f16", Q8_0: "q8_0", F32: "f32"}

func (t Type) String() string {
	if t >= 0 && int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("kvcache.Type(%d)", int(t))
}

// ParseType maps "f16" / "q8_0" / "f32" to a Type.
func ParseType(s string) (Type, error) {
	switch s {
	case "f16", "F16", "":
		return F16, nil
	case "q8_0", "Q8_0", "q8":
		return Q8_0, nil
	case "f32", "F32":
		return F32, nil
	}
	return 0, fmt.Errorf("unknown KV cache type %q (want f16, q8_0 or f32)", s)
}

func (t Type) dtype() kernels.DType {
	switch t {
	case Q8_0:
		return kernels.Q8_0
	case F32:
		return kernels.F32
	}
	return kernels.F16
}

// ErrContextFull is returned when a sequence would grow past its context.
var ErrContextFull = errors.New("context window full")

// ErrStepTooLarge is returned when one step would add more positions to a
// sequence than the slack its ring buffers were sized for (Geometry.Chunk).
var ErrStepTooLarge = errors.New("step larger than the KV cache's chunk")

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

// Bytes is the memory held by the cache, as its geometry computes it.
func (c *Cache) Bytes() int64 { return c.g.Bytes() }

// Allocated is the size of the buffers the cache really holds; it equals
// Bytes, and tests check that it does.
func (c *Cache) Allocated() int64 {
	var n int64
	for l := range c.layers {
		n += int64(cap(c.layers[l].k) + cap(c.layers[l].v))
	}
	return n
}

// CheckStep returns ErrStepTooLarge when adding n positions in one step
// would make a ring-buffer layer overwrite positions that the step's first
// token still attends to: a ring keeps window+Chunk slots, so a step may add
// at most Chunk positions.
func (c *Cache) CheckStep(n int) error {
	for l := range c.layers {
		lc := &c.layers[l]
		if lc.slots < c.g.Context && n > lc.slots-lc.window {
			return fmt.Errorf("%w: %d positions in one step, layer %d keeps %d slots for a window of %d (chunk %d)",
				ErrStepTooLarge, n, l, lc.slots, lc.window, c.g.Chunk)
		}
	}
	return nil
}

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
	// With soft-capping, fold 1/Softcap into the scale and take tanh, as
	// ggml's flash attention does: Softcap·tanh(q·k·(Scale/Softcap)).
	scale := p.Scale
	if p.Softcap > 0 {
		scale /= p.Softcap
	}
	if c.dt == kernels.F16 {
		for i, run := range ringRuns(lo, n, lc.slots) {
			off := (lo+i)%lc.slots*c.row + kvh*c.head
			kernels.DotsF16(lc.k[off:off+(run-1)*c.row+c.head], c.row, q[:hd], scores[i:i+run])
		}
	} else {
		for i := range scores {
			off := ((lo+i)%lc.slots)*c.row + kvh*c.head
			scores[i] = kernels.DotF32(c.dt, lc.k[off:off+c.head], q)
		}
	}
	for i, x := range scores {
		x *= scale
		if p.Softcap > 0 {
			x = p.Softcap * float32(math.Tanh(float64(x)))
		}
		scores[i] = x
	}
	kernels.Softmax(scores)
	clear(out[:hd])
	if c.dt == kernels.F16 {
		// The common case, fused: out += w·v with v widened in place.
		for i, run := range ringRuns(lo, n, lc.slots) {
			off := (lo+i)%lc.slots*c.row + kvh*c.head
			kernels.AxpysF16(scores[i:i+run], lc.v[off:off+(run-1)*c.row+c.head], c.row, out[:hd])
		}
		return
	}
	for i, w := range scores {
		off := ((lo+i)%lc.slots)*c.row + kvh*c.head
		kernels.Dequantize(c.dt, lc.v[off:off+c.head], vrow)
		for j, x := range vrow {
			out[j] += w * x
		}
	}
}

// ringRuns yields the positions lo..lo+n-1 of a ring of slots as contiguous
// runs (at most two): the index i of a run's first position, relative to lo,
// and its length.
func ringRuns(lo, n, slots int) iter.Seq2[int, int] {
	return func(yield func(i, run int) bool) {
		for i := 0; i < n; {
			run := min(n-i, slots-(lo+i)%slots)
			if !yield(i, run) {
				return
			}
			i += run
		}
	}
}
