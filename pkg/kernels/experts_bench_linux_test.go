package kernels

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"
)

// BenchmarkExperts is a decode step's routed experts against one dense
// matrix of the same bytes: 9 MiB of Q4_K weights of 2048 columns in
// LayoutR16 per call (eight of OLMoE-1B-7B's 1024×2048 experts), taken
// from 1 GiB of copies so that they come from DRAM, on 2 MiB and on 4 KiB
// pages (madvise). Each iteration runs every way in turn, in a rotating
// order, so that the host's other load falls on all alike:
//
//   - one: one 8192-row product (eight adjacent experts' bytes);
//   - pieces=R: 8192/R products of R rows, one MatMuls batch, each at a
//     random R-row-aligned place in the buffer (R = 1024: eight experts
//     of a decode step; smaller R multiplies the jumps between products,
//     so that the cost of one jump shows);
//   - adjacent: eight 1024-row products over one's bytes (the boundaries
//     between products without the jumps);
//   - adjacent16: 512 one-group products over one's bytes;
//   - read: a plain read of eight random 1024-row places.
//
// It reports each way's GB/s and its time over one's.
func BenchmarkExperts(b *testing.B) {
	const rows, cols = 8192, 2048
	r := rand.New(rand.NewPCG(5, 6))
	size, _ := LayoutBytes(Q4_K, LayoutR16, rows, cols)
	m := make([]byte, size)
	RepackR16(Q4_K, m, quantize(Q4_K, gaussian(r, rows*cols, 0.1)), cols)
	gb := size / (rows / R16) // bytes of a 16-row group
	x := gaussian(r, cols, 1)
	out := make([]float32, rows)
	type way struct {
		name   string
		pieces int // rows of each product (0: one product)
		random bool
	}
	ways := []way{{"one", 0, false}, {"adjacent", 1024, false}, {"pieces=1024", 1024, true},
		{"pieces=128", 128, true}, {"pieces=16", 16, true}, {"adjacent16", 16, false}, {"read", 1024, true}}
	for _, pages := range []string{"2M", "4K"} {
		b.Run("pages="+pages, func(b *testing.B) {
			buf, err := syscall.Mmap(-1, 0, 1<<30, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
			if err != nil {
				b.Fatal(err)
			}
			defer syscall.Munmap(buf)
			adv := syscall.MADV_NOHUGEPAGE
			if pages == "2M" {
				adv = syscall.MADV_HUGEPAGE
			}
			if err := syscall.Madvise(buf, adv); err != nil {
				b.Fatal(err)
			}
			copies := len(buf) / size
			for i := range copies {
				copy(buf[i*size:], m)
			}
			groups := copies * rows / R16
			p := NewPool(2)
			defer p.Close()
			var s Scratch
			var ps []Product
			var reads [][]byte
			var sink [8]uint64
			read := func(lo, hi int) {
				for i := lo; i < hi; i++ {
					sink[i] += kern.sumU64(reads[i])
				}
			}
			b.SetBytes(int64(len(ways) * size))
			ns := make([]time.Duration, len(ways))
			for it := 0; b.Loop(); it++ {
				for o := range ways {
					wi := (o + it) % len(ways)
					w := ways[wi]
					first := r.IntN(groups - rows/R16)
					ps, reads = ps[:0], reads[:0]
					if w.pieces == 0 {
						ps = append(ps, Product{T: Q4_K, L: LayoutR16, W: buf[first*gb : first*gb+size], Rows: rows, Cols: cols, X: x, N: 1, Out: out})
					}
					for i := 0; w.pieces > 0 && i < rows/w.pieces; i++ {
						g := first + i*w.pieces/R16
						if w.random {
							per := w.pieces / R16
							g = r.IntN(groups/per) * per
						}
						wb := buf[g*gb : (g+w.pieces/R16)*gb]
						ps = append(ps, Product{T: Q4_K, L: LayoutR16, W: wb, Rows: w.pieces, Cols: cols, X: x, N: 1, Out: out[i*w.pieces : (i+1)*w.pieces]})
						reads = append(reads, wb)
					}
					t0 := time.Now()
					if w.name == "read" {
						p.Run(len(reads), read)
					} else {
						MatMuls(p, ps, &s)
					}
					ns[wi] += time.Since(t0)
				}
			}
			for wi, w := range ways {
				b.ReportMetric(float64(size)*float64(b.N)/ns[wi].Seconds()/1e9, w.name+"-GB/s")
				if wi > 0 {
					b.ReportMetric(float64(ns[wi])/float64(ns[0]), fmt.Sprintf("%s/one", w.name))
				}
			}
		})
	}
}

// BenchmarkExpertDowns is eight of OLMoE-1B-7B's expert downs (Q6_K,
// 2048×1024: four super-blocks a row, so every 16-row group is one short
// kernel call) at random places, against the same bytes as one dense down
// of a 1B model's shape (2048×8192: 32 super-blocks a row) and as one
// 16384×1024 product over eight adjacent downs (narrow: the short rows
// without the jumps), and a plain read (StreamRead) of a wide copy,
// alternately. The copies of both shapes alternate in
// one 512 MiB buffer, so that each way reads the same physical memory: on
// this host (a virtual machine) two buffers of the same size read at up
// to twice a different speed.
func BenchmarkExpertDowns(b *testing.B) {
	const rows, narrow, wide, k = 2048, 1024, 8192, 8
	r := rand.New(rand.NewPCG(7, 8))
	matrix := func(cols int) []byte {
		size, _ := LayoutBytes(Q6_K, LayoutR16, rows, cols)
		m := make([]byte, size)
		RepackR16(Q6_K, m, quantize(Q6_K, gaussian(r, rows*cols, 0.1)), cols)
		return m
	}
	mw, mn := matrix(wide), matrix(narrow)
	wsize, nsize := len(mw), len(mn)
	if wsize != k*nsize {
		b.Fatalf("%d bytes wide, %d narrow", wsize, nsize)
	}
	// Pair i: a wide copy at 2i·wsize, eight narrow ones after it.
	buf := make([]byte, 0, 512<<20)
	for len(buf)+2*wsize <= cap(buf) {
		buf = append(buf, mw...)
		for range k {
			buf = append(buf, mn...)
		}
	}
	pairs := len(buf) / (2 * wsize)
	x := gaussian(r, wide, 1)
	out := make([]float32, k*rows)
	p := NewPool(2)
	defer p.Close()
	var s Scratch
	ps := make([]Product, k)
	b.SetBytes(int64(4 * wsize))
	var ns [4]time.Duration
	for it := 0; b.Loop(); it++ {
		for o := range 4 {
			w := (o + it) % 4
			at := r.IntN(pairs) * 2 * wsize
			switch w {
			case 0:
				ps = append(ps[:0], Product{T: Q6_K, L: LayoutR16, W: buf[at : at+wsize], Rows: rows, Cols: wide, X: x, N: 1, Out: out[:rows]})
			case 1:
				ps = ps[:0]
				for i := range k {
					at := r.IntN(pairs)*2*wsize + wsize + r.IntN(k)*nsize
					ps = append(ps, Product{T: Q6_K, L: LayoutR16, W: buf[at : at+nsize], Rows: rows, Cols: narrow, X: x[i*narrow : (i+1)*narrow], N: 1, Out: out[i*rows : (i+1)*rows]})
				}
			case 2:
				ps = append(ps[:0], Product{T: Q6_K, L: LayoutR16, W: buf[at+wsize : at+2*wsize], Rows: k * rows, Cols: narrow, X: x[:narrow], N: 1, Out: out})
			}
			t0 := time.Now()
			if w == 3 {
				StreamRead(p, [][]byte{buf[at : at+wsize]})
			} else {
				MatMuls(p, ps, &s)
			}
			ns[w] += time.Since(t0)
		}
	}
	b.ReportMetric(float64(wsize)*float64(b.N)/ns[0].Seconds()/1e9, "wide-GB/s")
	b.ReportMetric(float64(wsize)*float64(b.N)/ns[1].Seconds()/1e9, "experts-GB/s")
	b.ReportMetric(float64(ns[1])/float64(ns[0]), "experts/wide")
	b.ReportMetric(float64(ns[2])/float64(ns[0]), "narrow/wide")
	b.ReportMetric(float64(wsize)*float64(b.N)/ns[3].Seconds()/1e9, "read-GB/s")
}
