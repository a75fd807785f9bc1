package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestMatMul checks MatMul on odd shapes and several thread counts against
// two naive loops: per-row DotQ on individually encoded activation rows (must
// match exactly: same integer arithmetic) and a dequantize-everything float64
// product (within the activation encoding error). Guard bands around out
// catch writes outside it.
func TestMatMul(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	var s Scratch // shared across calls to exercise reuse and growth
	for _, k := range allTiers() {
		t.Run(k.tier.String(), func(t *testing.T) {
			useTier(t, k)
			testMatMul(t, r, &s)
		})
	}
}

func testMatMul(t *testing.T, r *rand.Rand, s *Scratch) {
	for _, threads := range []int{1, 3} {
		p := NewPool(threads)
		for _, typ := range weightTypes {
			cols := 96 // three legacy blocks
			if typ.BlockSize() == QK_K {
				cols = 512
			}
			for _, rows := range []int{1, 7, 33} {
				for _, n := range []int{1, 3, 4, 9, 17} {
					w := quantize(typ, gaussian(r, rows*cols, 0.1))
					x := gaussian(r, n*cols, 1)
					const guard = 4
					buf := make([]float32, n*rows+2*guard)
					for i := range buf {
						buf[i] = 12345
					}
					out := buf[guard : guard+n*rows]
					MatMul(p, typ, w, rows, cols, x, n, out, s)
					for i := range guard {
						if buf[i] != 12345 || buf[len(buf)-1-i] != 12345 {
							t.Fatalf("%v: guard band overwritten", typ)
						}
					}

					vt := VecDotType(typ)
					wrb, _ := typ.RowBytes(cols)
					wf := dequant(typ, w, rows*cols)
					for j := range n {
						xj := x[j*cols : (j+1)*cols]
						xq := quantize(vt, xj)
						for row := range rows {
							got := out[j*rows+row]
							if want := DotQ(typ, cols, w[row*wrb:(row+1)*wrb], xq); got != want {
								t.Fatalf("%v threads=%d rows=%d n=%d: out[%d,%d] = %v, DotQ = %v", typ, threads, rows, n, j, row, got, want)
							}
							want, mag := dot64(wf[row*cols:(row+1)*cols], xj)
							if math.Abs(float64(got)-want) > 0.02*mag+1e-6 {
								t.Fatalf("%v threads=%d rows=%d n=%d: out[%d,%d] = %v, float dot = %v", typ, threads, rows, n, j, row, got, want)
							}
						}
					}
				}
			}
		}
		p.Close()
	}
}

func TestMatMulNoAllocWithScratch(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 3))
	p := NewPool(2)
	defer p.Close()
	const rows, cols = 16, 256
	w := quantize(Q4_K, gaussian(r, rows*cols, 0.1))
	for _, k := range allTiers() {
		useTier(t, k)
		for _, n := range []int{1, 2, 8, 19} { // one-row and multi-row paths
			x := gaussian(r, n*cols, 1)
			out := make([]float32, n*rows)
			var s Scratch
			MatMul(p, Q4_K, w, rows, cols, x, n, out, &s) // grow the scratch
			if a := testing.AllocsPerRun(20, func() { MatMul(p, Q4_K, w, rows, cols, x, n, out, &s) }); a != 0 {
				t.Errorf("%v n=%d: MatMul allocates %v times per call with a warm Scratch", k.tier, n, a)
			}
		}
	}
}

func TestMatMulPanicsOnBadShape(t *testing.T) {
	p := NewPool(1)
	defer p.Close()
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	MatMul(p, Q8_0, make([]byte, 34*2), 2, 32, make([]float32, 31), 1, make([]float32, 2), nil)
}

func TestRow(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 5))
	const rows, cols = 5, 64
	for _, typ := range []DType{F32, F16, Q8_0, Q4_1} {
		w := quantize(typ, gaussian(r, rows*cols, 1))
		all := dequant(typ, w, rows*cols)
		dst := make([]float32, cols+3)
		for row := range rows {
			Row(typ, w, cols, row, dst)
			for i := range cols {
				if dst[i] != all[row*cols+i] {
					t.Fatalf("%v row %d col %d: %v, want %v", typ, row, i, dst[i], all[row*cols+i])
				}
			}
		}
	}
}

// TestMatMuls checks that a batch of products gives exactly the results of
// one MatMulLayout call each — in both layouts, with products sharing their
// activations (encoded once) and F32 ones (not encoded) among them — on every
// tier and thread count, without writing outside any output.
func TestMatMuls(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	var s Scratch
	for _, k := range allTiers() {
		t.Run(k.tier.String(), func(t *testing.T) {
			useTier(t, k)
			for _, threads := range []int{1, 2, 3} {
				p := NewPool(threads)
				for _, n := range []int{1, 2, 5, 9} {
					testMatMuls(t, r, p, n, &s)
				}
				p.Close()
			}
		})
	}
}

func testMatMuls(t *testing.T, r *rand.Rand, p *Pool, n int, s *Scratch) {
	t.Helper()
	const cols, guard = 512, 3
	shared := gaussian(r, n*cols, 1) // the X of several products
	var ps []Product
	var bufs [][]float32
	for i, typ := range weightTypes {
		for _, l := range []Layout{LayoutRows, LayoutR16} {
			rows := 16 * (1 + i%3)
			if l == LayoutR16 {
				if !CanR16(typ, rows, cols) {
					continue
				}
			} else if i%4 == 1 {
				rows = 7 // odd row counts in the plain layout
			}
			w := quantize(typ, gaussian(r, rows*cols, 0.1))
			if l == LayoutR16 {
				size, _ := LayoutBytes(typ, l, rows, cols)
				packed := make([]byte, size)
				RepackR16(typ, packed, w, cols)
				w = packed
			}
			x := shared
			if i%2 == 1 {
				x = gaussian(r, n*cols, 1)
			}
			buf := make([]float32, n*rows+2*guard)
			for j := range buf {
				buf[j] = 12345
			}
			bufs = append(bufs, buf)
			ps = append(ps, Product{T: typ, L: l, W: w, Rows: rows, Cols: cols, X: x, N: n, Out: buf[guard : guard+n*rows]})
		}
	}
	// An empty product in the middle is skipped.
	ps = append(ps[:3], append([]Product{{T: Q8_0, Cols: cols, X: shared[:0]}}, ps[3:]...)...)
	bufs = append(bufs[:3], append([][]float32{nil}, bufs[3:]...)...)
	MatMuls(p, ps, s)
	for i, pr := range ps {
		if pr.Rows == 0 {
			continue
		}
		buf := bufs[i]
		for j := range guard {
			if buf[j] != 12345 || buf[len(buf)-1-j] != 12345 {
				t.Fatalf("%v %v n=%d: guard band overwritten", pr.T, pr.L, n)
			}
		}
		want := make([]float32, n*pr.Rows)
		MatMulLayout(p, pr.T, pr.L, pr.W, pr.Rows, pr.Cols, pr.X, n, want, nil)
		for j, v := range want {
			if pr.Out[j] != v {
				t.Fatalf("%v %v rows=%d n=%d threads=%d: out[%d] = %v, MatMulLayout gives %v", pr.T, pr.L, pr.Rows, n, p.Threads(), j, pr.Out[j], v)
			}
		}
	}
	if s.batch.jobs[:cap(s.batch.jobs)][0].w != nil {
		t.Error("MatMuls keeps a reference to the caller's weights")
	}
}

func TestMatMulsNoAllocWithScratch(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 3))
	p := NewPool(2)
	defer p.Close()
	const rows, cols = 32, 256
	var ps []Product
	x := gaussian(r, 2*cols, 1)
	for range 8 {
		for _, typ := range []DType{Q4_K, Q6_K} {
			ps = append(ps, Product{T: typ, W: quantize(typ, gaussian(r, rows*cols, 0.1)), Rows: rows, Cols: cols, X: x, N: 2, Out: make([]float32, 2*rows)})
		}
	}
	var s Scratch
	MatMuls(p, ps, &s)
	if a := testing.AllocsPerRun(20, func() { MatMuls(p, ps, &s) }); a != 0 {
		t.Errorf("MatMuls allocates %v times per call with a warm Scratch", a)
	}
}
