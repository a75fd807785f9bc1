package kernels

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// Benchmarks report weight bytes read per second (b.SetBytes: the MB/s
// column) and, for matrix products, GOP/s (2·rows·cols·n integer/float ops).
// Compare the matrix–vector figures with BenchmarkStreamRead, the machine's
// plain read bandwidth: decode streams every weight once per token, so that
// is its ceiling. Run with -count and compare medians; the host is shared.

// BenchmarkStreamRead sums a 1 GiB buffer with 1 and 2 goroutines (each
// summing its half), like STREAM's read-only kernels.
func BenchmarkStreamRead(b *testing.B) {
	buf := make([]byte, 1<<30)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = byte(i >> 12) // touch every page
	}
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			part := len(buf) / threads
			var sink uint64
			sum := kern.sumU64
			for b.Loop() {
				var wg sync.WaitGroup
				sums := make([]uint64, threads)
				for t := range threads {
					wg.Go(func() { sums[t] = sum(buf[t*part : (t+1)*part]) })
				}
				wg.Wait()
				for _, s := range sums {
					sink += s
				}
			}
			_ = sink
		})
	}
}

func benchTiers(b *testing.B, f func(b *testing.B)) { benchTiersOf(b, allTiers(), f) }

// rounds is how many times benchTiersOf runs its tiers in turn: on a shared
// host, -rounds 5 compares tiers that ran alternately in one process, where
// -count 5 runs each tier five times in a row.
var rounds = flag.Int("rounds", 1, "run the tiers of a benchmark in turn this many times")

func benchTiersOf(b *testing.B, tiers []*kernelSet, f func(b *testing.B)) {
	for range *rounds {
		for _, k := range tiers {
			b.Run(k.tier.String(), func(b *testing.B) {
				useTier(b, k)
				f(b)
			})
		}
	}
}

// BenchmarkDotQ is one 4096-column row against one activation row, in
// cache: the kernels' compute speed.
func BenchmarkDotQ(b *testing.B) {
	const cols = 4096
	r := rand.New(rand.NewPCG(1, 2))
	for _, typ := range []DType{Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, F16, TQ1_0, TQ2_0} {
		w, xq := quantize(typ, gaussian(r, cols, 0.1)), quantize(VecDotType(typ), gaussian(r, cols, 1))
		b.Run(typ.String(), func(b *testing.B) {
			benchTiers(b, func(b *testing.B) {
				b.SetBytes(int64(len(w)))
				for b.Loop() {
					DotQ(typ, cols, w, xq)
				}
				b.ReportMetric(2*cols*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOP/s")
			})
		})
	}
}

// benchMatMul times MatMul of a rows×cols matrix of typ with n activation
// rows at 1 and 2 threads on every tier. With copies > 1 each call uses the
// next of that many copies of the matrix, so that, as in a decode step
// (4.6 GB of distinct weights for an 8B Q4_K_M), the weights come from DRAM
// rather than from the last-level cache.
func benchMatMul(b *testing.B, typ DType, rows, cols, n int) {
	benchMatMulCopies(b, typ, LayoutRows, rows, cols, n, 1)
}

func benchMatMulCopies(b *testing.B, typ DType, l Layout, rows, cols, n, copies int) {
	tiers := allTiers()
	if n > 1 && typ != F32 {
		tiers = tiers[1:] // the reference takes ~40 s per op here; its speed is BenchmarkDotQ's
	}
	r := rand.New(rand.NewPCG(3, 4))
	w0 := quantize(typ, gaussian(r, rows*cols, 0.1))
	if l == LayoutR16 {
		size, _ := LayoutBytes(typ, l, rows, cols)
		packed := make([]byte, size)
		RepackR16(typ, packed, w0, cols)
		w0 = packed
	}
	ws := make([][]byte, copies)
	for i := range ws {
		ws[i] = append([]byte(nil), w0...)
	}
	x := gaussian(r, n*cols, 1)
	out := make([]float32, n*rows)
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			p := NewPool(threads)
			defer p.Close()
			benchTiersOf(b, tiers, func(b *testing.B) {
				var s Scratch
				b.SetBytes(int64(len(w0)))
				i := 0
				for b.Loop() {
					MatMulLayout(p, typ, l, ws[i], rows, cols, x, n, out, &s)
					if i++; i == copies {
						i = 0
					}
				}
				b.ReportMetric(2*float64(rows)*float64(cols)*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOP/s")
			})
		})
	}
}

// BenchmarkMatVec is one token through a Q4_K matrix (9.4 MB for 4096×4096,
// 33 MB for 14336×4096) that stays in the last-level cache between calls:
// the kernels' speed when memory is not the limit.
func BenchmarkMatVec(b *testing.B) {
	for _, sh := range [][2]int{{4096, 4096}, {14336, 4096}} {
		b.Run(fmt.Sprintf("Q4_K_%dx%d", sh[0], sh[1]), func(b *testing.B) { benchMatMul(b, Q4_K, sh[0], sh[1], 1) })
	}
	b.Run("Q6_K_4096x4096", func(b *testing.B) { benchMatMul(b, Q6_K, 4096, 4096, 1) })
	b.Run("Q4_K_r16_4096x4096", func(b *testing.B) { benchMatMulCopies(b, Q4_K, LayoutR16, 4096, 4096, 1, 1) })
	b.Run("Q6_K_r16_4096x4096", func(b *testing.B) { benchMatMulCopies(b, Q6_K, LayoutR16, 4096, 4096, 1, 1) })
	for _, typ := range []DType{TQ1_0, TQ2_0} {
		b.Run(fmt.Sprintf("%v_4096x4096", typ), func(b *testing.B) { benchMatMul(b, typ, 4096, 4096, 1) })
	}
	b.Run("TQ2_0_r16_4096x4096", func(b *testing.B) { benchMatMulCopies(b, TQ2_0, LayoutR16, 4096, 4096, 1, 1) })
	// F32: a mixture of experts' router (64×2048, OLMoE's; 16 copies, one
	// per layer, come from the L3 as in a decode step) and a square matrix.
	b.Run("F32_64x2048", func(b *testing.B) { benchMatMul(b, F32, 64, 2048, 1) })
	b.Run("F32_64x2048_x16", func(b *testing.B) { benchMatMulCopies(b, F32, LayoutRows, 64, 2048, 1, 16) })
	b.Run("F32_2048x2048", func(b *testing.B) { benchMatMul(b, F32, 2048, 2048, 1) })
	b.Run("TQ1_0_r16_4096x4096", func(b *testing.B) { benchMatMulCopies(b, TQ1_0, LayoutR16, 4096, 4096, 1, 1) })
	for _, typ := range []DType{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16} {
		b.Run(fmt.Sprintf("%v_4096x4096", typ), func(b *testing.B) { benchMatMul(b, typ, 4096, 4096, 1) })
		b.Run(fmt.Sprintf("%v_r16_4096x4096", typ), func(b *testing.B) { benchMatMulCopies(b, typ, LayoutR16, 4096, 4096, 1, 1) })
	}
}

// BenchmarkMatVecDRAM is BenchmarkMatVec with weights that do not fit in any
// cache (1 GiB of copies, cycled; this host reports a 508 MB L3): the decode
// case.
func BenchmarkMatVecDRAM(b *testing.B) {
	for _, typ := range []DType{Q4_K, Q5_K, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16} {
		for _, sh := range [][2]int{{4096, 4096}, {14336, 4096}, {8192, 2048}} {
			rb, _ := typ.RowBytes(sh[1])
			size := sh[0] * rb
			copies := (1<<30 + size - 1) / size
			b.Run(fmt.Sprintf("%v_%dx%d", typ, sh[0], sh[1]), func(b *testing.B) { benchMatMulCopies(b, typ, LayoutRows, sh[0], sh[1], 1, copies) })
			b.Run(fmt.Sprintf("%v_r16_%dx%d", typ, sh[0], sh[1]), func(b *testing.B) { benchMatMulCopies(b, typ, LayoutR16, sh[0], sh[1], 1, copies) })
		}
	}
}

// BenchmarkPrefill is a 128-token prompt chunk through a 4096×4096 Q4_K
// matrix (and 8 or 128 tokens through Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 ones):
// compute-bound;
// see GOP/s.
func BenchmarkPrefill(b *testing.B) {
	b.Run("Q4_K_4096x4096_n128", func(b *testing.B) { benchMatMul(b, Q4_K, 4096, 4096, 128) })
	b.Run("Q6_K_4096x4096_n128", func(b *testing.B) { benchMatMul(b, Q6_K, 4096, 4096, 128) })
	b.Run("Q4_K_r16_4096x4096_n128", func(b *testing.B) { benchMatMulCopies(b, Q4_K, LayoutR16, 4096, 4096, 128, 1) })
	b.Run("Q6_K_r16_4096x4096_n128", func(b *testing.B) { benchMatMulCopies(b, Q6_K, LayoutR16, 4096, 4096, 128, 1) })
	b.Run("TQ1_0_4096x4096_n128", func(b *testing.B) { benchMatMul(b, TQ1_0, 4096, 4096, 128) })
	b.Run("F32_2048x2048_n32", func(b *testing.B) { benchMatMul(b, F32, 2048, 2048, 32) })
	b.Run("TQ2_0_4096x4096_n128", func(b *testing.B) { benchMatMul(b, TQ2_0, 4096, 4096, 128) })
	b.Run("TQ2_0_r16_4096x4096_n128", func(b *testing.B) { benchMatMulCopies(b, TQ2_0, LayoutR16, 4096, 4096, 128, 1) })
	b.Run("TQ1_0_r16_4096x4096_n128", func(b *testing.B) { benchMatMulCopies(b, TQ1_0, LayoutR16, 4096, 4096, 128, 1) })
	for _, typ := range []DType{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16} {
		for _, n := range []int{8, 128} {
			b.Run(fmt.Sprintf("%v_4096x4096_n%d", typ, n), func(b *testing.B) { benchMatMul(b, typ, 4096, 4096, n) })
			b.Run(fmt.Sprintf("%v_r16_4096x4096_n%d", typ, n), func(b *testing.B) { benchMatMulCopies(b, typ, LayoutR16, 4096, 4096, n, 1) })
		}
	}
}

// BenchmarkQuantize is the activation encoding MatMul does once per call.
func BenchmarkQuantize(b *testing.B) {
	const cols = 4096
	x := gaussian(rand.New(rand.NewPCG(5, 6)), cols, 1)
	for _, typ := range []DType{Q8_K, Q8_0} {
		dst := make([]byte, cols/typ.BlockSize()*typ.BlockBytes())
		b.Run(typ.String(), func(b *testing.B) {
			benchTiers(b, func(b *testing.B) {
				b.SetBytes(4 * cols)
				for b.Loop() {
					Quantize(typ, x, dst)
				}
			})
		})
	}
	// The Q8_0 blocks with sums of the LayoutR16 Q4_0/Q5_0/Q8_0 kernels,
	// and with Q8_1's s of the Q4_1 ones.
	dst := make([]byte, cols/qk*q8R16Bytes)
	for _, c := range []struct {
		name string
		t    DType
	}{{"Q8_0_r16", Q4_0}, {"Q8_1_r16", Q4_1}} {
		b.Run(c.name, func(b *testing.B) {
			benchTiers(b, func(b *testing.B) {
				b.SetBytes(4 * cols)
				for b.Loop() {
					quantQ8R16(c.t, x, dst)
				}
			})
		})
	}
}

// BenchmarkRepackR16 is the loader's rearrangement of a 4096×4096 matrix
// into LayoutR16 (MB/s of source bytes).
func BenchmarkRepackR16(b *testing.B) {
	const rows, cols = 4096, 4096
	r := rand.New(rand.NewPCG(7, 8))
	for _, typ := range []DType{Q4_K, Q5_K, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16} {
		src := quantize(typ, gaussian(r, rows*cols, 0.1))
		size, _ := LayoutBytes(typ, LayoutR16, rows, cols)
		dst := make([]byte, size)
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				RepackR16(typ, dst, src, cols)
			}
		})
	}
}
