// Package kvcache stores the keys and values of a sequence's past positions,
// per layer, in f16 (default) or q8_0, and computes attention over them.
// An f32 cache exists for comparisons with llama.cpp run with an F32 cache.
//
// q8_0 stores 32 values in 34 bytes (32 int8 and an f16 scale), so its
// cache is 34/64 = 53% of f16's: about half, the scales being the rest.
//
// A scheduler's caches keep every layer in fixed-size blocks of
// BlockTokens positions taken from a Pool (pool.go) as the sequence grows;
// blocks can be shared by sequences with a common token prefix
// (prefix.go). Sliding-window layers have blocks of their own, given back
// once the window has passed them, so their memory stops growing at the
// window. A cache made alone (New: eval, bench) keeps its sliding-window
// layers in a ring of window+chunk slots instead. A forward step stores
// all its positions before attending, so the step's first token must
// still find its window after the step's last one is written: a step may
// add at most Chunk positions to a ring (CheckStep), the slack it was
// given.
package kvcache

import (
	"errors"
	"fmt"
	"iter"

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
	Block   int   // positions per block [DefaultBlockTokens]
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

func (g *Geometry) chunk() int {
	if g.Chunk <= 0 {
		return g.Context
	}
	return g.Chunk
}

// The layers of a cache in blocks form two groups with a block table
// each: the global layers, whose blocks a sequence keeps, and the
// sliding-window ones, whose blocks it gives up once they fall out of the
// window (docs/decisions.md, "Sliding-window layers").
const (
	global  = 0
	sliding = 1
	groups  = 2
)

// slides reports whether layer l's window matters: narrower than the
// context less a step. Such a layer is a ring in a cache of its own (New)
// and in the sliding group of a pooled one (NewIn); the others are global.
func (g *Geometry) slides(l int) bool { return g.slots(l) < g.Context }

// slots is how many positions a ring layer l keeps (Context: not a ring).
func (g *Geometry) slots(l int) int {
	if g.Window != nil && g.Window[l] > 0 {
		if n := g.Window[l] + g.chunk(); n < g.Context {
			return n
		}
	}
	return g.Context
}

// window is the widest window of the sliding layers (0: none).
func (g *Geometry) window() int {
	w := 0
	for l := 0; l < g.Layers; l++ {
		if g.slides(l) {
			w = max(w, g.Window[l])
		}
	}
	return w
}

// pages is how many layers of group grp a pooled cache keeps in blocks.
func (g *Geometry) pages(grp int) int {
	n := 0
	for l := 0; l < g.Layers; l++ {
		if g.slides(l) == (grp == sliding) {
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

// groupBytes is the memory of one block of group grp: keys and values of
// Block positions of each of its layers.
func (g *Geometry) groupBytes(grp int) int64 {
	return 2 * int64(g.pages(grp)) * int64(g.block()) * g.rowBytes()
}

// BlockBytes is the memory of Block positions of every layer a pooled
// cache keeps in blocks: one block of each group.
func (g *Geometry) BlockBytes() int64 { return g.groupBytes(global) + g.groupBytes(sliding) }

// RingBytes is the memory of the rings of a cache made by New.
func (g *Geometry) RingBytes() int64 {
	var total int64
	for l := 0; l < g.Layers; l++ {
		if g.slides(l) {
			total += 2 * int64(g.slots(l)) * g.rowBytes()
		}
	}
	return total
}

// Blocks is how many blocks n positions take.
func (g *Geometry) Blocks(n int) int { return (n + g.block() - 1) / g.block() }

// slidingBlocks is the most blocks the sliding group of a pooled cache
// holds: those a step of Chunk positions writes and those its first
// position still sees, window-1 positions back.
func (g *Geometry) slidingBlocks() int {
	return min(g.Blocks(g.Context), (g.window()+g.chunk()-2)/g.block()+2)
}

// BytesFor is the most memory a pooled sequence of n positions takes:
// the global layers' blocks of n positions and the sliding layers' blocks
// of at most a window and a step.
func (g *Geometry) BytesFor(n int) int64 {
	b := g.Blocks(n)
	return int64(b)*g.groupBytes(global) + int64(min(b, g.slidingBlocks()))*g.groupBytes(sliding)
}

// Bytes is the memory of one sequence of Context positions, not rounded up
// to whole blocks — the figure memory planning and per-token estimates work
// with: the global layers' positions and window+Chunk positions of each
// sliding layer (the rings of New's cache; a pooled sequence's sliding
// blocks hold as many, give or take a block). A pooled sequence takes at
// most two blocks more (BytesFor); New's cache is exact.
func (g *Geometry) Bytes() int64 {
	return g.RingBytes() + 2*int64(g.pages(global))*int64(g.Context)*g.rowBytes()
}

// Cache holds one sequence's keys and values: rings for sliding-window
// layers in a cache made by New, tables of pool blocks for the others.
type Cache struct {
	g      Geometry
	dt     kernels.DType
	row    int  // bytes of one position's keys (all KV heads)
	head   int  // bytes of one head's keys at one position
	lanes  bool // keys stored in lanes (f16: lanes.go)
	bt     int  // positions per block
	layers []layerCache

	pool   *Pool
	tabs   [groups]table
	pages  [groups]int // layers of each group
	window int         // widest window of the sliding group
	hashes []uint64    // hash chain of the leading full blocks (prefix.go)
	rings  int64       // bytes of the rings
	rangeN int         // positions per attention range, 0: RangeLen (tests set it)
	closed bool
}

// table is a group's blocks: block i holds positions [i·bt, (i+1)·bt).
// Both groups' tables have the same length; a sliding group's block that
// no position in view needs any more is given up: id -1, data nil.
type table struct {
	ids  []int32
	data [][]byte // their memory, read by AttendHead without the pool's lock
}

type layerCache struct {
	k, v   []byte // ring layers only
	slots  int
	window int
	group  int // -1 for a ring
	page   int // index among its group's layers
}

// New allocates a cache with a pool of its own and, unless g says
// otherwise, one block of all its positions (a flat cache, the fastest to
// attend over) and rings for its sliding-window layers, so its memory
// (Bytes) is all there from the start, committed by the OS as it is
// written.
func New(g Geometry) (*Cache, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if g.Block == 0 {
		g.Block = g.Context
	}
	p := NewPool(PoolConfig{Type: g.Type, BlockTokens: g.block()})
	c, err := newIn(p, g, true)
	if err != nil {
		return nil, err
	}
	if err := c.Prepare(0, g.Context); err != nil {
		return nil, err
	}
	return c, nil
}

// NewIn makes an empty cache whose layers take blocks from p as the
// sequence grows (Prepare); it allocates nothing yet.
func NewIn(p *Pool, g Geometry) (*Cache, error) { return newIn(p, g, false) }

// newIn makes a cache in p, with rings for its sliding layers when asked.
func newIn(p *Pool, g Geometry, rings bool) (*Cache, error) {
	g.Block = p.cfg.BlockTokens
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if g.Type != p.cfg.Type {
		return nil, fmt.Errorf("kvcache: a %v cache cannot take blocks from a %v pool", g.Type, p.cfg.Type)
	}
	c := &Cache{g: g, dt: g.Type.dtype(), head: g.headBytes(), bt: g.block(), pool: p, lanes: g.Type == F16}
	c.row = g.KVHeads * c.head
	c.layers = make([]layerCache, g.Layers)
	for l := range c.layers {
		lc := &c.layers[l]
		if g.Window != nil {
			lc.window = g.Window[l]
		}
		lc.slots, lc.group = g.slots(l), global
		switch {
		case g.slides(l) && rings:
			lc.group = -1
			lc.k, lc.v = make([]byte, lc.slots*c.row), make([]byte, lc.slots*c.row)
			c.rings += 2 * int64(lc.slots*c.row)
			continue
		case g.slides(l):
			lc.group = sliding
		}
		lc.page = c.pages[lc.group]
		c.pages[lc.group]++
	}
	if c.pages[sliding] > 0 {
		c.window = g.window()
	}
	if err := p.bind(c); err != nil {
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
	for _, t := range c.tabs {
		for _, d := range t.data {
			n += int64(cap(d))
		}
	}
	return n
}

// blocks is the length of the cache's block tables.
func (c *Cache) blocks() int { return max(len(c.tabs[global].ids), len(c.tabs[sliding].ids)) }

// Positions is how many positions the cache's blocks can hold now.
func (c *Cache) Positions() int { return c.blocks() * c.bt }

// CheckStep returns ErrStepTooLarge when adding n positions in one step
// would make a ring-buffer layer overwrite positions that the step's first
// token still attends to: a ring keeps window+Chunk slots, so a step may add
// at most Chunk positions.
func (c *Cache) CheckStep(n int) error {
	for l := range c.layers {
		lc := &c.layers[l]
		if lc.group < 0 && n > lc.slots-lc.window {
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
	var i, span int // the position's index in its ring or block, and their positions
	if lc.group < 0 {
		kd, vd, i, span = lc.k, lc.v, pos%lc.slots, lc.slots
	} else {
		ko, vo := c.offsets(lc.page)
		d := c.tabs[lc.group].data[pos/c.bt]
		kd, vd, i, span = d[ko:vo], d[vo:vo+c.bt*c.row], pos%c.bt, c.bt
	}
	hd := c.g.HeadDim
	for h := range c.g.KVHeads {
		off := (h*span + i) * c.head
		if c.lanes {
			storeLanes(kd[h*span*c.head:(h+1)*span*c.head], span, i, k[h*hd:(h+1)*hd])
		} else {
			kernels.Quantize(c.dt, k[h*hd:(h+1)*hd], kd[off:off+c.head])
		}
		kernels.Quantize(c.dt, v[h*hd:(h+1)*hd], vd[off:off+c.head])
	}
}

// offsets locates the keys and values of layer page of a group in a block.
// A block holds, per layer of its group, its bt positions' keys then their
// values; a ring, the slots' keys and values apart. Either way the keys
// (and the values) are stored head by head: head h's positions one after
// the other, at [h·span·head, (h+1)·span·head) with span bt or the ring's
// slots. So the run of positions attention walks for one KV head is
// contiguous: the hardware prefetcher streams it, and a tile of it sits in
// a few L1 sets instead of two every 2 KiB (one row of all heads apart, the
// older layout read each head's keys at a quarter to half the speed).
func (c *Cache) offsets(page int) (k, v int) {
	k = 2 * page * c.bt * c.row
	return k, k + c.bt*c.row
}

// AttnParams configures one attention computation.
type AttnParams struct {
	Scale   float32 // multiplies q·k, usually 1/sqrt(head width)
	Softcap float32 // when > 0, scores become Softcap·tanh(score/Softcap) (Gemma-2)
}

// Scratch is per-caller working memory of Attend.
type Scratch struct {
	scores  []float32
	vrow    []float32
	parts   []float32 // AttendGroup's ranges' partial states
	bparts  []float32 // AttendBlock's rows' ranges' partial states
	bq      []float32 // AttendBlock's queries, side by side
	bout    []float32 // and their outputs
	spans   []blockSpan
	kpad    []byte    // a short group of keys in lanes, padded (laneScores)
	kscores []float32 // a group's scores, part of them wanted (laneScores)
}

// run is a stretch of consecutive positions of one KV head, stored one
// after the other (head bytes apart): k and v start at the first one. In
// a cache with keys in lanes, k is the bytes of the same positions' place
// (for prefetching) and the keys are read from kh, the head's keys of the
// whole ring or block (span positions), the run starting at index i0.
type run struct {
	k, v     []byte
	n        int
	kh       []byte
	i0, span int
}

// runs yields the positions lo..lo+n-1 of layer l for KV head kvh as
// contiguous runs: at most two in a ring, one per block otherwise, each
// with the index of its first position relative to lo.
func (c *Cache) runs(l, kvh, lo, n int) iter.Seq2[int, run] {
	lc := &c.layers[l]
	return func(yield func(int, run) bool) {
		for i := 0; i < n; {
			r := c.runAt(lc, kvh, lo+i, n-i)
			if !yield(i, r) {
				return
			}
			i += r.n
		}
	}
}

// runAt is the run of KV head kvh of layer lc that starts at position p:
// at most n positions, up to the end of p's ring or block.
func (c *Cache) runAt(lc *layerCache, kvh, p, n int) run {
	var r run
	if lc.group < 0 {
		r.i0, r.span = p%lc.slots, lc.slots
		r.n = min(n, lc.slots-r.i0)
		off := (kvh*lc.slots + r.i0) * c.head
		r.k, r.v = lc.k[off:off+r.n*c.head], lc.v[off:off+r.n*c.head]
		r.kh = lc.k[kvh*lc.slots*c.head : (kvh+1)*lc.slots*c.head]
		return r
	}
	r.i0, r.span = p%c.bt, c.bt
	r.n = min(n, c.bt-r.i0)
	ko, vo := c.offsets(lc.page)
	off := (kvh*c.bt + r.i0) * c.head
	d := c.tabs[lc.group].data[p/c.bt]
	r.k, r.v = d[ko+off:ko+off+r.n*c.head], d[vo+off:vo+off+r.n*c.head]
	r.kh = d[ko+kvh*c.bt*c.head : ko+(kvh+1)*c.bt*c.head]
	return r
}

// nextTile returns the tile after the one at t of run r (r starting i
// positions into [lo, lo+n)): the next tile of r, else the first of the
// next run, else an empty run.
func (c *Cache) nextTile(l, kvh, lo, n, i, t int, r run) run {
	switch {
	case t+tile < r.n:
		m := min(tile, r.n-t-tile)
		return run{n: m, k: r.k[(t+tile)*c.head : (t+tile+m)*c.head], v: r.v[(t+tile)*c.head : (t+tile+m)*c.head]}
	case i+r.n < n:
		return c.runAt(&c.layers[l], kvh, lo+i+r.n, min(tile, n-i-r.n))
	}
	return run{}
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
	if lc.group < 0 && pos-lo+1 > lc.slots {
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
	for i, r := range c.runs(l, kvh, lo, n) {
		switch c.dt {
		case kernels.F16:
			c.laneScores(r, 0, r.n, q[:hd], scores[i:], n, s)
			continue
		case kernels.Q8_0:
			kernels.DotsQ8_0(r.k, c.head, q[:hd], scores[i:i+r.n])
			continue
		}
		for j := range r.n {
			scores[i+j] = kernels.DotF32(c.dt, r.k[j*c.head:(j+1)*c.head], q)
		}
	}
	capScores(scores, p)
	kernels.Softmax(scores)
	clear(out[:hd])
	for i, r := range c.runs(l, kvh, lo, n) {
		if c.dt == kernels.F16 {
			// The common case, fused: out += w·v with v widened in place.
			kernels.AxpysF16(scores[i:i+r.n], r.v, c.head, out[:hd])
			continue
		}
		if c.dt == kernels.Q8_0 {
			kernels.AxpysQ8_0Heads(scores[i:i+r.n], r.n, r.n, r.v, c.head, out[:hd], hd)
			continue
		}
		for j, w := range scores[i : i+r.n] {
			kernels.Dequantize(c.dt, r.v[j*c.head:(j+1)*c.head], vrow)
			for m, x := range vrow {
				out[m] += w * x
			}
		}
	}
}
