package moe

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// matrix returns a random rows×cols matrix of type t.
func matrix(rng *rand.Rand, t kernels.DType, rows, cols int) model.Matrix {
	f := make([]float32, rows*cols)
	for i := range f {
		f[i] = float32(rng.NormFloat64() / math.Sqrt(float64(cols)))
	}
	rb, _ := t.RowBytes(cols)
	data := make([]byte, rows*rb)
	for r := 0; r < rows; r++ {
		kernels.Quantize(t, f[r*cols:(r+1)*cols], data[r*rb:(r+1)*rb])
	}
	return model.Matrix{Type: t, Rows: rows, Cols: cols, Data: data}
}

func experts(rng *rand.Rand, t kernels.DType, ne, dim, ff, sh int) *Experts {
	w := &Experts{Router: matrix(rng, kernels.F32, ne, dim)}
	for e := 0; e < ne; e++ {
		w.Gate = append(w.Gate, matrix(rng, t, ff, dim))
		w.Up = append(w.Up, matrix(rng, t, ff, dim))
		w.Down = append(w.Down, matrix(rng, t, dim, ff))
	}
	if sh > 0 {
		w.HasShared = true
		w.SharedGate, w.SharedUp, w.SharedDown = matrix(rng, t, sh, dim), matrix(rng, t, sh, dim), matrix(rng, t, dim, sh)
		w.SharedGateInp = make([]float32, dim)
		for i := range w.SharedGateInp {
			w.SharedGateInp[i] = float32(rng.NormFloat64() * 0.05)
		}
	}
	return w
}

// reference is one row of the mixture computed directly from its
// definition: softmax over the router's logits, the used largest kept
// (renormalised when asked), each chosen expert's SwiGLU output weighed
// by its probability, plus the gated shared expert.
func reference(w *Experts, f *FFN, x []float32) []float32 {
	dim := len(x)
	logits := make([]float32, f.Experts)
	for e := range logits {
		row := make([]float32, dim)
		w.Router.Row(e, row)
		logits[e] = kernels.Dot(row, x)
	}
	kernels.Softmax(logits)
	chosen := map[int]bool{}
	var ids []int
	for k := 0; k < f.Used; k++ {
		best := -1
		for e, p := range logits {
			if !chosen[e] && (best < 0 || p > logits[best]) {
				best = e
			}
		}
		chosen[best] = true
		ids = append(ids, best)
	}
	var sum float32
	for _, e := range ids {
		sum += logits[e]
	}
	out := make([]float32, dim)
	ffn := func(g, u, d *model.Matrix, wt float32) {
		h := make([]float32, g.Rows)
		row := make([]float32, dim)
		for i := range h {
			g.Row(i, row)
			a := kernels.Dot(row, x)
			u.Row(i, row)
			h[i] = a / (1 + float32(math.Exp(-float64(a)))) * kernels.Dot(row, x)
		}
		drow := make([]float32, g.Rows)
		for i := range out {
			d.Row(i, drow)
			out[i] += wt * kernels.Dot(drow, h)
		}
	}
	for _, e := range ids {
		wt := logits[e]
		if f.Normalize {
			wt /= sum
		}
		ffn(&w.Gate[e], &w.Up[e], &w.Down[e], wt)
	}
	if w.HasShared {
		ffn(&w.SharedGate, &w.SharedUp, &w.SharedDown, sigmoid(kernels.Dot(w.SharedGateInp, x)))
	}
	return out
}

// TestFFNBatchedByExpert runs the mixture over 37 rows at once (grouped by
// expert) and checks each row against its direct definition, and that the
// step read each routed expert once.
func TestFFNBatchedByExpert(t *testing.T) {
	const ne, dim, ff, sh, n = 8, 64, 96, 128, 37
	pool := kernels.NewPool(2)
	defer pool.Close()
	for _, tt := range []struct {
		name      string
		normalize bool
		shared    int
	}{{"olmoe", false, 0}, {"granitemoe", true, 0}, {"qwen2moe", false, sh}} {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			w := experts(rng, kernels.F32, ne, dim, ff, tt.shared)
			f := &FFN{Routing: Routing{Experts: ne, Used: 2, Normalize: tt.normalize}, Dim: dim, Width: ff, SharedWidth: tt.shared}
			x := make([]float32, n*dim)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			out := make([]float32, n*dim)
			p := &model.Pass{Pool: pool}
			f.Forward(p, w, x, n, out)
			for r := 0; r < n; r++ {
				want := reference(w, f, x[r*dim:(r+1)*dim])
				for i, v := range want {
					if got := out[r*dim+i]; math.Abs(float64(got-v)) > 1e-4*(1+math.Abs(float64(v))) {
						t.Fatalf("row %d, output %d: %g, want %g", r, i, got, v)
					}
				}
			}
			// The bytes read: every expert some row chose, once.
			used := map[int32]bool{}
			for _, e := range f.sel {
				used[e] = true
			}
			var want int64
			for e := range used {
				want += int64(len(w.Gate[e].Data) + len(w.Up[e].Data) + len(w.Down[e].Data))
			}
			if f.ExpertBytes != want {
				t.Errorf("a step over %d rows read %d bytes of experts, want %d (%d experts chosen, each once)", n, f.ExpertBytes, want, len(used))
			}
		})
	}
}

// TestFFNRowsIndependent: a row's output does not depend on which other
// rows share the step (decode of several sequences equals decoding them
// one by one), for quantized experts too.
func TestFFNRowsIndependent(t *testing.T) {
	const ne, dim, ff, n = 8, 256, 256, 9
	pool := kernels.NewPool(2)
	defer pool.Close()
	for _, dt := range []kernels.DType{kernels.F32, kernels.Q8_0, kernels.Q4_K} {
		t.Run(dt.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			w := experts(rng, dt, ne, dim, ff, 256)
			f := &FFN{Routing: Routing{Experts: ne, Used: 3}, Dim: dim, Width: ff, SharedWidth: 256}
			x := make([]float32, n*dim)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			all := make([]float32, n*dim)
			p := &model.Pass{Pool: pool}
			f.Forward(p, w, x, n, all)
			one := make([]float32, dim)
			for r := 0; r < n; r++ {
				f.Forward(p, w, x[r*dim:(r+1)*dim], 1, one)
				for i, v := range one {
					if d := math.Abs(float64(all[r*dim+i] - v)); d > 1e-5*(1+math.Abs(float64(v))) {
						t.Fatalf("row %d output %d: %g in a step of %d rows, %g alone", r, i, all[r*dim+i], n, v)
					}
				}
			}
		})
	}
}
