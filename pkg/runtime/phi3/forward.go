package phi3

import (
	"math"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// workspace holds the activations of one step, grown to the largest batch seen.
type workspace struct {
	step model.Step
	model.Activations
	qkv    []float32 // (n, q_dim+2*kv_dim) fused projection output
	gateUp []float32 // (n, 2*ffn) fused projection output
	act    []float32 // (n, ffn) silu(gate)·up
}

func (ws *workspace) resize(cfg *model.Config, n int) {
	ws.Resize(cfg, n)
	ws.qkv = model.Grow(ws.qkv, n*(cfg.QDim()+2*cfg.KVDim()))
	ws.gateUp = model.Grow(ws.gateUp, n*2*cfg.FFN)
	ws.act = model.Grow(ws.act, n*cfg.FFN)
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
	ws.step.Embed(b, &m.w.TokenEmbd, ws.X)
	rope := m.ropeFor(ws.step.Context)
	ws.step.Layers(b, cfg.Layers, func(l int) { m.attention(b, l, n, rope) }, func(l int) { m.ffn(l, n) })
	ws.step.Logits(b, ws.X, cfg.Dim, cfg.Vocab,
		func(dst, src []float32) { kernels.RMSNorm(dst, src, m.w.OutputNorm, cfg.RMSEps) },
		func(in []float32, rows int, out []float32) { m.matmul(&m.w.Output, in, rows, out) })
	ws.step.End(b)
	return nil
}

func (m *Model) matmul(w *model.Matrix, x []float32, n int, out []float32) {
	w.MatMul(m.pool, x, n, out, &m.ws.MM)
}

// project computes q, k and v of the n normalised rows, from the fused
// matrix (rows: q, then k, then v, as llama.cpp's build_qkv splits it) or
// from three separate ones.
func (m *Model) project(w *BlockWeights, n int) {
	ws := &m.ws
	if !m.w.FusedQKV {
		m.matmul(&w.Q, ws.XN, n, ws.Q)
		m.matmul(&w.K, ws.XN, n, ws.K)
		m.matmul(&w.V, ws.XN, n, ws.V)
		return
	}
	qDim, kvDim := m.cfg.QDim(), m.cfg.KVDim()
	width := qDim + 2*kvDim
	m.matmul(&w.QKV, ws.XN, n, ws.qkv)
	for r := 0; r < n; r++ {
		src := ws.qkv[r*width : (r+1)*width]
		copy(ws.Q[r*qDim:(r+1)*qDim], src[:qDim])
		copy(ws.K[r*kvDim:(r+1)*kvDim], src[qDim:qDim+kvDim])
		copy(ws.V[r*kvDim:(r+1)*kvDim], src[qDim+kvDim:])
	}
}

func (m *Model) attention(b *model.Batch, l, n int, rope *kernels.RoPE) {
	cfg, ws, w := m.cfg, &m.ws, &m.w.Blocks[l]
	dim, hd := cfg.Dim, cfg.HeadDim
	model.RMSRows(ws.XN, ws.X, w.AttnNorm, n, cfg.RMSEps)
	m.project(w, n)
	// llama.cpp scales the roped query and attends with a kq scale of 1.
	qScale := float32(1 / math.Sqrt(float64(hd)))
	ws.step.RopeStore(b, l, ws.Q, ws.K, ws.V, cfg.QDim(), cfg.KVDim(), qScale, rope)
	params := kvcache.AttnParams{Scale: 1}
	ws.step.Attend(m.pool, b, l, cfg.Heads, hd, ws.Q, ws.Att, params)
	m.matmul(&w.O, ws.Att, n, ws.Proj)
	kernels.Add(ws.X[:n*dim], ws.X[:n*dim], ws.Proj[:n*dim])
}

func (m *Model) ffn(l, n int) {
	cfg, ws, w := m.cfg, &m.ws, &m.w.Blocks[l]
	dim, ff := cfg.Dim, cfg.FFN
	model.RMSRows(ws.XN, ws.X, w.FFNNorm, n, cfg.RMSEps)
	m.matmul(&w.GateUp, ws.XN, n, ws.gateUp)
	// ggml_swiglu on the fused output: silu of the first half times the second.
	for r := 0; r < n; r++ {
		gu := ws.gateUp[r*2*ff : (r+1)*2*ff]
		kernels.SwiGLU(m.pool, ws.act[r*ff:(r+1)*ff], gu[:ff], gu[ff:])
	}
	m.matmul(&w.Down, ws.act, n, ws.Proj)
	kernels.Add(ws.X[:n*dim], ws.X[:n*dim], ws.Proj[:n*dim])
}
