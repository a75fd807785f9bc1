//go:build !purego

package kernels

import (
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
)

// BenchmarkAttnGroup is attention's kernels on one GQA group of a decode
// step at depth 512 (four query heads of 128, Llama-3's shape), or four
// queries of a prefill tile: the scores of the four queries against the
// keys and the four heads' sums of the values, f16 and q8_0 rows. Each
// tier's grouped kernel runs against the AVX2 tier's one-query (one-head)
// kernels in turn — what the avx2 tier ran before it had grouped kernels —
// and with -rounds the variants alternate in one process.
func BenchmarkAttnGroup(b *testing.B) {
	const hd, n, g = 128, 512, 4
	r := rand.New(rand.NewPCG(95, 96))
	f16 := randomF16(r, n*2*hd)
	q8 := make([]byte, n*hd/32*34)
	for i := range n {
		Quantize(Q8_0, gaussian(r, hd, 1), q8[i*hd/32*34:(i+1)*hd/32*34])
	}
	q := gaussian(r, g*hd, 1)
	w := gaussian(r, g*n, 0.05)
	scores := make([]float32, g*n)
	o := make([]float32, g*hd)
	type variant struct {
		name string
		run  func()
	}
	var vs []variant
	for _, k := range hostKernels() {
		t := k.tier.String()
		vs = append(vs,
			variant{"F16Queries/" + t, func() { k.dotsF16Queries(f16, 2*hd, q, hd, scores, n, n) }},
			variant{"Q8Queries/" + t, func() { k.dotsQ8Queries(q8, hd/32*34, q, hd, scores, n, n) }},
			variant{"F16Heads/" + t, func() { k.axpysF16Heads(w, n, n, f16, 2*hd, o, hd) }},
			variant{"Q8Heads/" + t, func() { k.axpysQ8Heads(w, n, n, q8, hd/32*34, o, hd) }})
	}
	vs = append(vs,
		variant{"F16Queries/avx2-one-by-one", func() { queryByQuery(dotsF16AVX2, f16, 2*hd, q, hd, scores, n, n) }},
		variant{"Q8Queries/avx2-one-by-one", func() { queryByQuery(dotsQ8AVX2, q8, hd/32*34, q, hd, scores, n, n) }},
		variant{"F16Heads/avx2-one-by-one", func() {
			for h := range g {
				axpysF16AVX2(w[h*n:(h+1)*n], f16, 2*hd, o[h*hd:(h+1)*hd])
			}
		}},
		variant{"Q8Heads/avx2-one-by-one", func() {
			for h := range g {
				axpysQ8AVX2Asm(&w[h*n], &q8[0], hd/32*34, n, &o[h*hd], hd)
			}
		}})
	// Each kernel's variants side by side.
	sort.SliceStable(vs, func(i, j int) bool {
		return strings.Split(vs[i].name, "/")[0] < strings.Split(vs[j].name, "/")[0]
	})
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
