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
	qDim, kvDim := cfg.QDim(), cfg.KVDim()
	model.RMSRows(p.XN, p.X, w.AttnNorm, n, cfg.RMSEps)
	p.QKV(&w.Q, &w.K, &w.V, n)
	scale(p.Q[:n*qDim], w.Scales[0])
	scale(p.K[:n*kvDim], w.Scales[1])
	scale(p.V[:n*kvDim], w.Scales[2])
	addBias(p.Q, w.QBias, n)
	addBias(p.K, w.KBias, n)
	addBias(p.V, w.VBias, n)
	params := kvcache.AttnParams{Scale: float32(1 / math.Sqrt(float64(cfg.HeadDim)))}
	if w.AttnSubNorm == nil {
		p.Attention(b, cfg, l, n, &m.rope, 1, params, &w.O)
	} else {
		p.AttendAll(b, cfg, l, &m.rope, 1, params)
		model.RMSRows(p.Att, p.Att, w.AttnSubNorm, n, cfg.RMSEps)
		p.MatMul(&w.O, p.Att, n, p.Proj)
	}
	scale(p.Proj[:n*cfg.Dim], w.Scales[3])
	p.Residual(n, cfg.Dim)
}

func (m *Model) ffn(_ *model.Batch, l, n int) {
	cfg, p, w := m.cfg, &m.pass, &m.w.Blocks[l]
	ff := cfg.FFN
	model.RMSRows(p.XN, p.X, w.FFNNorm, n, cfg.RMSEps)
	p.MatMul(&w.Gate, p.XN, n, p.Gate)
	p.MatMul(&w.Up, p.XN, n, p.Up)
	scale(p.Gate[:n*ff], w.Scales[4])
	scale(p.Up[:n*ff], w.Scales[5])
	if w.FFNSubNorm == nil && w.Scales[6] == 0 {
		p.SwiGLUDown(&w.Down, n, cfg)
		return
	}
	kernels.SwiGLU(p.Pool, p.Gate[:n*ff], p.Gate[:n*ff], p.Up[:n*ff])
	if w.FFNSubNorm != nil {
		model.RMSRows(p.Gate, p.Gate, w.FFNSubNorm, n, cfg.RMSEps)
	}
	p.MatMul(&w.Down, p.Gate, n, p.Proj)
	scale(p.Proj[:n*cfg.Dim], w.Scales[6])
	p.Residual(n, cfg.Dim)
}

// scale multiplies x by s, a per-matrix output scale (0: none).
func scale(x []float32, s float32) {
	if s != 0 {
		kernels.Scale(x, s)
	}
}
