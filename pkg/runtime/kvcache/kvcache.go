// Package kvcache stores the keys and values of a sequence's past positions,
// per layer, in f16 (default) or q8_0, and computes attention over them.
// An f32 cache exists for comparisons with llama.cpp run with an F32 cache.
//
// q8_0 stores 32 values in 34 bytes (32 int8 and an f16 scale), so its
// cache is 34/64 = 53% of f16's: about half, the scales being the rest.
//
// Global layers live in fixed-size blocks of BlockTokens positions taken
// from a Pool (pool.go) as the sequence grows; blocks can be shared by
// sequences with a common token prefix (prefix.go). Sliding-window layers
// keep a ring of window+chunk slots per sequence so their memory stops
// growing at the window. A forward step stores all its positions
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

// DefaultBlockTokens is the positions one block holds (docs/decisions.md,
// "Paged KV": measured with BenchmarkAttendBlocks).
const DefaultBlockTokens = 64

// Geometry describes the cache of one sequence.
type Geometry struct {
	Type    Type
	Layers  int
	KVHeads int
	HeadDim int
	Context int   // maximum positions of the sequence
	Window  []int // per layer: sliding window in positions, 0 = global attention
	Chunk   int   // most positions one step may add (slack of ring buffers)
	Block   int   // positions per block of the paged layers [DefaultBlockTokens]
}

// Validate checks that the geometry can be stored.
func (g *Geometry) Validate() error {
	if g.Context <= 0 || g.Layers <= 0 || g.KVHeads <= 0 || g.HeadDim <= 0 || g.Block < 0 {
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

func (g *Geometry) block() int {
	if g.Block <= 0 {
		return DefaultBlockTokens
	}
	return g.Block
}

// ring reports whether layer l keeps a ring: a sliding window narrower
// than the context less a step.
func (g *Geometry) ring(l int) bool { return g.slots(l) < g.Context }

// slots is how many positions a ring layer l keeps (Context: not a ring).
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

// paged is how many layers live in blocks.
func (g *Geometry) paged() int {
	n := 0
	for l := 0; l < g.Layers; l++ {
		if !g.ring(l) {
			n++
		}
	}
	return n
}

func (g *Geometry) headBytes() int {
	n, _ := g.Type.dtype().RowBytes(g.HeadDim)
	return n
}

func (g *Geometry) rowBytes() int64 { return int64(g.KVHeads * g.headBytes()) }

// BlockBytes is the memory of one block: keys and values of Block
// positions of every paged layer.
func (g *Geometry) BlockBytes() int64 {
	return 2 * int64(g.paged()) * int64(g.block()) * g.rowBytes()
}

// RingBytes is the memory of one sequence's rings (sliding-window layers).
func (g *Geometry) RingBytes() int64 {
	var total int64
	for l := 0; l < g.Layers; l++ {
		if g.ring(l) {
			total += 2 * int64(g.slots(l)) * g.rowBytes()
		}
	}
	return total
}

// Blocks is how many blocks n positions take.
func (g *Geometry) Blocks(n int) int { return (n + g.block() - 1) / g.block() }

// BytesFor is the memory a sequence holding n positions takes: its rings
// and the blocks of n positions.
func (g *Geometry) BytesFor(n int) int64 {
	return g.RingBytes() + int64(g.Blocks(n))*g.BlockBytes()
}

// Bytes is the memory of one sequence of Context positions: its rings and
// the paged layers' positions, not rounded up to whole blocks — the figure
// memory planning and per-token estimates work with. A pool's sequence
// takes at most one block more (BytesFor); New's cache is one block, exact.
func (g *Geometry) Bytes() int64 {
	return g.RingBytes() + 2*int64(g.paged())*int64(g.Context)*g.rowBytes()
}

// Cache holds one sequence's keys and values: rings for sliding-window
// layers, a table of pool blocks for the others.
type Cache struct {
	g      Geometry
	dt     kernels.DType
	row    int // bytes of one position's keys (all KV heads)
	head   int // bytes of one head's keys at one position
	bt     int // positions per block
	layers []layerCache

	pool   *Pool
	ids    []int32  // blocks of positions [i·bt, (i+1)·bt)
	data   [][]byte // their memory, read by AttendHead without the pool's lock
	hashes []uint64 // hash chain of the leading full blocks (prefix.go)
	rings  int64    // bytes of the rings, charged to the pool
	closed bool
}

type layerCache struct {
	k, v   []byte // ring layers only
	slots  int
	window int
	page   int // index among the paged layers; -1 for a ring
}

// New allocates a cache with a pool of its own and, unless g says
// otherwise, one block of all its positions (a flat cache, the fastest to
// attend over), so its memory (Bytes) is all there from the start,
// committed by the OS as it is written.
func New(g Geometry) (*Cache, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if g.Block == 0 {
		g.Block = g.Context
	}
	p := NewPool(PoolConfig{Type: g.Type, BlockTokens: g.block()})
	c, err := NewIn(p, g)
	if err != nil {
		return nil, err
	}
	if err := c.Prepare(0, g.Context); err != nil {
		return nil, err
	}
	return c, nil
}

// NewIn makes an empty cache whose paged layers take blocks from p as the
// sequence grows (Prepare). Its rings are allocated now and charged to p.
func NewIn(p *Pool, g Geometry) (*Cache, error) {
	g.Block = p.cfg.BlockTokens
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if g.Type != p.cfg.Type {
		return nil, fmt.Errorf("kvcache: a %v cache cannot take blocks from a %v pool", g.Type, p.cfg.Type)
	}
	c := &Cache{g: g, dt: g.Type.dtype(), head: g.headBytes(), bt: g.block(), pool: p}
	c.row = g.KVHeads * c.head
	c.layers = make([]layerCache, g.Layers)
	page := 0
	for l := range c.layers {
		lc := &c.layers[l]
		if g.Window != nil {
			lc.window = g.Window[l]
		}
		lc.slots, lc.page = g.slots(l), -1
		if g.ring(l) {
			lc.k, lc.v = make([]byte, lc.slots*c.row), make([]byte, lc.slots*c.row)
		} else {
			lc.page = page
			page++
		}
	}
	c.rings = g.RingBytes()
	if err := p.bind(&g, c.rings); err != nil {
		return nil, err
	}
	return c, nil
}

// Geometry returns the cache's geometry.
func (c *Cache) Geometry() Geometry { return c.g }

// Bytes is the memory the cache holds at its full length, as its geometry
// computes it.
func (c *Cache) Bytes() int64 { return c.g.Bytes() }

// Allocated is the size of the buffers the cache really holds now: rings
// and blocks (shared blocks counted whole). For a cache from New it equals
// Bytes, and tests check that it does.
func (c *Cache) Allocated() int64 {
	n := c.rings
	for _, d := range c.data {
		n += int64(cap(d))
	}
	return n
}

// Positions is how many positions the cache's blocks can hold now.
func (c *Cache) Positions() int { return len(c.ids) * c.bt }

// CheckStep returns ErrStepTooLarge when adding n positions in one step
// would make a ring-buffer layer overwrite positions that the step's first
// token still attends to: a ring keeps window+Chunk slots, so a step may add
// at most Chunk positions.
func (c *Cache) CheckStep(n int) error {
	for l := range c.layers {
		lc := &c.layers[l]
		if lc.page < 0 && n > lc.slots-lc.window {
			return fmt.Errorf("%w: %d positions in one step, layer %d keeps %d slots for a window of %d (chunk %d)",
				ErrStepTooLarge, n, l, lc.slots, lc.window, c.g.Chunk)
		}
	}
	return nil
}

// Store encodes the keys and values (all KV heads, KVHeads×HeadDim floats
// each) of position pos in layer l. The position's block must be there
// (Prepare).
func (c *Cache) Store(l, pos int, k, v []float32) {
	lc := &c.layers[l]
	var kd, vd []byte
	if lc.page < 0 {
		off := (pos % lc.slots) * c.row
		kd, vd = lc.k[off:off+c.row], lc.v[off:off+c.row]
	} else {
		ko, vo := c.offsets(lc.page, pos%c.bt)
		d := c.data[pos/c.bt]
		kd, vd = d[ko:ko+c.row], d[vo:vo+c.row]
	}
	kernels.Quantize(c.dt, k, kd)
	kernels.Quantize(c.dt, v, vd)
}

// offsets locates position i of a block in paged layer page: a block holds,
// per paged layer, bt rows of keys then bt rows of values, so a run of
// positions of one head is strided by row, as in a ring.
func (c *Cache) offsets(page, i int) (k, v int) {
	k = (2*page*c.bt + i) * c.row
	return k, k + c.bt*c.row
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

// run is a stretch of consecutive positions stored at a stride of one row:
// k and v start at the first position's head.
type run struct {
	k, v []byte
	n    int
}

// runs yields the positions lo..lo+n-1 of layer l for KV head kvh as
// contiguous runs: at most two in a ring, one per block otherwise, each
// with the index of its first position relative to lo.
func (c *Cache) runs(l, kvh, lo, n int) iter.Seq2[int, run] {
	lc := &c.layers[l]
	return func(yield func(int, run) bool) {
		for i := 0; i < n; {
			p := lo + i
			var r run
			if lc.page < 0 {
				r.n = min(n-i, lc.slots-p%lc.slots)
				off := p%lc.slots*c.row + kvh*c.head
				end := off + (r.n-1)*c.row + c.head
				r.k, r.v = lc.k[off:end], lc.v[off:end]
			} else {
				r.n = min(n-i, c.bt-p%c.bt)
				ko, vo := c.offsets(lc.page, p%c.bt)
				ko, vo = ko+kvh*c.head, vo+kvh*c.head
				span := (r.n-1)*c.row + c.head
				d := c.data[p/c.bt]
				r.k, r.v = d[ko:ko+span], d[vo:vo+span]
			}
			if !yield(i, r) {
				return
			}
			i += r.n
		}
	}
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
	if lc.page < 0 && pos-lo+1 > lc.slots {
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
	for i, r := range c.runs(l, kvh, lo, n) {
		if c.dt == kernels.F16 {
			kernels.DotsF16(r.k, c.row, q[:hd], scores[i:i+r.n])
			continue
		}
		for j := range r.n {
			scores[i+j] = kernels.DotF32(c.dt, r.k[j*c.row:j*c.row+c.head], q)
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
	for i, r := range c.runs(l, kvh, lo, n) {
		if c.dt == kernels.F16 {
			// The common case, fused: out += w·v with v widened in place.
			kernels.AxpysF16(scores[i:i+r.n], r.v, c.row, out[:hd])
			continue
		}
		for j, w := range scores[i : i+r.n] {
			kernels.Dequantize(c.dt, r.v[j*c.row:j*c.row+c.head], vrow)
			for m, x := range vrow {
				out[m] += w * x
			}
		}
	}
}
