package gemma2

import (
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// workspace holds the activations of one step, grown to the largest batch seen.
type workspace struct {
	step model.Step
	model.Activations
	gate, up []float32 // (n, ffn)
}

func (ws *workspace) resize(cfg *model.Config, n int) {
	ws.Resize(cfg, n)
	ws.gate = model.Grow(ws.gate, n*cfg.FFN)
	ws.up = model.Grow(ws.up, n*cfg.FFN)
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
	kernels.Scale(ws.X[:n*cfg.Dim], m.p.EmbedScale)
	ws.step.Layers(b, cfg.Layers, func(l int) { m.attention(b, l, n) }, func(l int) { m.ffn(l, n) })
	ws.step.Logits(b, ws.X, cfg.Dim, cfg.Vocab,
		func(dst, src []float32) { kernels.RMSNorm(dst, src, m.w.OutputNorm, cfg.RMSEps) },
		func(in []float32, rows int, out []float32) {
			m.matmul(&m.w.TokenEmbd, in, rows, out)
			if m.p.FinalSoftcap > 0 {
				kernels.SoftCap(out, m.p.FinalSoftcap)
			}
		})
	ws.step.End(b)
	return nil
}

func (m *Model) matmul(w *model.Matrix, x []float32, n int, out []float32) {
	w.MatMul(m.pool, x, n, out, &m.ws.MM)
}

func (m *Model) attention(b *model.Batch, l, n int) {
	cfg, ws, w := m.cfg, &m.ws, &m.w.Blocks[l]
	dim := cfg.Dim
	model.RMSRows(ws.XN, ws.X, w.AttnNorm, n, cfg.RMSEps)
	m.matmul(&w.Q, ws.XN, n, ws.Q)
	m.matmul(&w.K, ws.XN, n, ws.K)
	m.matmul(&w.V, ws.XN, n, ws.V)
	// The query carries the 1/√query_pre_attn_scalar scale (llama.cpp
	// scales Qcur and calls attention with a kq scale of 1).
	ws.step.RopeStore(b, l, ws.Q, ws.K, ws.V, cfg.QDim(), cfg.KVDim(), m.p.QueryScale, &m.ropes[l])
	// The cache applies the layer's window: position p of a local layer
	// attends to p-window+1..p.
	params := kvcache.AttnParams{Scale: 1, Softcap: m.p.AttnSoftcap}
	ws.step.Attend(m.pool, b, l, cfg.Heads, cfg.HeadDim, ws.Q, ws.Att, params)
	m.matmul(&w.O, ws.Att, n, ws.Proj)
	model.RMSRows(ws.Proj, ws.Proj, w.PostAttnNorm, n, cfg.RMSEps)
	kernels.Add(ws.X[:n*dim], ws.X[:n*dim], ws.Proj[:n*dim])
}

func (m *Model) ffn(l, n int) {
	cfg, ws, w := m.cfg, &m.ws, &m.w.Blocks[l]
	dim, ff := cfg.Dim, cfg.FFN
	model.RMSRows(ws.XN, ws.X, w.FFNNorm, n, cfg.RMSEps)
	m.matmul(&w.Gate, ws.XN, n, ws.gate)
	m.matmul(&w.Up, ws.XN, n, ws.up)
	GeGLU(ws.gate[:n*ff], ws.gate[:n*ff], ws.up[:n*ff])
	m.matmul(&w.Down, ws.gate, n, ws.Proj)
	model.RMSRows(ws.Proj, ws.Proj, w.PostFFNNorm, n, cfg.RMSEps)
	kernels.Add(ws.X[:n*dim], ws.X[:n*dim], ws.Proj[:n*dim])
}
