package phi3

import (
	"math"

	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// Forward runs one step over every sequence of b; all rows of all sequences
// go through each weight matrix together.
func (m *Model) Forward(b *model.Batch) error {
	return m.pass.Run(b, m.cfg, &m.w.Ends, m.attention, m.ffn)
}

// project computes q, k and v of the n normalised rows, from the fused
// matrix (rows: q, then k, then v, as llama.cpp's build_qkv splits it) or
// from three separate ones.
func (m *Model) project(w *BlockWeights, n int) {
	p := &m.pass
	if !m.w.FusedQKV {
		p.QKV(&w.Q, &w.K, &w.V, n)
		return
	}
	m.fused = model.Grow(m.fused, n*(m.cfg.QDim()+2*m.cfg.KVDim()))
	p.MatMul(&w.QKV, p.XN, n, m.fused)
	model.SplitRows(m.fused, n, p.Q, p.K, p.V)
}

func (m *Model) attention(b *model.Batch, l, n int) {
	cfg, p, w := m.cfg, &m.pass, &m.w.Blocks[l]
	model.RMSRows(p.XN, p.X, w.AttnNorm, n, cfg.RMSEps)
	m.project(w, n)
	// llama.cpp scales the roped query and attends with a kq scale of 1.
	qScale := float32(1 / math.Sqrt(float64(cfg.HeadDim)))
	p.Attention(b, cfg, l, n, m.ropeFor(p.Context), qScale, kvcache.AttnParams{Scale: 1}, &w.O)
	p.Residual(n, cfg.Dim)
}

// ffn is Llama's SwiGLU block with the gate and up projections fused in
// one matrix (rows: gate, then up; llama.cpp's ggml_swiglu splits it so).
func (m *Model) ffn(_ *model.Batch, l, n int) {
	cfg, p, w := m.cfg, &m.pass, &m.w.Blocks[l]
	model.RMSRows(p.XN, p.X, w.FFNNorm, n, cfg.RMSEps)
	m.fused = model.Grow(m.fused, n*2*cfg.FFN)
	p.MatMul(&w.GateUp, p.XN, n, m.fused)
	model.SplitRows(m.fused, n, p.Gate, p.Up)
	p.SwiGLUDown(&w.Down, n, cfg)
}
