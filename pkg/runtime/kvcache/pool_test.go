package kvcache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/corelm/corelm/pkg/kernels"
)

func poolGeometry() Geometry {
	return Geometry{Type: F16, Layers: 2, KVHeads: 1, HeadDim: 32, Context: 256}
}

// fill stores position p's keys and values as p in every layer.
func fill(t *testing.T, c *Cache, from, to int) {
	t.Helper()
	if err := c.Prepare(from, to-from); err != nil {
		t.Fatal(err)
	}
	k := make([]float32, 32)
	for p := from; p < to; p++ {
		k[0] = float32(p)
		for l := range c.g.Layers {
			c.Store(l, p, k, k)
		}
	}
}

func tokens(n, seed int) []int32 {
	ts := make([]int32, n)
	for i := range ts {
		ts[i] = int32(seed*1000 + i)
	}
	return ts
}

// TestReuseSharesAndCopies: a finished sequence's full blocks are shared
// with a request of the same prefix, and the block its prefix ends in is
// copied as far as the tokens agree.
func TestReuseSharesAndCopies(t *testing.T) {
	p := NewPool(PoolConfig{Type: F16, BlockTokens: 16, CacheBudget: 1 << 20})
	a, err := NewIn(p, poolGeometry())
	if err != nil {
		t.Fatal(err)
	}
	toks := tokens(40, 1)
	fill(t, a, 0, 40)
	a.Release(toks, true) // blocks 0, 1 full; 8 positions of block 2
	if st := p.Stats(); st.CacheBytes != 3*st.BlockBytes || st.InUseBytes != 0 {
		t.Fatalf("after release: %+v", st)
	}
	b, _ := NewIn(p, poolGeometry())
	want := slices.Clone(toks[:37])
	want = append(want, 7, 7, 7)
	if n := b.Reuse(want, len(want)-1); n != 37 {
		t.Fatalf("reused %d positions, want 37 (2 blocks + 5 copied)", n)
	}
	for pos := range 37 {
		d := b.tabs[global].data[pos/16]
		ko, _ := b.offsets(1)
		ko += keyOffset(pos%16, b.head)
		if got := halfAt(d, ko); got != float32(pos) {
			t.Fatalf("position %d holds %g", pos, got)
		}
	}
	c, _ := NewIn(p, poolGeometry())
	if n := c.Reuse(tokens(40, 2), 39); n != 0 {
		t.Errorf("a different prompt reused %d positions", n)
	}
	st := p.Stats()
	if st.Hits != 1 || st.Misses != 1 || st.HitTokens != 37 {
		t.Errorf("stats %+v", st)
	}
	if b.tabs[global].ids[0] != func() int32 { id, _ := p.full[global][chainHash(rootHash, toks[:16])]; return id }() {
		t.Error("the first block was not shared")
	}
}

// keyOffset is where element 0 of the key of index i of a block (of a
// multiple of eight positions) is, from its head's keys, keys in lanes.
func keyOffset(i, head int) int { return (i-i%keyGroup)*head + 2*(i%keyGroup) }

func halfAt(d []byte, off int) float32 {
	out := make([]float32, 32)
	kernels.Dequantize(kernels.F16, d[off:off+64], out)
	return out[0]
}

// TestCopyOnWrite: a block two caches share is copied before one of them
// writes it; the other still reads what it wrote.
func TestCopyOnWrite(t *testing.T) {
	p := NewPool(PoolConfig{Type: F16, BlockTokens: 16, CacheBudget: 1 << 20})
	a, _ := NewIn(p, poolGeometry())
	toks := tokens(32, 1)
	fill(t, a, 0, 32)
	a.Seal(toks) // indexed while a runs
	b, _ := NewIn(p, poolGeometry())
	if n := b.Reuse(toks, 32); n != 32 {
		t.Fatalf("reused %d", n)
	}
	if b.tabs[global].ids[1] != a.tabs[global].ids[1] {
		t.Fatal("blocks not shared")
	}
	k := make([]float32, 32)
	k[0] = -1
	if err := b.Prepare(20, 1); err != nil {
		t.Fatal(err)
	}
	b.Store(0, 20, k, k)
	b.Store(1, 20, k, k)
	if b.tabs[global].ids[1] == a.tabs[global].ids[1] || b.tabs[global].ids[0] != a.tabs[global].ids[0] {
		t.Errorf("block 1 not copied before the write (a %v, b %v)", a.tabs[global].ids, b.tabs[global].ids)
	}
	ko, _ := a.offsets(0)
	ko += keyOffset(4, a.head)
	if got := halfAt(a.tabs[global].data[1], ko); got != 20 {
		t.Errorf("the other cache sees %g at position 20, want its own 20", got)
	}
	if got := halfAt(b.tabs[global].data[1], ko); got != -1 {
		t.Errorf("the writer sees %g at position 20, want -1", got)
	}
	ko, _ = a.offsets(0)
	ko += keyOffset(3, a.head)
	if got := halfAt(b.tabs[global].data[1], ko); got != 19 {
		t.Errorf("the copy holds %g at position 19, want 19", got)
	}
}

// TestPoolBudget: blocks are taken up to the budget, cached blocks are
// evicted (least recently used first) before an allocation fails, and the
// cache never holds more than its budget.
func TestPoolBudget(t *testing.T) {
	g := poolGeometry()
	bb := (&Geometry{Type: F16, Layers: 2, KVHeads: 1, HeadDim: 32, Context: 1, Block: 16}).BlockBytes()
	p := NewPool(PoolConfig{Type: F16, BlockTokens: 16, Budget: 4 * bb, CacheBudget: 2 * bb})
	for i := range 5 {
		c, _ := NewIn(p, g)
		fill(t, c, 0, 32)
		c.Release(tokens(32, i), true)
		if st := p.Stats(); st.CacheBytes > 2*bb {
			t.Fatalf("after sequence %d: %d cached bytes, budget %d", i, st.CacheBytes, 2*bb)
		}
	}
	if st := p.Stats(); st.Evictions != 8 {
		t.Errorf("evictions %d, want 8 (5 sequences of 2 blocks, 2 kept)", st.Evictions)
	}
	// The latest sequence's blocks are the ones kept.
	c, _ := NewIn(p, g)
	if n := c.Reuse(tokens(32, 4), 32); n != 32 {
		t.Errorf("the most recent prefix: reused %d, want 32", n)
	}
	d, _ := NewIn(p, g)
	if err := d.Prepare(0, 32); err != nil {
		t.Fatalf("2 free blocks: %v", err)
	}
	if err := d.Prepare(32, 1); !errors.Is(err, ErrPoolFull) {
		t.Errorf("a fifth block in a pool of four: %v", err)
	}
	c.Release(nil, false)
	if err := d.Prepare(32, 1); err != nil {
		t.Errorf("after a release: %v", err)
	}
}

// BenchmarkAttendBlocks measures decode attention (every query head of one
// token over 1024 positions, an 8B model's layer: 8 KV heads of 128) with
// the positions in blocks of each size; 1024 is one block, as a flat cache.
func BenchmarkAttendBlocks(b *testing.B) {
	for _, typ := range []Type{F16, Q8_0} {
		for _, bt := range []int{8, 16, 32, 64, 128, 1024} {
			b.Run(fmt.Sprintf("%v/block%d", typ, bt), func(b *testing.B) {
				const ctx, heads = 1024, 32
				p := NewPool(PoolConfig{Type: typ, BlockTokens: bt})
				c, err := NewIn(p, Geometry{Type: typ, Layers: 1, KVHeads: 8, HeadDim: 128, Context: ctx})
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Prepare(0, ctx); err != nil {
					b.Fatal(err)
				}
				kv := make([]float32, 8*128)
				for pos := range ctx {
					for i := range kv {
						kv[i] = float32((pos*7+i)%13) / 13
					}
					c.Store(0, pos, kv, kv)
				}
				q := make([]float32, 128)
				for i := range q {
					q[i] = float32(i%5) / 5
				}
				out := make([]float32, 128)
				var s Scratch
				b.ResetTimer()
				for range b.N {
					for h := range heads {
						c.AttendHead(0, ctx-1, h, heads, q, AttnParams{Scale: 0.088}, out, &s)
					}
				}
			})
		}
	}
}

// TestPersist: blocks saved by one pool are loaded by another of the same
// key and geometry and reused; a corrupt file, another key or another
// geometry is ignored with a warning, never used.
func TestPersist(t *testing.T) {
	dir := t.TempDir()
	g := poolGeometry()
	newPool := func() *Pool {
		p := NewPool(PoolConfig{Type: F16, BlockTokens: 16, CacheBudget: 1 << 20})
		c, err := NewIn(p, g) // fixes the layout
		if err != nil {
			t.Fatal(err)
		}
		c.Release(nil, false)
		return p
	}
	a := newPool()
	c, _ := NewIn(a, g)
	toks := tokens(40, 1)
	fill(t, c, 0, 40)
	c.Release(toks, true)
	if n, err := a.Save(dir, "model-a f16"); n != 2 || err != nil {
		t.Fatalf("saved %d blocks: %v", n, err)
	}
	if n, err := a.Save(dir, "model-a f16"); n != 0 || err != nil {
		t.Errorf("saved %d blocks again: %v", n, err)
	}
	var warnings []error
	warn := func(_ string, err error) { warnings = append(warnings, err) }

	b := newPool()
	if n := b.Load(dir, "model-a f16", warn); n != 2 || len(warnings) != 0 {
		t.Fatalf("loaded %d blocks, warnings %v", n, warnings)
	}
	r, _ := NewIn(b, g)
	if n := r.Reuse(toks, 39); n != 32 {
		t.Fatalf("reused %d positions after a restart, want 32", n)
	}
	for pos := range 32 {
		ko, _ := r.offsets(0)
		ko += keyOffset(pos%16, r.head)
		if got := halfAt(r.tabs[global].data[pos/16], ko); got != float32(pos) {
			t.Fatalf("restored position %d holds %g", pos, got)
		}
	}
	if n := newPool().Load(dir, "model-b f16", warn); n != 0 {
		t.Errorf("another model's key loaded %d blocks", n)
	}
	// Corrupt one file: it is reported and skipped, the other still loads.
	files, _ := filepathGlob(t, persistDir(dir, "model-a f16"))
	raw, _ := os.ReadFile(files[0])
	raw[len(raw)/2] ^= 0xff
	if err := os.WriteFile(files[0], raw, 0o644); err != nil {
		t.Fatal(err)
	}
	warnings = nil
	fixed := newPool()
	if n := fixed.Load(dir, "model-a f16", warn); n != 1 || len(warnings) != 1 {
		t.Errorf("with a corrupt file: loaded %d, warnings %v", n, warnings)
	}
	// Once its block is cached again, Save replaces the rejected file.
	c, _ = NewIn(fixed, g)
	fill(t, c, 0, 40)
	c.Release(toks, true)
	if n, err := fixed.Save(dir, "model-a f16"); n != 1 || err != nil {
		t.Errorf("saved %d blocks over one rejected file: %v", n, err)
	}
	warnings = nil
	if n := newPool().Load(dir, "model-a f16", warn); n != 2 || len(warnings) != 0 {
		t.Errorf("after the rewrite: loaded %d, warnings %v", n, warnings)
	}
	// A block of the previous format (named by its hash alone): reported
	// and removed.
	old := filepath.Join(persistDir(dir, "model-a f16"), "0123456789abcdef.kvb")
	body := append([]byte("CLMKVB01"), make([]byte, 40)...)
	if err := os.WriteFile(old, binary.LittleEndian.AppendUint32(body, crc32.Checksum(body, crcTable)), 0o644); err != nil {
		t.Fatal(err)
	}
	warnings = nil
	if n := newPool().Load(dir, "model-a f16", warn); n != 2 || len(warnings) != 1 || !errors.Is(warnings[0], errOldFormat) {
		t.Errorf("with a block of the previous format: loaded %d, warnings %v", n, warnings)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the previous format's file is still there: %v", err)
	}
	// Another geometry (block size) under the same key: ignored.
	other := NewPool(PoolConfig{Type: F16, BlockTokens: 32, CacheBudget: 1 << 20})
	oc, _ := NewIn(other, g)
	oc.Release(nil, false)
	warnings = nil
	if n := other.Load(dir, "model-a f16", warn); n != 0 || len(warnings) != 2 || !errors.Is(warnings[1], errStale) {
		t.Errorf("another geometry: loaded %d, warnings %v", n, warnings)
	}
}

func filepathGlob(t *testing.T, dir string) ([]string, error) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.kvb"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no persisted files in %s: %v", dir, err)
	}
	return files, err
}

// TestSlidingBlocks: a pooled cache keeps its sliding-window layer in
// blocks of its own and gives up those its window has passed, so the layer
// holds at most a window and a step; attention sees exactly the window. A
// later request reuses a prefix longer than the window, taking only the
// sliding blocks in view of its end; when one of those is gone, the prefix
// shrinks to what can be served, never to wrong KV.
func TestSlidingBlocks(t *testing.T) {
	g := Geometry{Type: F16, Layers: 2, KVHeads: 1, HeadDim: 32, Context: 256, Window: []int{24, 0}, Chunk: 8}
	p := NewPool(PoolConfig{Type: F16, BlockTokens: 16, CacheBudget: 1 << 20})
	a, err := NewIn(p, g)
	if err != nil {
		t.Fatal(err)
	}
	g = a.Geometry()          // blocks of 16
	most := g.slidingBlocks() // (24+8-2)/16 + 2 = 3
	toks := tokens(120, 1)
	var s Scratch
	for from := 0; from < 120; from += 8 {
		if err := a.Prepare(from, 8); err != nil {
			t.Fatal(err)
		}
		storeMeanPositions(a, 0, from, from+8)
		storeMeanPositions(a, 1, from, from+8)
		for pos := from; pos < from+8; pos++ {
			lo := max(0, pos-23)
			if got, want := attendMean(a, 0, pos, &s), float32(lo+pos)/2; math.Abs(float64(got-want)) > 1e-3*float64(pos+1) {
				t.Fatalf("window layer, position %d: mean %g, want %g", pos, got, want)
			}
		}
		a.Seal(toks[:from+8]) // as the scheduler does after each step
		live := 0
		for _, id := range a.tabs[sliding].ids {
			if id >= 0 {
				live++
			}
		}
		if live > most {
			t.Fatalf("after positions up to %d the sliding layer holds %d blocks, at most %d expected", from+8, live, most)
		}
		if a.Allocated() > g.BytesFor(from+8) {
			t.Fatalf("%d bytes held for %d positions, BytesFor says %d", a.Allocated(), from+8, g.BytesFor(from+8))
		}
	}
	a.Release(toks, true)

	b, _ := NewIn(p, g)
	if n := b.Reuse(toks[:101], 100); n != 100 {
		t.Fatalf("reused %d positions, want 100 (6 blocks + 4 copied)", n)
	}
	// Positions 100-23 = 77 on are in view: sliding blocks 4 and 5 and the copy.
	for blk, id := range b.tabs[sliding].ids {
		if (id >= 0) != (blk >= 4) {
			t.Errorf("sliding block %d: id %d", blk, id)
		}
	}
	_, vo := b.offsets(0)
	vo += 99 % 16 * b.head
	if got := halfAt(b.tabs[sliding].data[6], vo); got != 99 {
		t.Errorf("the copied sliding block holds %g at position 99", got)
	}
	b.Release(nil, false)

	// Lose the sliding layer's block 5 (positions 80..95): a prefix of 100
	// needs it, and so does one of 96; 80 needs blocks 3 and 4 only.
	p.mu.Lock()
	id := p.full[sliding][chainHashes(toks, 16)[5]]
	p.forgetLocked(id)
	p.freeLocked(id)
	p.mu.Unlock()
	c, _ := NewIn(p, g)
	if n := c.Reuse(toks[:101], 100); n != 80 {
		t.Errorf("without a sliding block in view, reused %d positions, want 80", n)
	}
	c.Release(nil, false)

	// Both groups' blocks persist; a restarted pool serves the same.
	dir := t.TempDir()
	if _, err := p.Save(dir, "k"); err != nil {
		t.Fatal(err)
	}
	q := NewPool(PoolConfig{Type: F16, BlockTokens: 16, CacheBudget: 1 << 20})
	d, _ := NewIn(q, g)
	if n := q.Load(dir, "k", func(path string, err error) { t.Errorf("%s: %v", path, err) }); n != 7+6 {
		t.Errorf("loaded %d blocks, want 7 global and 6 sliding", n)
	}
	if n := d.Reuse(toks[:101], 100); n != 80 {
		t.Errorf("after a restart: reused %d positions, want 80", n)
	}
}

// chainHashes names the full blocks of toks.
func chainHashes(toks []int32, bt int) []uint64 {
	var hs []uint64
	parent := rootHash
	for k := 0; (k+1)*bt <= len(toks); k++ {
		parent = chainHash(parent, toks[k*bt:(k+1)*bt])
		hs = append(hs, parent)
	}
	return hs
}
