package phi3

import (
	"math"
	"sync"
	"time"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// workspace holds the activations of one step, grown to the largest batch seen.
type workspace struct {
	x, xn     []float32 // (n, dim) residual stream and its normalised copy
	qkv       []float32 // (n, q_dim+2*kv_dim) fused projection output
	q, k, v   []float32 // (n, q_dim), (n, kv_dim), (n, kv_dim)
	att       []float32 // (n, q_dim) attention output
	gateUp    []float32 // (n, 2*ffn) fused projection output
	act       []float32 // (n, ffn) silu(gate)·up
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
	ws.qkv = grow(ws.qkv, n*(cfg.QDim()+2*cfg.KVDim()))
	ws.q = grow(ws.q, n*cfg.QDim())
	ws.k = grow(ws.k, n*cfg.KVDim())
	ws.v = grow(ws.v, n*cfg.KVDim())
	ws.att = grow(ws.att, n*cfg.QDim())
	ws.gateUp = grow(ws.gateUp, n*2*cfg.FFN)
	ws.act = grow(ws.act, n*cfg.FFN)
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
	row := 0
	for si := range b.Seqs {
		s := &b.Seqs[si]
		for j, tok := range s.Tokens {
			ws.pos[row] = s.State.Pos + j
			ws.seq[row] = si
			kernels.Row(m.w.TokenEmbd.Type, m.w.TokenEmbd.Data, cfg.Dim, int(tok), ws.x[row*cfg.Dim:(row+1)*cfg.Dim])
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
		st := b.Seqs[ws.seq[r]].State
		rope := m.ropeFor(st.Cache.Geometry().Context)
		q := ws.q[r*qDim : (r+1)*qDim]
		rope.Apply(q, ws.pos[r])
		// llama.cpp scales the roped query and attends with a kq scale of 1.
		kernels.Scale(q, qScale)
		rope.Apply(ws.k[r*kvDim:(r+1)*kvDim], ws.pos[r])
		st.Cache.Store(l, ws.pos[r], ws.k[r*kvDim:(r+1)*kvDim], ws.v[r*kvDim:(r+1)*kvDim])
	}
	params := kvcache.AttnParams{Scale: 1}
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
		act := ws.act[r*ff : (r+1)*ff]
		copy(act, gu[:ff])
		kernels.SiLU(act)
		kernels.Mul(act, act, gu[ff:])
	}
	m.matmul(&w.Down, ws.act, n, ws.proj)
	kernels.Add(ws.x[:n*dim], ws.x[:n*dim], ws.proj[:n*dim])
}

// logits normalises the rows that need logits and projects them to the vocabulary.
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
	m.matmul(&m.w.Output, ws.last, want, out)
	k = 0
	for i := range b.Seqs {
		s := &b.Seqs[i]
		nl := min(s.Logits, len(s.Tokens))
		s.Out = grow(s.Out, nl*cfg.Vocab)
		copy(s.Out, out[k*cfg.Vocab:(k+nl)*cfg.Vocab])
		k += nl
	}
}
