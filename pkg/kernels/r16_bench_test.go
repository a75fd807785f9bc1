package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkR16Kernel is one LayoutR16 group (16 rows × 2048 columns: 18–35
// KiB of weights, in L1/L2) against 1, 2, 4 and 8 activation rows, one
// kernel call per op, on every assembly tier: the kernels' arithmetic speed
// without the pool or memory in the way (GOP/s). On a shared host take the
// best of several runs (-count).
func BenchmarkR16Kernel(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	const cols = 2048
	for _, typ := range r16Types {
		nb := cols / r16Cols(typ)
		for _, R := range []int{1, 2, 4, 8} {
			w, xq := randomMatrix(r, typ, R16, R, nb)
			xq, xrb := r16X(typ, xq, R, nb)
			size, _ := LayoutBytes(typ, LayoutR16, R16, cols)
			packed := make([]byte, size)
			RepackR16(typ, packed, w, cols)
			out := make([]float32, R*R16)
			b.Run(fmt.Sprintf("%v/R=%d", typ, R), func(b *testing.B) {
				benchTiersOf(b, hostKernels(), func(b *testing.B) {
					f := kern.r16[typ]
					for b.Loop() {
						f(packed, nb, xq, xrb, R, out, R16)
					}
					b.ReportMetric(2*R16*cols*float64(R)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOP/s")
				})
			})
		}
	}
}
