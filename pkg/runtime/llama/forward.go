package llama

import (
	"math"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// Forward runs one step over every sequence of b. All rows of all sequences
// go through each weight matrix together, so the weights are read once per
// step however many sequences advance.
func (m *Model) Forward(b *model.Batch) error {
	return m.pass.Run(b, m.cfg, &m.w.Ends, m.attention, m.ffn)
}

func addBias(x []float32, bias []float32, n int) {
	if bias == nil {
		return
	}
	d := len(bias)
	for r := 0; r < n; r++ {
		kernels.Add(x[r*d:(r+1)*d], x[r*d:(r+1)*d], bias)
	}
}

func (m *Model) attention(b *model.Batch, l, n int) {
	cfg, p, w := m.cfg, &m.pass, &m.w.Blocks[l]
	model.RMSRows(p.XN, p.X, w.AttnNorm, n, cfg.RMSEps)
	p.QKV(&w.Q, &w.K, &w.V, n)
	addBias(p.Q, w.QBias, n)
	addBias(p.K, w.KBias, n)
	addBias(p.V, w.VBias, n)
	params := kvcache.AttnParams{Scale: float32(1 / math.Sqrt(float64(cfg.HeadDim)))}
	p.Attention(b, cfg, l, n, &m.rope, 1, params, &w.O)
	p.Residual(n, cfg.Dim)
}

func (m *Model) ffn(_ *model.Batch, l, n int) {
	cfg, p, w := m.cfg, &m.pass, &m.w.Blocks[l]
	model.RMSRows(p.XN, p.X, w.FFNNorm, n, cfg.RMSEps)
	p.MatMul(&w.Gate, p.XN, n, p.Gate)
	p.MatMul(&w.Up, p.XN, n, p.Up)
	p.SwiGLUDown(&w.Down, n, cfg)
}
