//go:build !purego

package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkAttnGroup is attention's kernels on one GQA group of a decode
// step at depth 512 (heads of 64 or 128, four query heads a group as
// Llama-3, seven as Qwen2.5; heads of 256 two a group as Gemma-2), or a
// tile of prefill's queries: the scores of the group's queries against
// the keys and its heads' sums of the values, f16 (keys in lanes) and q8_0 rows. Each
// tier's grouped kernels run against the AVX2 tier's one-query (one-head)
// kernels in turn — what the avx2 tier ran before it had grouped kernels —
// and against the AVX-512 scores as they were before the two- and
// three-query kernels (q4AndSingles); with -rounds the variants alternate
// in one process.
func BenchmarkAttnGroup(b *testing.B) {
	type variant struct {
		name string
		run  func()
	}
	var vs []variant
	const n = 512
	r := rand.New(rand.NewPCG(95, 96))
	for _, sh := range []struct{ hd, g int }{{64, 4}, {128, 4}, {128, 7}, {256, 2}} {
		hd, g := sh.hd, sh.g
		f16 := randomF16(r, n*2*hd)
		q8 := make([]byte, n*hd/32*34)
		for i := range n {
			Quantize(Q8_0, gaussian(r, hd, 1), q8[i*hd/32*34:(i+1)*hd/32*34])
		}
		q := gaussian(r, g*hd, 1)
		w := gaussian(r, g*n, 0.05)
		scores := make([]float32, g*n)
		o := make([]float32, g*hd)
		kinds := []struct {
			name       string
			tier       func(k *kernelSet)
			one, q4512 func()
		}{
			{"F16Keys", func(k *kernelSet) { k.dotsF16Keys(f16, n/8, q, hd, scores, n) }, nil, nil},
			{"Q8Queries", func(k *kernelSet) { k.dotsQ8Queries(q8, hd/32*34, q, hd, scores, n, n) },
				func() { queryByQuery(dotsQ8AVX2, q8, hd/32*34, q, hd, scores, n, n) },
				func() { q4AndSingles(dotsQ8Q4AVX512Asm, dotsQ8AVX512, hd/32*34, q8, hd/32*34, q, hd, scores, n, n) }},
			{"F16Heads", func(k *kernelSet) { k.axpysF16Heads(w, n, n, f16, 2*hd, o, hd) },
				func() {
					for h := range g {
						axpysF16AVX2(w[h*n:(h+1)*n], f16, 2*hd, o[h*hd:(h+1)*hd])
					}
				}, nil},
			{"Q8Heads", func(k *kernelSet) { k.axpysQ8Heads(w, n, n, q8, hd/32*34, o, hd) },
				func() {
					for h := range g {
						axpysQ8AVX2Asm(&w[h*n], &q8[0], hd/32*34, n, &o[h*hd], hd)
					}
				}, nil},
		}
		for _, kind := range kinds {
			prefix := fmt.Sprintf("%s/hd=%d/g=%d/", kind.name, hd, g)
			for _, k := range hostKernels() {
				vs = append(vs, variant{prefix + k.tier.String(), func() { kind.tier(k) }})
			}
			if kind.one != nil {
				vs = append(vs, variant{prefix + "avx2-one-by-one", kind.one})
			}
			if kind.q4512 != nil && len(hostKernels()) > 1 {
				vs = append(vs, variant{prefix + "avx512vnni-q4-and-singles", kind.q4512})
			}
		}
	}
	for range *rounds {
		for _, v := range vs {
			b.Run(v.name, func(b *testing.B) {
				for b.Loop() {
					v.run()
				}
			})
		}
	}
}

// q4AndSingles is the avx512vnni tier's scores before it had two- and
// three-query kernels: four queries at a time, the rest one by one.
func q4AndSingles(q4 queriesKernel, one func(k []byte, stride int, q, out []float32),
	rb int, k []byte, stride int, q []float32, hd int, out []float32, os, n int) {
	nq := len(q) / hd &^ 3
	if nq > 0 {
		queriesAVX512(&[3]queriesKernel{nil, nil, q4}, one, rb, k, stride, q[:nq*hd], hd, out, os, n)
	}
	queryByQuery(one, k, stride, q[nq*hd:], hd, out[nq*os:], os, n)
}
