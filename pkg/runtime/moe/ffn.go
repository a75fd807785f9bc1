package moe

import (
	"math"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// Experts are one block's mixture-of-experts feed-forward weights.
type Experts struct {
	Router model.Matrix   // (experts, dim) ffn_gate_inp: one logit per expert
	Gate   []model.Matrix // (experts) × (ffn, dim) views of ffn_gate_exps
	Up     []model.Matrix // (experts) × (ffn, dim) views of ffn_up_exps
	Down   []model.Matrix // (experts) × (dim, ffn) views of ffn_down_exps

	// A shared expert every token goes through besides its routed ones
	// (qwen2moe; granitemoe's "shared" variant); HasShared says whether
	// there is one. SharedGateInp, when not nil, is qwen2moe's (dim)
	// vector whose dot with the input, through a sigmoid, weighs the
	// shared expert's output.
	HasShared     bool
	SharedGate    model.Matrix // (shared_ffn, dim)
	SharedUp      model.Matrix // (shared_ffn, dim)
	SharedDown    model.Matrix // (dim, shared_ffn)
	SharedGateInp []float32    // (dim) or nil
}

// Routing is how a family turns router logits into expert weights. Every
// family here takes the softmax over all experts and keeps the Used largest
// probabilities (llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX).
type Routing struct {
	Experts, Used int
	// Normalize divides the kept probabilities by their sum (granitemoe;
	// not olmoe nor qwen2moe in llama.cpp 0a50d99, whose build_moe_ffn
	// calls pass norm_w = false for them).
	Normalize bool
}

// FFN runs a block's experts over the rows of a step, batched by expert:
// the rows routed to an expert are gathered, multiplied by its gate, up and
// down matrices in one matmul each, and scattered back with their weights.
// An expert's weights are so read once per step however many rows chose
// it; experts no row chose are not read at all. Several experts' matmuls
// run as one batch (kernels.MatMuls): a decode step's eight experts are
// 24 small matmuls per block, and on two cores a pool barrier after each
// cost as much as the matmuls. It keeps its buffers from step to step.
type FFN struct {
	Routing
	Dim, Width, SharedWidth int

	logits []float32 // (n, experts)
	sel    []int32   // (n, used) chosen experts
	wts    []float32 // (n, used) their weights
	count  []int     // (experts) rows routed to each expert
	start  []int     // (experts+1) offsets into order
	order  []int32   // (n·used) slots (row·used+k) grouped by expert
	xe, de []float32 // (slots of a batch, dim) gathered input, down output
	ge, ue []float32 // (slots of a batch, width) gate and up outputs (when the pass's are too small: hidden)
	sg, su []float32 // (n, shared width) the shared expert's, the same
	sd     []float32 // (n, dim) shared expert's output
	ps     []kernels.Product

	// ExpertBytes counts the bytes of routed experts' matrices multiplied,
	// each expert once per step and block it runs in: what routing makes a
	// step read of the experts' stacked tensors (the shared expert, read
	// by every step, is not counted).
	ExpertBytes int64
}

// minBatchSlots is the fewest (row, expert) slots a batch of experts may
// hold: enough for a decode step of a few sequences to run all its experts
// in one batch. From n rows up a batch holds at most n slots, so that its
// hidden values fit the pass's own buffers (runtime.ComputeBytes plans
// n rows of a dense feed-forward).
const minBatchSlots = 64

// Forward writes to out (n rows of dim) the mixture of experts w applied
// to the n rows of x, on p's pool and matmul scratch.
func (f *FFN) Forward(p *model.Pass, w *Experts, x []float32, n int, out []float32) {
	f.route(p, w, x, n)
	f.group(n)
	clear(out[:n*f.Dim])
	limit := max(n, minBatchSlots)
	for e := 0; e < f.Experts; {
		e = f.batch(p, w, x, e, limit, out)
	}
	if w.HasShared {
		f.shared(p, w, x, n, out)
	}
}

// batch runs experts e0, e0+1, ... as long as their slots fit in limit (at
// least e0) and returns the expert after the last it ran. Slots are
// accumulated into out in expert order, as one expert at a time would.
func (f *FFN) batch(p *model.Pass, w *Experts, x []float32, e0, limit int, out []float32) int {
	dim, ff := f.Dim, f.Width
	lo, e := f.start[e0], e0+1
	for e < f.Experts && f.start[e+1]-lo <= limit {
		e++
	}
	slots := f.order[lo:f.start[e]]
	c := len(slots)
	if c == 0 {
		return e
	}
	f.xe, f.de = model.Grow(f.xe, c*dim), model.Grow(f.de, c*dim)
	ge, ue := hidden(&f.ge, p.Gate, c*ff), hidden(&f.ue, p.Up, c*ff)
	for i, s := range slots {
		r := int(s) / f.Used
		copy(f.xe[i*dim:(i+1)*dim], x[r*dim:(r+1)*dim])
	}
	defer clear(f.ps) // do not pin the weights
	f.ps = f.ps[:0]
	for k := e0; k < e; k++ {
		a, b := f.start[k]-lo, f.start[k+1]-lo
		if a == b {
			continue
		}
		xk := f.xe[a*dim : b*dim]
		f.ps = append(f.ps, w.Gate[k].Product(xk, b-a, ge[a*ff:b*ff]), w.Up[k].Product(xk, b-a, ue[a*ff:b*ff]))
		f.ExpertBytes += int64(len(w.Gate[k].Data) + len(w.Up[k].Data) + len(w.Down[k].Data))
	}
	p.MatMuls(f.ps)
	kernels.SwiGLU(p.Pool, ge, ge, ue)
	f.ps = f.ps[:0]
	for k := e0; k < e; k++ {
		if a, b := f.start[k]-lo, f.start[k+1]-lo; a < b {
			f.ps = append(f.ps, w.Down[k].Product(ge[a*ff:b*ff], b-a, f.de[a*dim:b*dim]))
		}
	}
	p.MatMuls(f.ps)
	for i, s := range slots {
		r := int(s) / f.Used
		axpy(out[r*dim:(r+1)*dim], f.wts[s], f.de[i*dim:(i+1)*dim])
	}
	return e
}

// route computes the router's logits for the n rows, then each row's
// chosen experts and their weights: softmax over every expert, the Used
// most probable kept (ties to the lower index), optionally renormalised.
func (f *FFN) route(p *model.Pass, w *Experts, x []float32, n int) {
	ne, k := f.Experts, f.Used
	f.logits = model.Grow(f.logits, n*ne)
	p.MatMul(&w.Router, x, n, f.logits)
	if cap(f.sel) < n*k {
		f.sel, f.wts = make([]int32, n*k), make([]float32, n*k)
	}
	f.sel, f.wts = f.sel[:n*k], f.wts[:n*k]
	for r := 0; r < n; r++ {
		probs := f.logits[r*ne : (r+1)*ne]
		kernels.Softmax(probs)
		sel, wts := f.sel[r*k:(r+1)*k], f.wts[r*k:(r+1)*k]
		topK(probs, sel, wts)
		if f.Normalize {
			var sum float32
			for _, v := range wts {
				sum += v
			}
			// llama.cpp clamps the sum at the smallest normal f16.
			kernels.Scale(wts, 1/max(sum, 6.103515625e-5))
		}
	}
}

// topK writes the indices of the len(sel) largest values of probs to sel,
// largest first, and the values to wts.
func topK(probs []float32, sel []int32, wts []float32) {
	for j := range sel {
		best := -1
		for e, v := range probs {
			if best >= 0 && v <= probs[best] {
				continue
			}
			if taken(sel[:j], e) {
				continue
			}
			best = e
		}
		sel[j], wts[j] = int32(best), probs[best]
	}
}

func taken(sel []int32, e int) bool {
	for _, s := range sel {
		if int(s) == e {
			return true
		}
	}
	return false
}

// group sorts the step's slots (row, k) by expert (a counting sort, rows in
// order within an expert).
func (f *FFN) group(n int) {
	ne := f.Experts
	if len(f.count) != ne {
		f.count, f.start = make([]int, ne), make([]int, ne+1)
	}
	clear(f.count)
	for _, e := range f.sel {
		f.count[e]++
	}
	f.start[0] = 0
	for e := 0; e < ne; e++ {
		f.start[e+1] = f.start[e] + f.count[e]
	}
	if cap(f.order) < len(f.sel) {
		f.order = make([]int32, len(f.sel))
	}
	f.order = f.order[:len(f.sel)]
	next := f.count // reused as the fill cursor
	for e := range next {
		next[e] = f.start[e]
	}
	for s, e := range f.sel {
		f.order[next[e]] = int32(s)
		next[e]++
	}
}

// shared adds the shared expert's output to out: a SwiGLU feed-forward of
// its own width over every row, weighed by σ(SharedGateInp·x) when there
// is a gate.
func (f *FFN) shared(p *model.Pass, w *Experts, x []float32, n int, out []float32) {
	dim, sh := f.Dim, f.SharedWidth
	sg, su := hidden(&f.sg, p.Gate, n*sh), hidden(&f.su, p.Up, n*sh)
	f.sd = model.Grow(f.sd, n*dim)
	p.MatMul(&w.SharedGate, x, n, sg)
	p.MatMul(&w.SharedUp, x, n, su)
	kernels.SwiGLU(p.Pool, sg, sg, su)
	p.MatMul(&w.SharedDown, sg, n, f.sd)
	for r := 0; r < n; r++ {
		g := float32(1)
		if w.SharedGateInp != nil {
			g = sigmoid(kernels.Dot(w.SharedGateInp, x[r*dim:(r+1)*dim]))
		}
		axpy(out[r*dim:(r+1)*dim], g, f.sd[r*dim:(r+1)*dim])
	}
}

// hidden returns n floats for hidden values: the start of pass (the
// pass's Gate or Up, sized for a dense feed-forward of feed_forward_length
// and idle while the experts run) when it is large enough, so that a
// step's memory stays close to what runtime.ComputeBytes plans; else *own,
// grown.
func hidden(own *[]float32, pass []float32, n int) []float32 {
	if len(pass) >= n {
		return pass[:n]
	}
	*own = model.Grow(*own, n)
	return *own
}

// axpy adds a·x to y.
func axpy(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}

func sigmoid(x float32) float32 { return float32(1 / (1 + math.Exp(-float64(x)))) }
