package kvcache

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// attendCase is a cache layout AttendGroup must serve: a flat cache, rings
// for sliding windows (New) and pool blocks, global and sliding (NewIn).
type attendCase struct {
	name   string
	typ    Type
	hd     int
	kvh    int
	heads  int
	window int
	block  int // 0: New (flat, rings for the window), else NewIn with blocks of block
	cap    float32
}

func attendCases() []attendCase {
	var tt []attendCase
	for _, typ := range []Type{F16, Q8_0, F32} {
		tt = append(tt,
			attendCase{"flat g4", typ, 64, 2, 8, 0, 0, 0},
			attendCase{"flat g3 hd128", typ, 128, 1, 3, 0, 0, 0},
			attendCase{"ring w50 g2 softcap", typ, 64, 2, 4, 50, 0, 30},
			attendCase{"blocks16 g4", typ, 64, 2, 8, 0, 16, 0},
			attendCase{"blocks16 w40 g7", typ, 32, 1, 7, 40, 16, 50},
		)
	}
	return tt
}

// forEachDecode stores n random positions of layer 0 one by one, as decode
// does, and calls f after each with the position and the step's queries.
func forEachDecode(t *testing.T, tc attendCase, n int, f func(c *Cache, pos int, q []float32)) {
	t.Helper()
	g := Geometry{Type: tc.typ, Layers: 1, KVHeads: tc.kvh, HeadDim: tc.hd, Context: n, Chunk: 1}
	if tc.window > 0 {
		g.Window = []int{tc.window}
	}
	var c *Cache
	var err error
	if tc.block == 0 {
		c, err = New(g)
	} else {
		c, err = NewIn(NewPool(PoolConfig{Type: tc.typ, BlockTokens: tc.block}), g)
	}
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, uint64(tc.hd)))
	k, v := make([]float32, tc.kvh*tc.hd), make([]float32, tc.kvh*tc.hd)
	q := make([]float32, tc.heads*tc.hd)
	for pos := range n {
		if err := c.Prepare(pos, 1); err != nil {
			t.Fatal(err)
		}
		for i := range k {
			k[i], v[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
		}
		c.Store(0, pos, k, v)
		for i := range q {
			q[i] = float32(rng.NormFloat64())
		}
		f(c, pos, q)
	}
}

// TestAttendGroupMatchesHead: a group's outputs are bit for bit those of
// AttendHead head by head, on every layout and cache type.
func TestAttendGroupMatchesHead(t *testing.T) {
	for _, tc := range attendCases() {
		t.Run(fmt.Sprintf("%v/%s", tc.typ, tc.name), func(t *testing.T) {
			p := AttnParams{Scale: 1 / float32(math.Sqrt(float64(tc.hd))), Softcap: tc.cap}
			want, got := make([]float32, tc.heads*tc.hd), make([]float32, tc.heads*tc.hd)
			var s, sg Scratch
			g := tc.heads / tc.kvh
			forEachDecode(t, tc, 200, func(c *Cache, pos int, q []float32) {
				for h := range tc.heads {
					c.AttendHead(0, pos, h, tc.heads, q[h*tc.hd:(h+1)*tc.hd], p, want[h*tc.hd:(h+1)*tc.hd], &s)
				}
				for kvh := range tc.kvh {
					o := kvh * g * tc.hd
					c.AttendGroup(0, pos, kvh, tc.heads, q[o:o+g*tc.hd], p, got[o:o+g*tc.hd], &sg)
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("pos %d: output %d (head %d) = %v, AttendHead gives %v", pos, i, i/tc.hd, got[i], want[i])
					}
				}
			})
		})
	}
}

// TestAttendRangesMatchOneRange: attention split into ranges and merged
// (flash-decoding) equals the one-range result within float32 rounding,
// and computing the ranges separately (AttendRange, as a step whose ranges
// are split over threads does) then MergeRanges gives AttendGroup's bits
// (a token of one range takes AttendGroup's softmax path instead).
func TestAttendRangesMatchOneRange(t *testing.T) {
	for _, tc := range attendCases() {
		t.Run(fmt.Sprintf("%v/%s", tc.typ, tc.name), func(t *testing.T) {
			p := AttnParams{Scale: 1 / float32(math.Sqrt(float64(tc.hd))), Softcap: tc.cap}
			g := tc.heads / tc.kvh
			one, split, merged := make([]float32, g*tc.hd), make([]float32, g*tc.hd), make([]float32, g*tc.hd)
			var s Scratch
			var worst float64
			split2 := 0
			forEachDecode(t, tc, 200, func(c *Cache, pos int, q []float32) {
				for kvh := range tc.kvh {
					qg := q[kvh*g*tc.hd : (kvh+1)*g*tc.hd]
					c.rangeN = 0
					c.AttendGroup(0, pos, kvh, tc.heads, qg, p, one, &s)
					c.rangeN = 23
					k := c.Ranges(0, pos)
					if k > 1 {
						split2++
					}
					c.AttendGroup(0, pos, kvh, tc.heads, qg, p, split, &s)
					parts := make([]float32, k*PartLen(g, tc.hd))
					for r := range k {
						c.AttendRange(0, pos, kvh, tc.heads, r, qg, p, parts[r*PartLen(g, tc.hd):(r+1)*PartLen(g, tc.hd)], &s)
					}
					MergeRanges(parts, k, g, tc.hd, merged)
					for i := range one {
						if k > 1 && math.Float32bits(merged[i]) != math.Float32bits(split[i]) {
							t.Fatalf("pos %d: ranges merged apart give %v at %d, AttendGroup %v", pos, merged[i], i, split[i])
						}
						worst = max(worst, math.Abs(float64(split[i]-one[i])))
					}
				}
			})
			if split2 == 0 {
				t.Fatal("no position was split into ranges")
			}
			// Outputs are weighted means of values of magnitude ~1: a few
			// float32 roundings of the weights and sums.
			if worst > 1e-5 {
				t.Errorf("ranges differ from one range by up to %.3g", worst)
			}
			t.Logf("largest difference %.3g", worst)
		})
	}
}

// benchCache returns a cache of the geometry filled to ctx positions in
// every layer with random keys and values, and random queries and room
// for the outputs of nq query vectors.
func benchCache(b *testing.B, typ Type, layers, ctx, kvHeads, hd, nq int) (c *Cache, q, out []float32) {
	c, err := New(Geometry{Type: typ, Layers: layers, KVHeads: kvHeads, HeadDim: hd, Context: ctx})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	kv := make([]float32, kvHeads*hd)
	for l := range layers {
		for pos := range ctx {
			for i := range kv {
				kv[i] = float32(rng.NormFloat64())
			}
			c.Store(l, pos, kv, kv)
		}
	}
	q = make([]float32, nq*hd)
	for i := range q {
		q[i] = float32(rng.NormFloat64())
	}
	return c, q, make([]float32, nq*hd)
}

// BenchmarkAttendDecode measures one decode token's attention over a layer
// of a 1B model (32 query heads on 8 KV heads of 64) at a depth of 4096,
// head by head (AttendHead) and by group (AttendGroup), f16 and q8_0.
// BenchmarkAttendDecode measures one decode step's attention of a
// Llama-3.2-1B-shaped model at depth 4096: 16 layers, so the cache (128 MiB
// in f16) comes from memory as it does in a real step, not from a cache
// level a one-layer benchmark would leave it in.
func BenchmarkAttendDecode(b *testing.B) {
	const ctx, layers, heads, kvHeads, hd = 4096, 16, 32, 8, 64
	for _, typ := range []Type{F16, Q8_0} {
		c, q, out := benchCache(b, typ, layers, ctx, kvHeads, hd, heads)
		p := AttnParams{Scale: 0.125}
		var s Scratch
		b.Run(fmt.Sprintf("%v/head", typ), func(b *testing.B) {
			for range b.N {
				for l := range layers {
					for h := range heads {
						c.AttendHead(l, ctx-1, h, heads, q[h*hd:(h+1)*hd], p, out[h*hd:(h+1)*hd], &s)
					}
				}
			}
		})
		b.Run(fmt.Sprintf("%v/group", typ), func(b *testing.B) {
			const g = heads / kvHeads
			for range b.N {
				for l := range layers {
					for kvh := range kvHeads {
						c.AttendGroup(l, ctx-1, kvh, heads, q[kvh*g*hd:(kvh+1)*g*hd], p, out[kvh*g*hd:(kvh+1)*g*hd], &s)
					}
				}
			}
		})
	}
}

// BenchmarkAttendPrefill measures the attention of 64 consecutive tokens
// at a depth of about 3500 (a prefill step's rows) in the BenchmarkAttendDecode layer:
// head by head, by group row by row, and in blocks of rows (AttendBlock).
func BenchmarkAttendPrefill(b *testing.B) {
	const ctx, heads, kvHeads, hd, rows = 3600, 32, 8, 64, 64
	c, q, out := benchCache(b, F16, 1, ctx, kvHeads, hd, rows*heads)
	p := AttnParams{Scale: 0.125}
	var s Scratch
	b.Run("head", func(b *testing.B) {
		for range b.N {
			for pos := ctx - rows; pos < ctx; pos++ {
				for h := range heads {
					c.AttendHead(0, pos, h, heads, q[h*hd:(h+1)*hd], p, out[h*hd:(h+1)*hd], &s)
				}
			}
		}
	})
	b.Run("group", func(b *testing.B) {
		const g = heads / kvHeads
		for range b.N {
			for pos := ctx - rows; pos < ctx; pos++ {
				for kvh := range kvHeads {
					o := (pos-ctx+rows)*heads*hd + kvh*g*hd
					c.AttendGroup(0, pos, kvh, heads, q[o:o+g*hd], p, out[o:o+g*hd], &s)
				}
			}
		}
	})
	for _, br := range []int{8, 16, 32} {
		b.Run(fmt.Sprintf("block%d", br), func(b *testing.B) {
			const g = heads / kvHeads
			for range b.N {
				for r0 := 0; r0 < rows; r0 += br {
					for kvh := range kvHeads {
						o := r0*heads*hd + kvh*g*hd
						c.AttendBlock(0, ctx-rows+r0, br, kvh, heads, q[o:], heads*hd, p, out[o:], heads*hd, &s)
					}
				}
			}
		})
	}
}

// TestAttendBlockMatchesGroup: a block of consecutive rows attended
// together gives each row AttendGroup's bits, on every layout and cache
// type, with the default ranges and with ranges of 23 positions (blocks
// straddling a change in the number of ranges), for chunks of odd sizes
// stored as prefill stores them.
func TestAttendBlockMatchesGroup(t *testing.T) {
	for _, tc := range attendCases() {
		for _, rangeN := range []int{0, 23} {
			t.Run(fmt.Sprintf("%v/%s/ranges%d", tc.typ, tc.name, rangeN), func(t *testing.T) {
				testAttendBlock(t, tc, rangeN)
			})
		}
	}
}

func testAttendBlock(t *testing.T, tc attendCase, rangeN int) {
	const n, maxChunk = 300, 37
	g := Geometry{Type: tc.typ, Layers: 1, KVHeads: tc.kvh, HeadDim: tc.hd, Context: n, Chunk: maxChunk}
	if tc.window > 0 {
		g.Window = []int{tc.window}
	}
	var c *Cache
	var err error
	if tc.block == 0 {
		c, err = New(g)
	} else {
		c, err = NewIn(NewPool(PoolConfig{Type: tc.typ, BlockTokens: tc.block}), g)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.rangeN = rangeN
	p := AttnParams{Scale: 1 / float32(math.Sqrt(float64(tc.hd))), Softcap: tc.cap}
	gq := tc.heads / tc.kvh
	qDim := tc.heads * tc.hd
	rng := rand.New(rand.NewPCG(3, uint64(tc.hd)))
	k, v := make([]float32, tc.kvh*tc.hd), make([]float32, tc.kvh*tc.hd)
	var s, sb Scratch
	blocks := 0
	for pos := 0; pos < n; {
		rows := min(n-pos, 1+rng.IntN(maxChunk))
		if err := c.Prepare(pos, rows); err != nil {
			t.Fatal(err)
		}
		for j := range rows {
			for i := range k {
				k[i], v[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
			}
			c.Store(0, pos+j, k, v)
		}
		q := make([]float32, rows*qDim)
		for i := range q {
			q[i] = float32(rng.NormFloat64())
		}
		want, got := make([]float32, rows*qDim), make([]float32, rows*qDim)
		for j := range rows {
			for kvh := range tc.kvh {
				o := j*qDim + kvh*gq*tc.hd
				c.AttendGroup(0, pos+j, kvh, tc.heads, q[o:o+gq*tc.hd], p, want[o:o+gq*tc.hd], &s)
			}
		}
		// Blocks of odd sizes within the chunk.
		for j0 := 0; j0 < rows; {
			b := min(rows-j0, 1+rng.IntN(13))
			for kvh := range tc.kvh {
				o := j0*qDim + kvh*gq*tc.hd
				c.AttendBlock(0, pos+j0, b, kvh, tc.heads, q[o:], qDim, p, got[o:], qDim, &sb)
			}
			blocks++
			j0 += b
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("chunk at %d: row %d output %d = %v, AttendGroup gives %v", pos, i/qDim, i%qDim, got[i], want[i])
			}
		}
		pos += rows
	}
	if blocks == 0 {
		t.Fatal("no block attended")
	}
}

// BenchmarkAttendPrefillSoftcap is BenchmarkAttendPrefill in a Gemma-2-9B
// layer (16 query heads on 8 KV heads of 256, scores soft-capped at 50),
// by group row by row and in blocks of 32 rows (the 64 query vectors a
// step's block takes).
func BenchmarkAttendPrefillSoftcap(b *testing.B) {
	const ctx, heads, kvHeads, hd, rows, g = 3600, 16, 8, 256, 64, 2
	c, q, out := benchCache(b, F16, 1, ctx, kvHeads, hd, rows*heads)
	p := AttnParams{Scale: 1.0 / 16, Softcap: 50}
	var s Scratch
	b.Run("group", func(b *testing.B) {
		for range b.N {
			for j := range rows {
				for kvh := range kvHeads {
					o := j*heads*hd + kvh*g*hd
					c.AttendGroup(0, ctx-rows+j, kvh, heads, q[o:o+g*hd], p, out[o:o+g*hd], &s)
				}
			}
		}
	})
	b.Run("block32", func(b *testing.B) {
		for range b.N {
			for r0 := 0; r0 < rows; r0 += 32 {
				for kvh := range kvHeads {
					o := r0*heads*hd + kvh*g*hd
					c.AttendBlock(0, ctx-rows+r0, 32, kvh, heads, q[o:], heads*hd, p, out[o:], heads*hd, &s)
				}
			}
		}
	})
}
