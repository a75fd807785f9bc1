package phi3

import (
	"math"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// workspace holds the activations of one step, grown to the largest batch seen.
type workspace struct {
	step    model.Step
	x, xn   []float32 // (n, dim) residual stream and its normalised copy
	qkv     []float32 // (n, q_dim+2*kv_dim) fused projection output
	q, k, v []float32 // (n, q_dim), (n, kv_dim), (n, kv_dim)
	att     []float32 // (n, q_dim) attention output
	gateUp  []float32 // (n, 2*ffn) fused projection output
	act     []float32 // (n, ffn) silu(gate)·up
	proj    []float32 // (n, dim) projection back to the residual
	mm      kernels.Scratch
}

func (ws *workspace) resize(cfg *model.Config, n int) {
	ws.x = model.Grow(ws.x, n*cfg.Dim)
	ws.xn = model.Grow(ws.xn, n*cfg.Dim)
	ws.qkv = model.Grow(ws.qkv, n*(cfg.QDim()+2*cfg.KVDim()))
	ws.q = model.Grow(ws.q, n*cfg.QDim())
	ws.k = model.Grow(ws.k, n*cfg.KVDim())
	ws.v = model.Grow(ws.v, n*cfg.KVDim())
	ws.att = model.Grow(ws.att, n*cfg.QDim())
	ws.gateUp = model.Grow(ws.gateUp, n*2*cfg.FFN)
	ws.act = model.Grow(ws.act, n*cfg.FFN)
	ws.proj = model.Grow(ws.proj, n*cfg.Dim)
}

// Forward runs one step over every sequence of b; all rows of all sequences
// go through each weight matrix together.
func (m *Model) Forward(b *model.Batch) error {
	cfg, ws := m.cfg, &m.ws
	n, err := ws.step.Begin(b, cfg.Vocab)
	if err != nil || n == 0 {
		return err
	}
	ws.resize(cfg, n)
	dim := cfg.Dim
	row := 0
	for si := range b.Seqs {
		for _, tok := range b.Seqs[si].Tokens {
			x := ws.x[row*dim : (row+1)*dim]
			m.w.TokenEmbd.Row(int(tok), x)
			row++
		}
	}
	ws.step.Layers(b, cfg.Layers, func(l int) { m.attention(b, l, n) }, func(l int) { m.ffn(l, n) })
	ws.step.Logits(b, ws.x, dim, cfg.Vocab,
		func(dst, src []float32) { kernels.RMSNorm(dst, src, m.w.OutputNorm, cfg.RMSEps) },
		func(in []float32, rows int, out []float32) {
			m.matmul(&m.w.Output, in, rows, out)
		})
	ws.step.End(b)
	return nil
}

func (m *Model) matmul(w *model.Matrix, x []float32, n int, out []float32) {
	kernels.MatMulLayout(m.pool, w.Type, w.Layout, w.Data, w.Rows, w.Cols, x, n, out, &m.ws.mm)
}

// project computes q, k and v of the n normalised rows, from the fused
// matrix (rows: q, then k, then v, as llama.cpp's build_qkv splits it) or
// from three separate ones.
func (m *Model) project(w *BlockWeights, n int) {
	ws := &m.ws
	if !m.w.FusedQKV {
		m.matmul(&w.Q, ws.xn, n, ws.q)
		m.matmul(&w.K, ws.xn, n, ws.k)
		m.matmul(&w.V, ws.xn, n, ws.v)
		return
	}
	qDim, kvDim := m.cfg.QDim(), m.cfg.KVDim()
	width := qDim + 2*kvDim
	m.matmul(&w.QKV, ws.xn, n, ws.qkv)
	for r := 0; r < n; r++ {
		src := ws.qkv[r*width : (r+1)*width]
		copy(ws.q[r*qDim:(r+1)*qDim], src[:qDim])
		copy(ws.k[r*kvDim:(r+1)*kvDim], src[qDim:qDim+kvDim])
		copy(ws.v[r*kvDim:(r+1)*kvDim], src[qDim+kvDim:])
	}
}

func (m *Model) attention(b *model.Batch, l, n int) {
	cfg, ws, w := m.cfg, &m.ws, &m.w.Blocks[l]
	dim, qDim, kvDim, hd := cfg.Dim, cfg.QDim(), cfg.KVDim(), cfg.HeadDim
	for r := 0; r < n; r++ {
		kernels.RMSNorm(ws.xn[r*dim:(r+1)*dim], ws.x[r*dim:(r+1)*dim], w.AttnNorm, cfg.RMSEps)
	}
	m.project(w, n)
	qScale := float32(1 / math.Sqrt(float64(hd)))
	for r := 0; r < n; r++ {
		st := b.Seqs[ws.step.Seq[r]].State
		rope := m.ropeFor(st.Cache.Geometry().Context)
		q := ws.q[r*qDim : (r+1)*qDim]
		rope.Apply(q, ws.step.Pos[r])
		// llama.cpp scales the roped query and attends with a kq scale of 1.
		kernels.Scale(q, qScale)
		rope.Apply(ws.k[r*kvDim:(r+1)*kvDim], ws.step.Pos[r])
		st.Cache.Store(l, ws.step.Pos[r], ws.k[r*kvDim:(r+1)*kvDim], ws.v[r*kvDim:(r+1)*kvDim])
	}
	params := kvcache.AttnParams{Scale: 1}
	ws.step.Attend(m.pool, b, l, cfg.Heads, hd, ws.q, ws.att, params)
	m.matmul(&w.O, ws.att, n, ws.proj)
	kernels.Add(ws.x[:n*dim], ws.x[:n*dim], ws.proj[:n*dim])
}

func (m *Model) ffn(l, n int) {
	cfg, ws, w := m.cfg, &m.ws, &m.w.Blocks[l]
	dim, ff := cfg.Dim, cfg.FFN
	for r := 0; r < n; r++ {
		kernels.RMSNorm(ws.xn[r*dim:(r+1)*dim], ws.x[r*dim:(r+1)*dim], w.FFNNorm, cfg.RMSEps)
	}
	m.matmul(&w.GateUp, ws.xn, n, ws.gateUp)
	// ggml_swiglu on the fused output: silu of the first half times the second.
	for r := 0; r < n; r++ {
		gu := ws.gateUp[r*2*ff : (r+1)*2*ff]
		kernels.SwiGLU(m.pool, ws.act[r*ff:(r+1)*ff], gu[:ff], gu[ff:])
	}
	m.matmul(&w.Down, ws.act, n, ws.proj)
	kernels.Add(ws.x[:n*dim], ws.x[:n*dim], ws.proj[:n*dim])
}
