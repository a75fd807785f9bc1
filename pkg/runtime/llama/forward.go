package llama

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
	gate, up []float32 // (n, ffn)
}

func (ws *workspace) resize(cfg *model.Config, n int) {
	ws.Resize(cfg, n)
	ws.gate = model.Grow(ws.gate, n*cfg.FFN)
	ws.up = model.Grow(ws.up, n*cfg.FFN)
}

// Forward runs one step over every sequence of b. All rows of all sequences
// go through each weight matrix together, so the weights are read once per
// step however many sequences advance.
func (m *Model) Forward(b *model.Batch) error {
	cfg, ws := m.cfg, &m.ws
	n, err := ws.step.Begin(b, cfg.Vocab)
	if err != nil || n == 0 {
		return err
	}
	ws.resize(cfg, n)
	ws.step.Embed(b, &m.w.TokenEmbd, ws.X)
	ws.step.Layers(b, cfg.Layers, func(l int) { m.attention(b, l, n) }, func(l int) { m.ffn(l, n) })
	ws.step.Logits(b, ws.X, cfg.Dim, cfg.Vocab,
		func(dst, src []float32) { kernels.RMSNorm(dst, src, m.w.OutputNorm, cfg.RMSEps) },
		func(in []float32, rows int, out []float32) { m.matmul(&m.w.Output, in, rows, out) })
	ws.step.End(b)
	return nil
}

func (m *Model) matmul(w *model.Matrix, x []float32, n int, out []float32) {
	w.MatMul(m.pool, x, n, out, &m.ws.MM)
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
	cfg, ws, w := m.cfg, &m.ws, &m.w.Blocks[l]
	dim, hd := cfg.Dim, cfg.HeadDim
	model.RMSRows(ws.XN, ws.X, w.AttnNorm, n, cfg.RMSEps)
	m.matmul(&w.Q, ws.XN, n, ws.Q)
	m.matmul(&w.K, ws.XN, n, ws.K)
	m.matmul(&w.V, ws.XN, n, ws.V)
	addBias(ws.Q, w.QBias, n)
	addBias(ws.K, w.KBias, n)
	addBias(ws.V, w.VBias, n)
	ws.step.RopeStore(b, l, ws.Q, ws.K, ws.V, cfg.QDim(), cfg.KVDim(), 1, &m.rope)
	params := kvcache.AttnParams{Scale: float32(1 / math.Sqrt(float64(hd)))}
	ws.step.Attend(m.pool, b, l, cfg.Heads, hd, ws.Q, ws.Att, params)
	m.matmul(&w.O, ws.Att, n, ws.Proj)
	kernels.Add(ws.X[:n*dim], ws.X[:n*dim], ws.Proj[:n*dim])
}

func (m *Model) ffn(l, n int) {
	cfg, ws, w := m.cfg, &m.ws, &m.w.Blocks[l]
	dim, ff := cfg.Dim, cfg.FFN
	model.RMSRows(ws.XN, ws.X, w.FFNNorm, n, cfg.RMSEps)
	m.matmul(&w.Gate, ws.XN, n, ws.gate)
	m.matmul(&w.Up, ws.XN, n, ws.up)
	kernels.SwiGLU(m.pool, ws.gate[:n*ff], ws.gate[:n*ff], ws.up[:n*ff])
	m.matmul(&w.Down, ws.gate, n, ws.Proj)
	kernels.Add(ws.X[:n*dim], ws.X[:n*dim], ws.Proj[:n*dim])
}
