// Package llama implements the Llama family of decoder-only transformers:
// Llama-2, Llama-3/3.1/3.2 (with rope_freqs frequency scaling), the tiny
// llama2.c "stories" models — and, with options, models that differ only in
// projection biases and RoPE layout (Qwen2), or in RMS norms of the
// attention output and of the gated product before their projections and
// optional per-matrix output scales (BitNet b1.58).
//
// One step: for each token x = embed(token); for each block
//
//	h  = x + Wo · attn(rope(Wq·rms(x)+bq), rope(Wk·rms(x)+bk), Wv·rms(x)+bv)
//	x' = h + Wdown · (silu(Wgate·rms(h)) ⊙ Wup·rms(h))
//
// then logits = Wout · rms(x). Attention is causal over the sequence's KV
// cache with grouped KV heads.
package llama

import (
	"fmt"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// Options selects the family variant. Architecture packages that reuse this
// forward pass (qwen2) set them; plain llama uses the zero value.
type Options struct {
	// NeoX rotates pairs (i, i+d/2) instead of (2i, 2i+1).
	NeoX bool
	// QKVBias requires bias vectors on the q, k and v projections.
	QKVBias bool
	// SubNorms requires BitNet's sub-norms: the attention heads' output and
	// the FFN's gated product are RMS-normalised (attn_sub_norm,
	// ffn_sub_norm) before Wo and Wdown.
	SubNorms bool
}

// Weights are the model's tensors, slices into the mapped file.
type Weights struct {
	model.Ends                // token embedding, output norm, output (tied: the embedding)
	RopeFreqs  []float32      // (rope_dims/2) Llama-3 frequency divisors, or nil
	Blocks     []BlockWeights // (layers)
}

// BlockWeights are one transformer block's tensors.
type BlockWeights struct {
	AttnNorm []float32    // (dim)
	Q        model.Matrix // (heads*head_dim, dim)
	K        model.Matrix // (kv_heads*head_dim, dim)
	V        model.Matrix // (kv_heads*head_dim, dim)
	QBias    []float32    // (heads*head_dim) or nil
	KBias    []float32    // (kv_heads*head_dim) or nil
	VBias    []float32    // (kv_heads*head_dim) or nil
	O        model.Matrix // (dim, heads*head_dim)
	FFNNorm  []float32    // (dim)
	Gate     model.Matrix // (ffn, dim)
	Up       model.Matrix // (ffn, dim)
	Down     model.Matrix // (dim, ffn)

	AttnSubNorm []float32 // (heads*head_dim) or nil (Options.SubNorms)
	FFNSubNorm  []float32 // (ffn) or nil
	// Scales multiply the outputs of Q, K, V, O, Gate, Up and Down, in
	// that order (BitNet's optional "<matrix>.scale" tensors; 0: none).
	Scales [7]float32
}

// Model is a Llama-family model bound to its weights.
type Model struct {
	cfg  *model.Config
	opts Options
	w    Weights
	rope kernels.RoPE
	pass model.Pass
}

var _ model.Model = (*Model)(nil)

// New builds a plain Llama model ("llama" architecture).
func New(src model.Source, env model.Env) (*Model, error) {
	return Build(src, "llama", Options{}, env)
}

// Build parses the hyper-parameters of arch, binds the weights and checks
// every shape. It is shared by the architectures of this family.
func Build(src model.Source, arch string, opts Options, env model.Env) (*Model, error) {
	cfg, err := model.ReadConfig(src, arch)
	if err != nil {
		return nil, err
	}
	b := model.NewBinder(src)
	w := Weights{}
	w.Ends = b.Ends(cfg, true)
	w.RopeFreqs = b.OptionalVector(model.TRopeFreqs, cfg.RopeDims/2)
	qDim, kvDim := cfg.QDim(), cfg.KVDim()
	w.Blocks = make([]BlockWeights, cfg.Layers)
	for i := range w.Blocks {
		l := &w.Blocks[i]
		l.AttnNorm = b.Vector(model.Layer(model.TAttnNorm, i), cfg.Dim)
		l.Q = b.Matrix(model.Layer(model.TAttnQ, i), qDim, cfg.Dim)
		l.K = b.Matrix(model.Layer(model.TAttnK, i), kvDim, cfg.Dim)
		l.V = b.Matrix(model.Layer(model.TAttnV, i), kvDim, cfg.Dim)
		if opts.QKVBias {
			l.QBias = b.Vector(model.Layer(model.TAttnQBias, i), qDim)
			l.KBias = b.Vector(model.Layer(model.TAttnKBias, i), kvDim)
			l.VBias = b.Vector(model.Layer(model.TAttnVBias, i), kvDim)
		} else {
			l.QBias = b.OptionalVector(model.Layer(model.TAttnQBias, i), qDim)
			l.KBias = b.OptionalVector(model.Layer(model.TAttnKBias, i), kvDim)
			l.VBias = b.OptionalVector(model.Layer(model.TAttnVBias, i), kvDim)
		}
		l.O = b.Matrix(model.Layer(model.TAttnOut, i), cfg.Dim, qDim)
		l.FFNNorm = b.Vector(model.Layer(model.TFFNNorm, i), cfg.Dim)
		l.Gate = b.Matrix(model.Layer(model.TFFNGate, i), cfg.FFN, cfg.Dim)
		l.Up = b.Matrix(model.Layer(model.TFFNUp, i), cfg.FFN, cfg.Dim)
		l.Down = b.Matrix(model.Layer(model.TFFNDown, i), cfg.Dim, cfg.FFN)
		if opts.SubNorms {
			l.AttnSubNorm = b.Vector(model.Layer(model.TAttnSubNorm, i), qDim)
			l.FFNSubNorm = b.Vector(model.Layer(model.TFFNSubNorm, i), cfg.FFN)
		}
		for j, name := range []string{model.TAttnQ, model.TAttnK, model.TAttnV, model.TAttnOut, model.TFFNGate, model.TFFNUp, model.TFFNDown} {
			if v := b.OptionalVector(model.Scale(model.Layer(name, i)), 1); v != nil {
				l.Scales[j] = v[0]
			}
		}
	}
	b.CheckBlocks(cfg.Layers)
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", arch, err)
	}
	m := &Model{cfg: cfg, opts: opts, w: w, pass: model.Pass{Pool: env.Pool}}
	m.rope = cfg.RoPE(opts.NeoX)
	m.rope.FreqFactors = w.RopeFreqs
	return m, nil
}

// Config returns the hyper-parameters.
func (m *Model) Config() *model.Config { return m.cfg }

// Weights returns the bound tensors.
func (m *Model) Weights() *Weights { return &m.w }

// NewState allocates a sequence.
func (m *Model) NewState(opts model.StateOptions) (*model.State, error) {
	return model.NewState(m.cfg, opts, nil)
}

// KVBytes is the KV cache memory of one sequence with opts.
func (m *Model) KVBytes(opts model.StateOptions) int64 {
	return model.KVBytes(m.cfg, opts, nil)
}
