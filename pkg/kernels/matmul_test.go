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
