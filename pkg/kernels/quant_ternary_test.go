package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestTernaryRoundTrip: a block of trits times a scale comes back exactly
// from both ternary formats, at every position (the packing's order is the
// one llama-quantize writes: its files are compared tensor by tensor in
// pkg/runtime/quantize), and any input decodes to -d, 0 or d, d its largest
// magnitude.
func TestTernaryRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, typ := range []DType{TQ1_0, TQ2_0} {
		for trial := range 20 {
			n := QK_K * (1 + trial%3)
			x := make([]float32, n)
			const d = 0.75 // exact in f16
			for i := range x {
				x[i] = float32(r.IntN(3)-1) * d
			}
			x[0] = d // the block's largest magnitude is d
			for b := QK_K; b < n; b += QK_K {
				x[b] = -d
			}
			got := dequant(typ, quantize(typ, x), n)
			for i := range x {
				if got[i] != x[i] {
					t.Fatalf("%v: value %d: %v, want %v", typ, i, got[i], x[i])
				}
			}
			y := gaussian(r, n, 1)
			for b := 0; b < n; b += QK_K {
				var amax float32
				for _, v := range y[b : b+QK_K] {
					amax = max(amax, float32(math.Abs(float64(v))))
				}
				s := F16ToF32(F32ToF16(amax))
				for i, v := range dequant(typ, quantize(typ, y[b:b+QK_K]), QK_K) {
					if v != 0 && v != s && v != -s {
						t.Fatalf("%v: value %d decodes to %v, not 0 or ±%v", typ, b+i, v, s)
					}
				}
			}
		}
	}
}

// TestTernaryDot: the dot with Q8_K activations is the dequantized dot (the
// integer sum is exact; one rounding per block).
func TestTernaryDot(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, typ := range []DType{TQ1_0, TQ2_0} {
		for _, n := range []int{256, 1024, 2816} {
			w, x := gaussian(r, n, 0.05), gaussian(r, n, 1)
			wq, xq := quantize(typ, w), quantize(Q8_K, x)
			want, mag := dot64(dequant(typ, wq, n), dequant(Q8_K, xq, n))
			if got := DotQ(typ, n, wq, xq); math.Abs(float64(got)-want) > 1e-5*mag {
				t.Errorf("%v n=%d: DotQ = %v, dequantized dot = %v", typ, n, got, want)
			}
		}
	}
}
