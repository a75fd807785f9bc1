package gemma2

import (
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// Forward runs one step over every sequence of b; all rows of all sequences
// go through each weight matrix together. The embeddings are scaled and the
// logits capped as the weights' Ends say.
func (m *Model) Forward(b *model.Batch) error {
	return m.pass.Run(b, m.cfg, &m.w.Ends, m.attention, m.ffn)
}

func (m *Model) attention(b *model.Batch, l, n int) {
	cfg, p, w := m.cfg, &m.pass, &m.w.Blocks[l]
	model.RMSRows(p.XN, p.X, w.AttnNorm, n, cfg.RMSEps)
	p.QKV(&w.Q, &w.K, &w.V, n)
	// The query carries the 1/√query_pre_attn_scalar scale (llama.cpp
	// scales Qcur and calls attention with a kq scale of 1). The cache
	// applies the layer's window: position p of a local layer attends to
	// p-window+1..p.
	params := kvcache.AttnParams{Scale: 1, Softcap: m.p.AttnSoftcap}
	p.Attention(b, cfg, l, n, &m.ropes[l], m.p.QueryScale, params, &w.O)
	model.RMSRows(p.Proj, p.Proj, w.PostAttnNorm, n, cfg.RMSEps)
	p.Residual(n, cfg.Dim)
}

func (m *Model) ffn(_ *model.Batch, l, n int) {
	cfg, p, w := m.cfg, &m.pass, &m.w.Blocks[l]
	ff := cfg.FFN
	model.RMSRows(p.XN, p.X, w.FFNNorm, n, cfg.RMSEps)
	p.MatMul(&w.Gate, p.XN, n, p.Gate)
	p.MatMul(&w.Up, p.XN, n, p.Up)
	GeGLU(p.Gate[:n*ff], p.Gate[:n*ff], p.Up[:n*ff])
	p.MatMul(&w.Down, p.Gate, n, p.Proj)
	model.RMSRows(p.Proj, p.Proj, w.PostFFNNorm, n, cfg.RMSEps)
	p.Residual(n, cfg.Dim)
}
