package llama

import (
	"math"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// workspace holds the activations of one step, grown to the largest batch seen.
type workspace struct {
	step     model.Step
	x, xn    []float32 // (n, dim) residual stream and its normalised copy
	q, k, v  []float32 // (n, q_dim), (n, kv_dim), (n, kv_dim)
	att      []float32 // (n, q_dim) attention output
	gate, up []float32 // (n, ffn)
	proj     []float32 // (n, dim) projection back to the residual
	mm       kernels.Scratch
}

func (ws *workspace) resize(cfg *model.Config, n int) {
	ws.x = model.Grow(ws.x, n*cfg.Dim)
	ws.xn = model.Grow(ws.xn, n*cfg.Dim)
	ws.q = model.Grow(ws.q, n*cfg.QDim())
	ws.k = model.Grow(ws.k, n*cfg.KVDim())
	ws.v = model.Grow(ws.v, n*cfg.KVDim())
	ws.att = model.Grow(ws.att, n*cfg.QDim())
	ws.gate = model.Grow(ws.gate, n*cfg.FFN)
	ws.up = model.Grow(ws.up, n*cfg.FFN)
	ws.proj = model.Grow(ws.proj, n*cfg.Dim)
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
	row := 0
	for si := range b.Seqs {
		for _, tok := range b.Seqs[si].Tokens {
			m.w.TokenEmbd.Row(int(tok), ws.x[row*cfg.Dim:(row+1)*cfg.Dim])
			row++
		}
	}
	ws.step.Layers(b, cfg.Layers, func(l int) { m.attention(b, l, n) }, func(l int) { m.ffn(l, n) })
	ws.step.Logits(b, ws.x, cfg.Dim, cfg.Vocab,
		func(dst, src []float32) { kernels.RMSNorm(dst, src, m.w.OutputNorm, cfg.RMSEps) },
		func(in []float32, rows int, out []float32) { m.matmul(&m.w.Output, in, rows, out) })
	ws.step.End(b)
	return nil
}

func (m *Model) matmul(w *model.Matrix, x []float32, n int, out []float32) {
	kernels.MatMulLayout(m.pool, w.Type, w.Layout, w.Data, w.Rows, w.Cols, x, n, out, &m.ws.mm)
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
	dim, qDim, kvDim, hd := cfg.Dim, cfg.QDim(), cfg.KVDim(), cfg.HeadDim
	for r := 0; r < n; r++ {
		kernels.RMSNorm(ws.xn[r*dim:(r+1)*dim], ws.x[r*dim:(r+1)*dim], w.AttnNorm, cfg.RMSEps)
	}
	m.matmul(&w.Q, ws.xn, n, ws.q)
	m.matmul(&w.K, ws.xn, n, ws.k)
	m.matmul(&w.V, ws.xn, n, ws.v)
	addBias(ws.q, w.QBias, n)
	addBias(ws.k, w.KBias, n)
	addBias(ws.v, w.VBias, n)
	for r := 0; r < n; r++ {
		m.rope.Apply(ws.q[r*qDim:(r+1)*qDim], ws.step.Pos[r])
		m.rope.Apply(ws.k[r*kvDim:(r+1)*kvDim], ws.step.Pos[r])
		st := b.Seqs[ws.step.Seq[r]].State
		st.Cache.Store(l, ws.step.Pos[r], ws.k[r*kvDim:(r+1)*kvDim], ws.v[r*kvDim:(r+1)*kvDim])
	}
	params := kvcache.AttnParams{Scale: float32(1 / math.Sqrt(float64(hd)))}
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
	m.matmul(&w.Gate, ws.xn, n, ws.gate)
	m.matmul(&w.Up, ws.xn, n, ws.up)
	kernels.SwiGLU(m.pool, ws.gate[:n*ff], ws.gate[:n*ff], ws.up[:n*ff])
	m.matmul(&w.Down, ws.gate, n, ws.proj)
	kernels.Add(ws.x[:n*dim], ws.x[:n*dim], ws.proj[:n*dim])
}
