package model

import (
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
)

// Pass is what a forward pass keeps from step to step: the plumbing of a
// step and the activations of a Llama-shaped block, grown to the largest
// batch seen. An architecture keeps one in its model, sets Pool, and adds
// the buffers its own block needs besides.
type Pass struct {
	Step
	Pool     *kernels.Pool
	X, XN    []float32 // (n, dim) residual stream and its normalised copy
	Q, K, V  []float32 // (n, q_dim), (n, kv_dim), (n, kv_dim)
	Att      []float32 // (n, q_dim) attention output
	Gate, Up []float32 // (n, ffn) feed-forward projections; Gate then holds their product
	Proj     []float32 // (n, dim) projection back to the residual stream
	MM       kernels.Scratch
}

// Ends are the tensors and constants at both ends of the layers (an
// architecture's Weights embed them; Binder.Ends binds them).
type Ends struct {
	TokenEmbd  Matrix    // (vocab, dim) token embeddings
	EmbedScale float32   // multiplies the embeddings (Gemma: √dim); 0: none
	OutputNorm []float32 // (dim)
	Output     Matrix    // (vocab, dim) output projection; the embedding when tied
	Softcap    float32   // caps the logits at c·tanh(x/c) (Gemma 2); 0: none
	LogitScale float32   // multiplies the logits (Granite: 1/logit_scale); 0: none
}

// Run is one forward step over b: every row's token embedded, then for
// each layer attention(b, l, n) and ffn(b, l, n) on the n rows (timed when
// b asks), then the rows that need logits or hidden states normalised (and
// projected), and every sequence advanced.
func (p *Pass) Run(b *Batch, cfg *Config, e *Ends, attention, ffn func(b *Batch, l, n int)) error {
	n, err := p.Begin(b, cfg.Vocab)
	if err != nil || n == 0 {
		return err
	}
	p.resize(cfg, n)
	p.Embed(b, &e.TokenEmbd, p.X)
	if e.EmbedScale != 0 {
		kernels.Scale(p.X[:n*cfg.Dim], e.EmbedScale)
	}
	p.Layers(b, cfg.Layers, func(l int) { attention(b, l, n) }, func(l int) { ffn(b, l, n) })
	p.Outputs(b, p.X, cfg.Dim, cfg.Vocab,
		func(dst, src []float32) { kernels.RMSNorm(dst, src, e.OutputNorm, cfg.RMSEps) },
		func(in []float32, rows int, out []float32) {
			p.MatMul(&e.Output, in, rows, out)
			if e.Softcap > 0 {
				kernels.SoftCap(out, e.Softcap)
			}
			if e.LogitScale != 0 {
				kernels.Scale(out[:rows*cfg.Vocab], e.LogitScale)
			}
		})
	p.End(b)
	return nil
}

func (p *Pass) resize(cfg *Config, n int) {
	p.X = Grow(p.X, n*cfg.Dim)
	p.XN = Grow(p.XN, n*cfg.Dim)
	p.Q = Grow(p.Q, n*cfg.QDim())
	p.K = Grow(p.K, n*cfg.KVDim())
	p.V = Grow(p.V, n*cfg.KVDim())
	p.Att = Grow(p.Att, n*cfg.QDim())
	p.Gate = Grow(p.Gate, n*cfg.FFN)
	p.Up = Grow(p.Up, n*cfg.FFN)
	p.Proj = Grow(p.Proj, n*cfg.Dim)
}

// MatMul multiplies the n rows of x by w into out, on the pass's pool.
func (p *Pass) MatMul(w *Matrix, x []float32, n int, out []float32) {
	w.MatMul(p.Pool, x, n, out, &p.MM)
}

// MatMuls computes a batch of products (Matrix.Product) as MatMul would
// each, in two pool passes for the whole batch.
func (p *Pass) MatMuls(ps []kernels.Product) {
	kernels.MatMuls(p.Pool, ps, &p.MM)
}

// QKV projects the n normalised rows (XN) to queries, keys and values.
func (p *Pass) QKV(q, k, v *Matrix, n int) {
	p.MatMul(q, p.XN, n, p.Q)
	p.MatMul(k, p.XN, n, p.K)
	p.MatMul(v, p.XN, n, p.V)
}

// Attention is the part of an attention half every architecture here
// shares: the query and key heads rotated by rope at each row's position
// (the query then multiplied by qScale, 1: not at all), keys and values
// stored in the sequences' caches at layer l, causal attention with params,
// and the heads' outputs projected by o into Proj.
func (p *Pass) Attention(b *Batch, cfg *Config, l, n int, rope *kernels.RoPE, qScale float32, params kvcache.AttnParams, o *Matrix) {
	p.AttendAll(b, cfg, l, rope, qScale, params)
	p.MatMul(o, p.Att, n, p.Proj)
}

// AttendAll is Attention without the output projection: the heads'
// outputs are left in Att (an architecture that normalises them first,
// BitNet, projects them itself).
func (p *Pass) AttendAll(b *Batch, cfg *Config, l int, rope *kernels.RoPE, qScale float32, params kvcache.AttnParams) {
	p.ropeStore(b, l, cfg.QDim(), cfg.KVDim(), qScale, rope)
	p.Attend(p.Pool, b, l, cfg.Heads, cfg.HeadDim, p.Q, p.Att, params)
}

// ropeStore rotates the query and key heads of every row of the step by
// rope at the row's position, multiplies the rotated query by qScale, and
// stores the row's key and value in its sequence's cache at layer l.
func (p *Pass) ropeStore(b *Batch, l, qDim, kvDim int, qScale float32, rope *kernels.RoPE) {
	for r, pos := range p.Pos {
		qr, kr := p.Q[r*qDim:(r+1)*qDim], p.K[r*kvDim:(r+1)*kvDim]
		rope.Apply(qr, pos)
		if qScale != 1 {
			kernels.Scale(qr, qScale)
		}
		rope.Apply(kr, pos)
		b.Seqs[p.Seq[r]].State.Cache.Store(l, pos, kr, p.V[r*kvDim:(r+1)*kvDim])
	}
}

// Residual adds Proj to the residual stream X (n rows of dim).
func (p *Pass) Residual(n, dim int) {
	kernels.Add(p.X[:n*dim], p.X[:n*dim], p.Proj[:n*dim])
}

// SwiGLUDown ends a SwiGLU feed-forward half: Gate = silu(Gate)·Up, then the
// residual stream gains down·Gate.
func (p *Pass) SwiGLUDown(down *Matrix, n int, cfg *Config) {
	ff := cfg.FFN
	kernels.SwiGLU(p.Pool, p.Gate[:n*ff], p.Gate[:n*ff], p.Up[:n*ff])
	p.MatMul(down, p.Gate, n, p.Proj)
	p.Residual(n, cfg.Dim)
}

// RMSRows normalises each of the n rows of x (len(weight) wide) into dst,
// which may be x.
func RMSRows(dst, x, weight []float32, n int, eps float32) {
	d := len(weight)
	for r := 0; r < n; r++ {
		kernels.RMSNorm(dst[r*d:(r+1)*d], x[r*d:(r+1)*d], weight, eps)
	}
}

// SplitRows copies each of the n rows of src, the output of a fused
// projection, into consecutive parts: row r's first len(dst[0])/n values to
// dst[0]'s row r, the next len(dst[1])/n to dst[1]'s, and so on.
func SplitRows(src []float32, n int, dst ...[]float32) {
	off := 0
	for r := 0; r < n; r++ {
		for _, d := range dst {
			w := len(d) / n
			off += copy(d[r*w:(r+1)*w], src[off:off+w])
		}
	}
}
