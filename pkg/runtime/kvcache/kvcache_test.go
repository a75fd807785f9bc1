package kvcache

import (
	"errors"
	"math"
	"runtime"
	"testing"
)

// storeMeanPositions fills positions from..to-1 of layer l with zero keys and
// the value (p, 0, 0, ...) at position p: every score is equal, so a head's output
// is the mean of the positions it attends to, which makes the mask visible.
func storeMeanPositions(c *Cache, l, from, to int) {
	hd := c.Geometry().HeadDim
	k := make([]float32, hd)
	v := make([]float32, hd)
	for p := from; p < to; p++ {
		v[0] = float32(p)
		c.Store(l, p, k, v)
	}
}

func attendMean(c *Cache, l, pos int, s *Scratch) float32 {
	hd := c.Geometry().HeadDim
	q := make([]float32, hd)
	out := make([]float32, hd)
	c.AttendHead(l, pos, 0, 1, q, AttnParams{Scale: 1}, out, s)
	return out[0]
}

// TestSlidingWindowMask checks which positions a query attends to, against
// hand-computed means: with a window of 3, position p sees p-2..p (llama.cpp's
// standard SWA: key k is masked when p-k >= window); a global layer sees 0..p.
// The ring variants store a step of Chunk positions before attending, the way
// a forward pass does, so they also check that a ring of window+Chunk slots
// never overwrites a position still in view.
func TestSlidingWindowMask(t *testing.T) {
	// Mean of the visible positions for p = 0..9.
	wantWindow3 := []float32{0, 0.5, 1, 2, 3, 4, 5, 6, 7, 8}
	wantGlobal := []float32{0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5}
	tests := []struct {
		name  string
		typ   Type
		chunk int
		tol   float64
	}{
		// f16: float32 rounding of the weighted sums (the assembly tiers
		// fuse each multiply-add, the reference does not).
		{"f16 flat", F16, 0, 1e-6},
		{"f16 ring chunk 1", F16, 1, 1e-6},
		{"f16 ring chunk 4", F16, 4, 1e-6},
		{"q8_0 ring chunk 3", Q8_0, 3, 0.05}, // 9/127 steps of the block scale
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Geometry{Type: tt.typ, Layers: 2, KVHeads: 1, HeadDim: 32, Context: 10, Window: []int{3, 0}, Chunk: tt.chunk})
			if err != nil {
				t.Fatal(err)
			}
			if tt.chunk > 0 && c.layers[0].slots != 3+tt.chunk {
				t.Fatalf("window layer keeps %d slots, want window+chunk = %d", c.layers[0].slots, 3+tt.chunk)
			}
			step := max(tt.chunk, 1)
			var s Scratch
			for from := 0; from < 10; from += step {
				to := min(from+step, 10)
				storeMeanPositions(c, 0, from, to)
				storeMeanPositions(c, 1, from, to)
				for p := from; p < to; p++ {
					if got := attendMean(c, 0, p, &s); math.Abs(float64(got-wantWindow3[p])) > tt.tol {
						t.Errorf("window 3, position %d: mean of visible positions %g, want %g", p, got, wantWindow3[p])
					}
					if got := attendMean(c, 1, p, &s); math.Abs(float64(got-wantGlobal[p])) > tt.tol {
						t.Errorf("global, position %d: mean of visible positions %g, want %g", p, got, wantGlobal[p])
					}
				}
			}
		})
	}
}

// TestAttendSoftcap checks Gemma-2 score soft-capping against hand-computed
// weights: scores 3, -6, 0 capped at 5 become 5·tanh(s/5) = 2.6852478,
// -4.1682730, 0, whose softmax is 0.93522621, 0.00098735, 0.06378644.
func TestAttendSoftcap(t *testing.T) {
	c, err := New(Geometry{Type: F16, Layers: 1, KVHeads: 1, HeadDim: 32, Context: 3})
	if err != nil {
		t.Fatal(err)
	}
	q := make([]float32, 32)
	q[0] = 1
	for p, score := range []float32{3, -6, 0} {
		k := make([]float32, 32)
		v := make([]float32, 32)
		k[0] = score * 2 // Scale 0.5 below brings it back
		v[p] = 1         // output component p is the weight of position p
		c.Store(0, p, k, v)
	}
	tests := []struct {
		name    string
		softcap float32
		want    [3]float64
	}{
		{"capped at 5", 5, [3]float64{0.93522621, 0.00098735, 0.06378644}},
		// Uncapped: softmax(3, -6, 0).
		{"no cap", 0, [3]float64{0.95246216, 0.00011754, 0.04742030}},
	}
	for _, tt := range tests {
		out := make([]float32, 32)
		c.AttendHead(0, 2, 0, 1, q, AttnParams{Scale: 0.5, Softcap: tt.softcap}, out, new(Scratch))
		for i, w := range tt.want {
			if math.Abs(float64(out[i])-w) > 2e-4 { // f16 values
				t.Errorf("%s: weight of position %d = %.6f, want %.6f", tt.name, i, out[i], w)
			}
		}
	}
}

// TestQ8MemoryHalf measures the memory of a q8_0 cache against an f16 one:
// 34 bytes per 32 elements against 64, i.e. 53.1% — half of f16's plus the
// block scales, within 5 points of one half. Bytes (the estimate admission
// uses) must equal what is really allocated.
func TestQ8MemoryHalf(t *testing.T) {
	g := Geometry{Layers: 4, KVHeads: 8, HeadDim: 128, Context: 1024, Window: []int{256, 0, 256, 0}, Chunk: 64}
	measure := func(typ Type) (estimate, held, heap int64) {
		g := g
		g.Type = typ
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c, err := New(g)
		if err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		heap = int64(after.TotalAlloc - before.TotalAlloc)
		runtime.KeepAlive(c)
		return c.Bytes(), c.Allocated(), heap
	}
	f16Est, f16Held, f16Heap := measure(F16)
	q8Est, q8Held, q8Heap := measure(Q8_0)
	for _, m := range []struct {
		name            string
		est, held, heap int64
	}{{"f16", f16Est, f16Held, f16Heap}, {"q8_0", q8Est, q8Held, q8Heap}} {
		if m.est != m.held {
			t.Errorf("%s: Bytes() = %d but the cache holds %d", m.name, m.est, m.held)
		}
		// The heap also carries the Cache struct and slice headers.
		if m.heap < m.held || m.heap > m.held+m.held/100+4096 {
			t.Errorf("%s: heap grew by %d bytes for a cache of %d", m.name, m.heap, m.held)
		}
	}
	ratio := float64(q8Held) / float64(f16Held)
	t.Logf("KV bytes: f16 %d, q8_0 %d, ratio %.4f (heap growth %d / %d)", f16Held, q8Held, ratio, f16Heap, q8Heap)
	if ratio != 34.0/64 {
		t.Errorf("q8_0/f16 ratio %.5f, want 34/64", ratio)
	}
	if math.Abs(ratio-0.5) > 0.05 {
		t.Errorf("q8_0/f16 ratio %.4f is not within 5 points of one half", ratio)
	}
}

// TestRingStopsGrowing checks that a sliding-window layer's memory is
// window+chunk slots whatever the context, while a global layer grows with it.
func TestRingStopsGrowing(t *testing.T) {
	row := int64(2 * 2 * 64 * 2) // K and V, 2 heads of 64 f16
	for _, ctx := range []int{1024, 4096, 32768} {
		g := Geometry{Type: F16, Layers: 2, KVHeads: 2, HeadDim: 64, Context: ctx, Window: []int{512, 0}, Chunk: 128}
		want := (512+128)*row + int64(ctx)*row
		if got := g.Bytes(); got != want {
			t.Errorf("context %d: %d bytes, want %d (640 ring slots + %d)", ctx, got, want, ctx)
		}
	}
	// A window wider than the context needs no ring.
	g := Geometry{Type: F16, Layers: 2, KVHeads: 2, HeadDim: 64, Context: 256, Window: []int{512, 0}, Chunk: 128}
	if got, want := g.Bytes(), 2*256*row; got != want {
		t.Errorf("window > context: %d bytes, want %d", got, want)
	}
}

func TestCheckStep(t *testing.T) {
	ring, err := New(Geometry{Type: F16, Layers: 2, KVHeads: 1, HeadDim: 32, Context: 256, Window: []int{32, 0}, Chunk: 12})
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.CheckStep(12); err != nil {
		t.Errorf("a step of Chunk positions: %v", err)
	}
	if err := ring.CheckStep(13); !errors.Is(err, ErrStepTooLarge) {
		t.Errorf("a step of Chunk+1 positions: got %v, want ErrStepTooLarge", err)
	}
	flat, err := New(Geometry{Type: F16, Layers: 2, KVHeads: 1, HeadDim: 32, Context: 256, Chunk: 12})
	if err != nil {
		t.Fatal(err)
	}
	if err := flat.CheckStep(200); err != nil {
		t.Errorf("a cache without rings limits steps: %v", err)
	}
}

func TestQ8NeedsHeadsOf32(t *testing.T) {
	if _, err := New(Geometry{Type: Q8_0, Layers: 1, KVHeads: 1, HeadDim: 48, Context: 8}); err == nil {
		t.Error("q8_0 cache with 48-wide heads was accepted")
	}
}
