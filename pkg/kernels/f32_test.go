package kernels

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// dotF32LanesModel is the twin of the assembly tiers' F32 kernels
// (internal/asmgen/f32.go): the first n&^31 columns in 32 float32 lanes,
// column i fused into lane i mod 32; the lanes added pairwise (l and l+16,
// then l+8, l+4, l+2, l+1); the remaining columns fused into the sum in
// order.
func dotF32LanesModel(w []byte, x []float32) float32 {
	n := len(x)
	m := n &^ 31
	var acc [32]float32
	for i := range m {
		acc[i%32] = fma32(math.Float32frombits(binary.LittleEndian.Uint32(w[4*i:])), x[i], acc[i%32])
	}
	for h := 16; h >= 1; h /= 2 {
		for l := range h {
			acc[l] += acc[l+h]
		}
	}
	s := acc[0]
	for i := m; i < n; i++ {
		s = fma32(math.Float32frombits(binary.LittleEndian.Uint32(w[4*i:])), x[i], s)
	}
	return s
}

// f32Lengths cover no whole block, whole blocks, and every tail length
// around them.
var f32Lengths = []int{0, 1, 5, 31, 32, 33, 63, 64, 95, 96, 127, 200, 2048, 2048 + 17}

// TestF32KernelsMatchTwin checks every assembly tier's F32 kernels — the
// one-row dot through DotF32 and DotQ, the several-row decode kernel, the
// prefill tile —
// against dotF32LanesModel bit for bit, at odd lengths (every tail),
// misaligned weight and activation offsets, and with guard bands around
// the decode kernel's output. The reference tier is checked against its
// float64 sum.
func TestF32KernelsMatchTwin(t *testing.T) {
	r := rand.New(rand.NewPCG(45, 46))
	for _, k := range allTiers() {
		t.Run(k.tier.String(), func(t *testing.T) {
			useTier(t, k)
			want := dotF32LanesModel
			if k.tier == TierGeneric {
				want = dotF32F32Generic
			}
			for _, n := range f32Lengths {
				for _, off := range []int{0, 1, 3} { // bytes of w, floats of x
					const rows = 9
					wrb := 4*n + 4*off // rows padded: each row misaligned differently
					wbuf := quantize(F32, gaussian(r, (rows*wrb+off)/4+1, 0.1))
					xbuf := gaussian(r, n+off, 1)
					x := xbuf[off:]
					xq := quantize(F32, xbuf)[4*off:]
					for row := range rows {
						w := wbuf[off+row*wrb : off+row*wrb+4*n]
						exp := want(w, x)
						if got := DotF32(F32, w, x); math.Float32bits(got) != math.Float32bits(exp) {
							t.Fatalf("n=%d off=%d row %d: DotF32 = %v, twin %v", n, off, row, got, exp)
						}
						if got := DotQ(F32, n, w, xq); math.Float32bits(got) != math.Float32bits(exp) {
							t.Fatalf("n=%d off=%d row %d: DotQ = %v, twin %v", n, off, row, got, exp)
						}
					}
					testTileF32(t, k, r, n, off, wbuf[off:], wrb)
					cols := k.colsF32
					if cols.n == 0 {
						continue
					}
					const guard = 3
					for lo := 0; lo+cols.n <= rows; lo += cols.n {
						buf := make([]float32, cols.n+2*guard)
						for i := range buf {
							buf[i] = 12345
						}
						// The group's last row ends where its data does.
						w := wbuf[off+lo*wrb : off+(lo+cols.n-1)*wrb+4*n]
						cols.f(w, wrb, x, buf[guard:guard+cols.n])
						for i := range guard {
							if buf[i] != 12345 || buf[len(buf)-1-i] != 12345 {
								t.Fatalf("n=%d off=%d: guard band overwritten: %v", n, off, buf)
							}
						}
						for c := range cols.n {
							exp := want(wbuf[off+(lo+c)*wrb:off+(lo+c)*wrb+4*n], x)
							if got := buf[guard+c]; math.Float32bits(got) != math.Float32bits(exp) {
								t.Fatalf("n=%d off=%d rows %d+%d: cols = %v, twin %v", n, off, lo, c, got, exp)
							}
						}
					}
				}
			}
		})
	}
}

// testTileF32 checks k's tile kernel, if any, on its weight rows at w
// (stride wrb, n columns) against R fresh activation rows placed off floats
// into a buffer, with guard bands around and between its output rows.
func testTileF32(t *testing.T, k *kernelSet, r *rand.Rand, n, off int, w []byte, wrb int) {
	t.Helper()
	tile := k.tileF32
	if tile.c == 0 {
		return
	}
	C, R := tile.c, tile.r
	x := gaussian(r, off+R*n, 1)[off:]
	const guard, fill = 2, 12345
	ostride := C + guard
	buf := make([]float32, 2*guard+(R-1)*ostride+C)
	for i := range buf {
		buf[i] = fill
	}
	tile.f(w[:(C-1)*wrb+4*n], wrb, x, n, buf[guard:guard+(R-1)*ostride+C], ostride)
	for i, v := range buf {
		o := i - guard
		inside := o >= 0 && o%ostride < C && o/ostride < R
		if !inside {
			if v != fill {
				t.Fatalf("n=%d off=%d: tile wrote outside its outputs at %d", n, off, o)
			}
			continue
		}
		c, a := o%ostride, o/ostride
		exp := dotF32LanesModel(w[c*wrb:c*wrb+4*n], x[a*n:(a+1)*n])
		if math.Float32bits(v) != math.Float32bits(exp) {
			t.Fatalf("n=%d off=%d: tile row %d activation %d = %v, twin %v", n, off, c, a, v, exp)
		}
	}
}

// TestF32TwinNearFloat64 bounds the twin's float32 sums against the
// reference's float64 one: within n·2⁻²⁴·Σ|w·x| (a float32 sum of n
// terms), far below what the golden logits allow.
func TestF32TwinNearFloat64(t *testing.T) {
	r := rand.New(rand.NewPCG(47, 48))
	for _, n := range f32Lengths {
		w := gaussian(r, n, 0.1)
		x := gaussian(r, n, 1)
		got := dotF32LanesModel(quantize(F32, w), x)
		want, mag := dot64(w, x)
		if d := math.Abs(float64(got) - want); d > float64(n)*0x1p-24*mag+1e-30 {
			t.Errorf("n=%d: twin %v, float64 sum %v (|Δ| %g, Σ|w·x| %g)", n, got, want, d, mag)
		}
	}
}

// TestF32SignedZeroAndSpecials: the kernels' fused multiply-adds keep the
// twin's signed zeros, infinities and NaNs (the padding of a tail is not
// a zero product added in).
func TestF32SignedZeroAndSpecials(t *testing.T) {
	for _, k := range hostKernels() {
		useTier(t, k)
		for _, n := range []int{1, 33, 64} {
			for _, v := range []float32{float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.NaN())} {
				w := make([]float32, n)
				x := make([]float32, n)
				for i := range w {
					w[i], x[i] = float32(math.Copysign(0, -1)), 1
				}
				w[n-1] = v
				wb := quantize(F32, w)
				got, exp := DotF32(F32, wb, x), dotF32LanesModel(wb, x)
				if math.Float32bits(got) != math.Float32bits(exp) && !(got != got && exp != exp) {
					t.Errorf("%v n=%d last %v: %v (%#x), twin %v (%#x)", k.tier, n, v, got, math.Float32bits(got), exp, math.Float32bits(exp))
				}
			}
		}
	}
}

// TestF32NoAlloc: the one-row wrappers keep their result on the stack.
func TestF32NoAlloc(t *testing.T) {
	r := rand.New(rand.NewPCG(49, 50))
	w, x := quantize(F32, gaussian(r, 100, 1)), gaussian(r, 100, 1)
	xq := quantize(F32, x)
	for _, k := range allTiers() {
		useTier(t, k)
		if a := testing.AllocsPerRun(10, func() { DotF32(F32, w, x); DotQ(F32, 100, w, xq) }); a != 0 {
			t.Errorf("%v: F32 dots allocate %v times", k.tier, a)
		}
	}
}
