package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestAxpysF16Heads: on every tier, exactly what one AxpysF16 per head
// gives, for groups of 1 to 8 heads (the AVX-512 kernels take four at a
// time), head sizes with and without a multiple of 64, weights at a stride
// past their count, misaligned rows and a guard after the outputs.
func TestAxpysF16Heads(t *testing.T) {
	r := rand.New(rand.NewPCG(73, 74))
	for _, k := range allTiers() {
		useTier(t, k)
		for _, hd := range []int{32, 64, 128, 256} {
			for g := 1; g <= 8; g++ {
				for _, n := range []int{1, 7, 40} {
					stride := 2*hd + 34
					v := misalign(randomF16(r, (n-1)*stride+2*hd), g%3+1)
					ws := n + g%3
					w := gaussian(r, (g-1)*ws+n, 1)
					o := gaussian(r, g*hd+1, 1)
					want := append([]float32(nil), o...)
					for h := range g {
						AxpysF16(w[h*ws:h*ws+n], v, stride, want[h*hd:(h+1)*hd])
					}
					AxpysF16Heads(w, ws, n, v, stride, o[:g*hd], hd)
					for j := range o {
						if math.Float32bits(o[j]) != math.Float32bits(want[j]) {
							t.Fatalf("%s hd=%d g=%d n=%d: o[%d] = %v, head by head %v", k.tier, hd, g, n, j, o[j], want[j])
						}
					}
				}
			}
		}
	}
}

// TestExpMax: ExpMax returns the max, and a scaling by 1/sum after it is
// Softmax, bit for bit, on every tier.
func TestExpMax(t *testing.T) {
	r := rand.New(rand.NewPCG(75, 76))
	for _, k := range allTiers() {
		useTier(t, k)
		for _, n := range []int{1, 7, 8, 33, 300} {
			x := gaussian(r, n, 3)
			want := append([]float32(nil), x...)
			Softmax(want)
			top := x[0]
			for _, v := range x {
				top = max(top, v)
			}
			m, sum := ExpMax(x)
			if m != top {
				t.Fatalf("%s n=%d: max %v, want %v", k.tier, n, m, top)
			}
			Scale(x, 1/sum)
			for i := range x {
				if x[i] != want[i] {
					t.Fatalf("%s n=%d: %d: %v, Softmax %v (max %v)", k.tier, n, i, x[i], want[i], m)
				}
			}
		}
	}
}

// TestAxpysQ8_0Heads: on every tier, exactly what the tier gives head by
// head, and within float32 rounding of the sums in float64 of w·x, x the
// dequantised rows; groups of 1 to 8 heads, head sizes with and without a
// multiple of 64, misaligned rows, a guard after the outputs.
func TestAxpysQ8_0Heads(t *testing.T) {
	r := rand.New(rand.NewPCG(79, 80))
	for _, k := range allTiers() {
		useTier(t, k)
		for _, hd := range []int{32, 64, 128, 256} {
			rb := hd / 32 * 34
			for g := 1; g <= 8; g++ {
				for _, n := range []int{1, 7, 40} {
					stride := rb + 10
					raw := make([]byte, (n-1)*stride+rb)
					for i := range n {
						Quantize(Q8_0, gaussian(r, hd, 1), raw[i*stride:i*stride+rb])
					}
					v := misalign(raw, g%3+1)
					ws := n + g%3
					w := gaussian(r, (g-1)*ws+n, 0.2)
					o := gaussian(r, g*hd+1, 1)
					want := append([]float32(nil), o...)
					for h := range g {
						AxpysQ8_0Heads(w[h*ws:h*ws+n], ws, n, v, stride, want[h*hd:(h+1)*hd], hd)
					}
					ref := make([]float64, g*hd)
					for h := range g {
						for j := range hd {
							ref[h*hd+j] = float64(o[h*hd+j])
						}
						for i := range n {
							x := dequant(Q8_0, v[i*stride:i*stride+rb], hd)
							for j := range hd {
								ref[h*hd+j] += float64(w[h*ws+i]) * float64(x[j])
							}
						}
					}
					AxpysQ8_0Heads(w, ws, n, v, stride, o[:g*hd], hd)
					for j := range o {
						if math.Float32bits(o[j]) != math.Float32bits(want[j]) {
							t.Fatalf("%s hd=%d g=%d n=%d: o[%d] = %v, head by head %v", k.tier, hd, g, n, j, o[j], want[j])
						}
						if j < g*hd && math.Abs(float64(o[j])-ref[j]) > 1e-5*(1+math.Abs(ref[j])) {
							t.Fatalf("%s hd=%d g=%d n=%d: o[%d] = %v, float64 sums %v", k.tier, hd, g, n, j, o[j], ref[j])
						}
					}
				}
			}
		}
	}
}

// TestDotsQ8_0: every tier's DotsQ8_0 against DotF32 row by row (the
// reference exactly, the others within float32 summation error), on row
// counts around blocks of sixteen, misaligned rows and a guard after out;
// and a row's score is the same bits alone as anywhere in a call.
func TestDotsQ8_0(t *testing.T) {
	r := rand.New(rand.NewPCG(81, 82))
	for _, k := range allTiers() {
		useTier(t, k)
		for _, hd := range []int{32, 64, 96, 128, 256, 288} {
			rb := hd / 32 * 34
			for _, n := range []int{1, 15, 16, 17, 33, 64} {
				stride := rb + 2*(n%3) + 1
				raw := make([]byte, (n-1)*stride+rb)
				for i := range n {
					Quantize(Q8_0, gaussian(r, hd, 1), raw[i*stride:i*stride+rb])
				}
				kb := misalign(raw, n%5+1)
				q := gaussian(r, hd, 1)
				out := make([]float32, n+1)
				out[n] = 42
				DotsQ8_0(kb, stride, q, out[:n])
				if out[n] != 42 {
					t.Fatalf("%s: wrote past out", k.tier)
				}
				for i := range n {
					row := kb[i*stride : i*stride+rb]
					want := DotF32(Q8_0, row, q)
					_, mag := dot64(dequant(Q8_0, row, hd), q)
					if k == genericKernels && out[i] != want || math.Abs(float64(out[i]-want)) > 1e-6*mag+1e-30 {
						t.Fatalf("%s hd=%d n=%d: out[%d] = %v, DotF32 %v", k.tier, hd, n, i, out[i], want)
					}
					one := make([]float32, 1)
					DotsQ8_0(row, stride, q, one)
					if math.Float32bits(one[0]) != math.Float32bits(out[i]) {
						t.Fatalf("%s hd=%d n=%d: row %d scores %v alone, %v in the call", k.tier, hd, n, i, one[0], out[i])
					}
				}
			}
		}
	}
}

// TestDotsQueries: on every tier, DotsQ8_0Queries gives each query
// DotsQ8_0's bits, for 1 to 9 queries (both tiers' kernels take two to
// four; the AVX-512 ones eight rows at a time for two queries, four for
// three or four), row counts around multiples of four, eight and sixteen,
// head sizes the grouped kernels take and those they leave, misaligned
// rows and guards between and after the queries' scores.
func TestDotsQueries(t *testing.T) {
	r := rand.New(rand.NewPCG(83, 84))
	const guard = 42
	for _, k := range allTiers() {
		useTier(t, k)
		for _, hd := range []int{32, 64, 96, 256, 288} {
			rb := hd / 32 * 34
			for _, n := range []int{1, 3, 4, 5, 7, 8, 9, 16, 23, 37, 64} {
				stride := rb + 2*(n%3) + 2
				raw := make([]byte, (n-1)*stride+rb)
				for i := range n {
					Quantize(Q8_0, gaussian(r, hd, 1), raw[i*stride:i*stride+rb])
				}
				kb := misalign(raw, n%5+1)
				for nq := 1; nq <= 9; nq++ {
					q := gaussian(r, nq*hd, 1)
					os := n + nq%3
					out := make([]float32, nq*os+1)
					for i := range out {
						out[i] = guard
					}
					DotsQ8_0Queries(kb, stride, q, hd, out[:(nq-1)*os+n], os, n)
					want := make([]float32, n)
					for j := range nq {
						DotsQ8_0(kb, stride, q[j*hd:(j+1)*hd], want)
						for i := range os {
							got := out[j*os+i]
							if i >= n && got != guard {
								t.Fatalf("%s hd=%d n=%d queries %d: wrote past query %d's scores", k.tier, hd, n, nq, j)
							}
							if i < n && math.Float32bits(got) != math.Float32bits(want[i]) {
								t.Fatalf("%s hd=%d n=%d queries %d: query %d row %d = %v, alone %v", k.tier, hd, n, nq, j, i, got, want[i])
							}
						}
					}
					if out[nq*os] != guard {
						t.Fatalf("%s: wrote past out", k.tier)
					}
				}
			}
		}
	}
}

// TestDotsQueriesAllocateNothing: the multi-query score kernels run per
// tile of every attention; an allocation per call (a tail block escaping
// to the heap) grows the garbage collector's heap target, and a server's
// resident memory with it, by the size of the KV cache.
func TestDotsQueriesAllocateNothing(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	const hd, n = 128, 37 // rows not a multiple of any kernel's block
	f16 := randomF16(r, 5*16*hd)
	q8 := make([]byte, n*hd/32*34)
	for i := range n {
		Quantize(Q8_0, gaussian(r, hd, 1), q8[i*hd/32*34:(i+1)*hd/32*34])
	}
	for _, nq := range []int{1, 2, 3, 4, 7} {
		q := gaussian(r, nq*hd, 1)
		out := make([]float32, nq*n)
		f := testing.AllocsPerRun(20, func() { DotsF16Keys(f16, 4, q, hd, out, n) })
		g := testing.AllocsPerRun(20, func() { DotsQ8_0Queries(q8, hd/32*34, q, hd, out, n, n) })
		if f != 0 || g != 0 {
			t.Errorf("%d queries: %v (f16) and %v (q8_0) allocations per call, want 0", nq, f, g)
		}
	}
}

// TestDotsF16Keys: on every tier, DotsF16Keys gives the reference's bits
// for 1 to 9 queries (the assembly takes four, then one to three, over
// groups of eight, two, three or four, one at the tail), head widths of
// any size, misaligned keys and guards between and after the queries'
// scores; and the reference is the dot, within float32 summation error.
func TestDotsF16Keys(t *testing.T) {
	r := rand.New(rand.NewPCG(85, 86))
	const guard = 42
	for _, k := range allTiers() {
		for _, hd := range []int{1, 3, 32, 64, 96, 128, 256} {
			for _, groups := range []int{1, 2, 3, 4, 5, 7, 8, 9, 17} {
				kb := misalign(randomF16(r, groups*16*hd), groups%5+1)
				for nq := 1; nq <= 9; nq++ {
					q := gaussian(r, nq*hd, 1)
					os := 8*groups + nq%3
					got, want := make([]float32, nq*os+1), make([]float32, nq*os+1)
					for i := range got {
						got[i], want[i] = guard, guard
					}
					useTier(t, genericKernels)
					DotsF16Keys(kb, groups, q, hd, want[:(nq-1)*os+8*groups], os)
					useTier(t, k)
					DotsF16Keys(kb, groups, q, hd, got[:(nq-1)*os+8*groups], os)
					for i := range got {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%s hd=%d groups=%d queries %d: out[%d] = %v, reference %v", k.tier, hd, groups, nq, i, got[i], want[i])
						}
					}
					if k != genericKernels {
						continue
					}
					for j := range nq {
						for i := range 8 * groups {
							g, l := i/8, i%8
							var dot, abs float64
							for d := range hd {
								b := kb[16*hd*g+16*d+2*l:]
								x := float64(q[j*hd+d]) * float64(F16ToF32(uint16(b[0])|uint16(b[1])<<8))
								dot, abs = dot+x, abs+math.Abs(x)
							}
							if e := math.Abs(float64(want[j*os+i]) - dot); e > float64(hd)*0x1p-23*abs+1e-30 {
								t.Fatalf("hd=%d query %d key %d: %v, the dot is %v", hd, j, i, want[j*os+i], dot)
							}
						}
					}
				}
			}
		}
	}
}

// BenchmarkDotsF16Keys: four queries' scores of a tile of 64 keys in L1
// (DotsF16Keys), at the head widths of Llama-3.2-1B (64) and Llama-3.1-8B
// (128).
func BenchmarkDotsF16Keys(b *testing.B) {
	r := rand.New(rand.NewPCG(87, 88))
	for _, hd := range []int{64, 128} {
		const n, nq = 64, 4
		kb := randomF16(r, n*2*hd)
		q := gaussian(r, nq*hd, 1)
		out := make([]float32, nq*n)
		b.Run(fmt.Sprintf("hd%d", hd), func(b *testing.B) {
			b.SetBytes(int64(len(kb)))
			for range b.N {
				DotsF16Keys(kb, n/8, q, hd, out, n)
			}
		})
	}
}
