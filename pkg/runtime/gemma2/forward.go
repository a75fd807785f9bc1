package gemma2

import (
	"sync"
	"time"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// workspace holds the activations of one step, grown to the largest batch seen.
type workspace struct {
	x, xn     []float32 // (n, dim) residual stream and its normalised copy
	q, k, v   []float32 // (n, q_dim), (n, kv_dim), (n, kv_dim)
	att       []float32 // (n, q_dim) attention output
	gate, up  []float32 // (n, ffn)
	proj      []float32 // (n, dim) projection back to the residual
	last      []float32 // (rows needing logits, dim)
	mm        kernels.Scratch
	pos       []int // (n) position of each row
	seq       []int // (n) sequence index of each row
	scratches sync.Pool
}

func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

func (ws *workspace) resize(cfg *model.Config, n int) {
	ws.x = grow(ws.x, n*cfg.Dim)
	ws.xn = grow(ws.xn, n*cfg.Dim)
	ws.q = grow(ws.q, n*cfg.QDim())
	ws.k = grow(ws.k, n*cfg.KVDim())
	ws.v = grow(ws.v, n*cfg.KVDim())
	ws.att = grow(ws.att, n*cfg.QDim())
	ws.gate = grow(ws.gate, n*cfg.FFN)
	ws.up = grow(ws.up, n*cfg.FFN)
	ws.proj = grow(ws.proj, n*cfg.Dim)
	if cap(ws.pos) < n {
		ws.pos = make([]int, n)
		ws.seq = make([]int, n)
	}
	ws.pos, ws.seq = ws.pos[:n], ws.seq[:n]
}

// Forward runs one step over every sequence of b; all rows of all sequences
// go through each weight matrix together.
func (m *Model) Forward(b *model.Batch) error {
	cfg := m.cfg
	n := 0
	for i := range b.Seqs {
		s := &b.Seqs[i]
		if err := s.State.CheckRoom(len(s.Tokens)); err != nil {
			return err
		}
		for _, tok := range s.Tokens {
			if tok < 0 || int(tok) >= cfg.Vocab {
				return model.Invalidf("token id %d outside the vocabulary (0..%d)", tok, cfg.Vocab-1)
			}
		}
		n += len(s.Tokens)
	}
	if n == 0 {
		return nil
	}
	ws := &m.ws
	ws.resize(cfg, n)
	dim := cfg.Dim
	row := 0
	for si := range b.Seqs {
		s := &b.Seqs[si]
		for j, tok := range s.Tokens {
			ws.pos[row] = s.State.Pos + j
			ws.seq[row] = si
			x := ws.x[row*dim : (row+1)*dim]
			kernels.Row(m.w.TokenEmbd.Type, m.w.TokenEmbd.Data, dim, int(tok), x)
			kernels.Scale(x, m.p.EmbedScale)
			row++
		}
	}
	if b.Trace != nil {
		b.Trace.Start = time.Now()
		b.Trace.Layers = b.Trace.Layers[:0]
	}
	for l := range m.w.Blocks {
		var t0 time.Time
		if b.Trace != nil {
			t0 = time.Now()
		}
		m.attention(b, l, n)
		var t1 time.Time
		if b.Trace != nil {
			t1 = time.Now()
		}
		m.ffn(l, n)
		if b.Trace != nil {
			t2 := time.Now()
			b.Trace.Layers = append(b.Trace.Layers, model.LayerTiming{Attention: t1.Sub(t0), FFN: t2.Sub(t1)})
		}
	}
	m.logits(b)
	for i := range b.Seqs {
		b.Seqs[i].State.Pos += len(b.Seqs[i].Tokens)
	}
	if b.Trace != nil {
		b.Trace.Total = time.Since(b.Trace.Start)
	}
	return nil
}

func (m *Model) matmul(w *model.Matrix, x []float32, n int, out []float32) {
	kernels.MatMul(m.pool, w.Type, w.Data, w.Rows, w.Cols, x, n, out, &m.ws.mm)
}

// rmsRows normalises each of the n rows of x (width len(weight)) into dst.
func rmsRows(dst, x, weight []float32, n int, eps float32) {
	d := len(weight)
	for r := 0; r < n; r++ {
		kernels.RMSNorm(dst[r*d:(r+1)*d], x[r*d:(r+1)*d], weight, eps)
	}
}

func (m *Model) attention(b *model.Batch, l, n int) {
	cfg, ws, w := m.cfg, &m.ws, &m.w.Blocks[l]
	dim, qDim, kvDim, hd := cfg.Dim, cfg.QDim(), cfg.KVDim(), cfg.HeadDim
	rmsRows(ws.xn, ws.x, w.AttnNorm, n, cfg.RMSEps)
	m.matmul(&w.Q, ws.xn, n, ws.q)
	m.matmul(&w.K, ws.xn, n, ws.k)
	m.matmul(&w.V, ws.xn, n, ws.v)
	rope := &m.ropes[l]
	for r := 0; r < n; r++ {
		q := ws.q[r*qDim : (r+1)*qDim]
		rope.Apply(q, ws.pos[r])
		// The query carries the 1/√query_pre_attn_scalar scale (llama.cpp
		// scales Qcur and calls attention with a kq scale of 1).
		kernels.Scale(q, m.p.QueryScale)
		rope.Apply(ws.k[r*kvDim:(r+1)*kvDim], ws.pos[r])
		st := b.Seqs[ws.seq[r]].State
		st.Cache.Store(l, ws.pos[r], ws.k[r*kvDim:(r+1)*kvDim], ws.v[r*kvDim:(r+1)*kvDim])
	}
	// The cache applies the layer's window: position p of a local layer
	// attends to p-window+1..p.
	params := kvcache.AttnParams{Scale: 1, Softcap: m.p.AttnSoftcap}
	heads := cfg.Heads
	m.pool.Run(n*heads, func(lo, hi int) {
		s, _ := ws.scratches.Get().(*kvcache.Scratch)
		if s == nil {
			s = new(kvcache.Scratch)
		}
		for task := lo; task < hi; task++ {
			r, h := task/heads, task%heads
			c := b.Seqs[ws.seq[r]].State.Cache
			c.AttendHead(l, ws.pos[r], h, heads, ws.q[r*qDim+h*hd:r*qDim+(h+1)*hd], params, ws.att[r*qDim+h*hd:r*qDim+(h+1)*hd], s)
		}
		ws.scratches.Put(s)
	})
	m.matmul(&w.O, ws.att, n, ws.proj)
	rmsRows(ws.proj, ws.proj, w.PostAttnNorm, n, cfg.RMSEps)
	kernels.Add(ws.x[:n*dim], ws.x[:n*dim], ws.proj[:n*dim])
}

func (m *Model) ffn(l, n int) {
	cfg, ws, w := m.cfg, &m.ws, &m.w.Blocks[l]
	dim, ff := cfg.Dim, cfg.FFN
	rmsRows(ws.xn, ws.x, w.FFNNorm, n, cfg.RMSEps)
	m.matmul(&w.Gate, ws.xn, n, ws.gate)
	m.matmul(&w.Up, ws.xn, n, ws.up)
	GeGLU(ws.gate[:n*ff], ws.gate[:n*ff], ws.up[:n*ff])
	m.matmul(&w.Down, ws.gate, n, ws.proj)
	rmsRows(ws.proj, ws.proj, w.PostFFNNorm, n, cfg.RMSEps)
	kernels.Add(ws.x[:n*dim], ws.x[:n*dim], ws.proj[:n*dim])
}

// logits normalises the rows that need logits, projects them with the
// (tied) embedding and soft-caps the result.
func (m *Model) logits(b *model.Batch) {
	cfg, ws := m.cfg, &m.ws
	dim := cfg.Dim
	want := 0
	for i := range b.Seqs {
		want += min(b.Seqs[i].Logits, len(b.Seqs[i].Tokens))
	}
	if want == 0 {
		return
	}
	ws.last = grow(ws.last, want*dim)
	row, k := 0, 0
	for i := range b.Seqs {
		s := &b.Seqs[i]
		nl := min(s.Logits, len(s.Tokens))
		for j := len(s.Tokens) - nl; j < len(s.Tokens); j++ {
			r := row + j
			kernels.RMSNorm(ws.last[k*dim:(k+1)*dim], ws.x[r*dim:(r+1)*dim], m.w.OutputNorm, cfg.RMSEps)
			k++
		}
		row += len(s.Tokens)
	}
	out := make([]float32, want*cfg.Vocab)
	m.matmul(&m.w.TokenEmbd, ws.last, want, out)
	if m.p.FinalSoftcap > 0 {
		kernels.SoftCap(out, m.p.FinalSoftcap)
	}
	k = 0
	for i := range b.Seqs {
		s := &b.Seqs[i]
		nl := min(s.Logits, len(s.Tokens))
		s.Out = grow(s.Out, nl*cfg.Vocab)
		copy(s.Out, out[k*cfg.Vocab:(k+nl)*cfg.Vocab])
		k += nl
	}
}
