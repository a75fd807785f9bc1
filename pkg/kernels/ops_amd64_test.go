//go:build !purego

package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestExpSubAVX512Lanes: the AVX-512 expSub's lanes are the AVX2 one's
// bits (TestExpKernels bounds both against e^x), from -Inf, through the
// clamps at -87.3 and 88, to NaN, at lengths around its sixteen lanes.
func TestExpSubAVX512Lanes(t *testing.T) {
	if len(hostKernels()) < 2 {
		t.Skip("no avx512vnni tier on this host")
	}
	r := rand.New(rand.NewPCG(97, 98))
	for _, n := range []int{1, 15, 16, 17, 40, 1000} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.Float64()*200 - 100)
		}
		x[n/2], x[n-1] = float32(math.Inf(-1)), float32(math.NaN())
		if n > 3 {
			x[1], x[2] = -87.3, 88
		}
		want := append([]float32(nil), x...)
		expSubAVX2(want, -0.5)
		expSubAVX512(x, -0.5)
		for i := range x {
			if math.Float32bits(x[i]) != math.Float32bits(want[i]) && !(x[i] != x[i] && want[i] != want[i]) {
				t.Fatalf("n=%d: lane %d: %v, AVX2 %v", n, i, x[i], want[i])
			}
		}
	}
}

// BenchmarkExpSub is softmax's exponential over a row of 4096 scores (a
// prefill at depth) and of 64 (a short one), the AVX2 kernel and the
// AVX-512 one; with -rounds they alternate in one process. The row is
// exponentiated again and again in place: the kernels have no branch, so
// their cost does not depend on the values.
func BenchmarkExpSub(b *testing.B) {
	if len(hostKernels()) < 2 {
		b.Skip("no avx512vnni tier on this host")
	}
	x := gaussian(rand.New(rand.NewPCG(99, 100)), 4096, 3)
	for range *rounds {
		for _, n := range []int{4096, 64} {
			for _, v := range []struct {
				name string
				f    func(x []float32, m float32) float32
			}{{"avx2", expSubAVX2}, {"avx512", expSubAVX512}} {
				b.Run(fmt.Sprintf("n=%d/%s", n, v.name), func(b *testing.B) {
					for b.Loop() {
						v.f(x[:n], 9)
					}
				})
			}
		}
	}
}
