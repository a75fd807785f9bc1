// Package moe implements decoder-only transformers whose feed-forward half
// is a mixture of experts, as llama.cpp 0a50d99 runs its olmoe, qwen2moe and
// granitemoe architectures. The three share everything but a few options,
// so they share this one forward pass, the way qwen2 and bitnet share
// llama's: each family is a small package (olmoe, qwen2moe, granitemoe)
// that calls Build with its Options, and one registry line.
//
// One step: for each token x = s_e · embed(token); for each block
//
//	h  = x + s_r · (Wo · attn(rope(qn(Wq·rms(x)+bq)), rope(kn(Wk·rms(x)+bk)), Wv·rms(x)+bv) + bo)
//	x' = h + s_r · (Σ_{e ∈ topk(p)} p_e · E_e(rms(h)) + g · S(rms(h)))
//
// where p = softmax(Wr · rms(h)) over the experts (renormalised over the top
// k where the family says), E_e(y) = Wdown_e · (silu(Wgate_e·y) ⊙ Wup_e·y),
// S is an optional shared expert of the same form and g its optional
// sigmoid gate; then logits = s_l · Wout · rms(x). qn and kn are olmoe's RMS
// norms over the whole query and key projections; s_e, s_r, s_l and the
// attention scale are Granite's multipliers (1 elsewhere).
package moe

import (
	"fmt"
	"math"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// MaxExperts is llama.cpp's LLAMA_MAX_EXPERTS: files with more are refused.
const MaxExperts = 512

// Shared says whether a family has a shared expert.
type Shared int

const (
	NoShared       Shared = iota // olmoe
	GatedShared                  // qwen2moe: always, weighed by a sigmoid gate
	OptionalShared               // granitemoe: when expert_shared_feed_forward_length > 0, ungated
)

// Options selects the family.
type Options struct {
	// NeoX rotates pairs (i, i+d/2) instead of (2i, 2i+1).
	NeoX bool
	// QKNorm requires RMS norms of the whole query and key projections
	// (attn_q_norm, attn_k_norm) before RoPE (olmoe).
	QKNorm bool
	// Normalize renormalises the top-k expert weights to sum to 1.
	Normalize bool
	// Shared is the family's shared expert.
	Shared Shared
	// Granite reads Granite's multipliers: embedding_scale, residual_scale,
	// attention.scale and the required logit_scale.
	Granite bool
	// ExpertFFN reads the experts' width from expert_feed_forward_length
	// (default feed_forward_length / expert_used_count) and the shared
	// expert's from expert_shared_feed_forward_length (default
	// feed_forward_length), as qwen2moe does; otherwise the experts are
	// feed_forward_length wide.
	ExpertFFN bool
}

// Weights are the model's tensors, slices into the mapped file.
type Weights struct {
	model.Ends                // token embedding, output norm, output (tied: the embedding), Granite's scales
	RopeFreqs  []float32      // (rope_dims/2) frequency divisors (Granite), or nil
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
	QNorm    []float32    // (heads*head_dim) or nil (Options.QKNorm)
	KNorm    []float32    // (kv_heads*head_dim) or nil
	O        model.Matrix // (dim, heads*head_dim)
	OBias    []float32    // (dim) or nil
	FFNNorm  []float32    // (dim)
	MoE      Experts
}

// Params are the hyper-parameters of a mixture-of-experts model beyond the
// shared ones.
type Params struct {
	Experts, Used int     // experts per block, experts per token
	ExpertFFN     int     // each expert's hidden width
	SharedFFN     int     // the shared expert's hidden width (0: none)
	Normalize     bool    // top-k weights renormalised
	ResidualScale float32 // multiplies each half's output (Granite); 0: none
	AttnScale     float32 // q·k scale; 1/√head_dim unless Granite's attention.scale
}

// Model is a mixture-of-experts model bound to its weights.
type Model struct {
	cfg    *model.Config
	params Params
	w      Weights
	rope   kernels.RoPE
	pass   model.Pass
	ffn    FFN
}

var _ model.Model = (*Model)(nil)

// Build parses the hyper-parameters of arch, binds the weights and checks
// every shape. It is shared by the mixture-of-experts families.
func Build(src model.Source, arch string, opts Options, env model.Env) (*Model, error) {
	cfg, err := model.ReadConfig(src, arch)
	if err != nil {
		return nil, err
	}
	prm, ends, err := readParams(src, cfg, opts)
	if err != nil {
		return nil, err
	}
	b := model.NewBinder(src)
	w := Weights{}
	w.Ends = b.Ends(cfg, true)
	w.EmbedScale, w.LogitScale = ends.EmbedScale, ends.LogitScale
	if opts.Granite { // llama.cpp's olmoe and qwen2moe graphs pass no frequency factors
		w.RopeFreqs = b.OptionalVector(model.TRopeFreqs, cfg.RopeDims/2)
	}
	qDim, kvDim, ff, sh := cfg.QDim(), cfg.KVDim(), prm.ExpertFFN, prm.SharedFFN
	w.Blocks = make([]BlockWeights, cfg.Layers)
	for i := range w.Blocks {
		l := &w.Blocks[i]
		l.AttnNorm = b.Vector(model.Layer(model.TAttnNorm, i), cfg.Dim)
		l.Q = b.Matrix(model.Layer(model.TAttnQ, i), qDim, cfg.Dim)
		l.K = b.Matrix(model.Layer(model.TAttnK, i), kvDim, cfg.Dim)
		l.V = b.Matrix(model.Layer(model.TAttnV, i), kvDim, cfg.Dim)
		l.QBias = b.OptionalVector(model.Layer(model.TAttnQBias, i), qDim)
		l.KBias = b.OptionalVector(model.Layer(model.TAttnKBias, i), kvDim)
		l.VBias = b.OptionalVector(model.Layer(model.TAttnVBias, i), kvDim)
		if opts.QKNorm {
			l.QNorm = b.Vector(model.Layer(model.TAttnQNorm, i), qDim)
			l.KNorm = b.Vector(model.Layer(model.TAttnKNorm, i), kvDim)
		}
		l.O = b.Matrix(model.Layer(model.TAttnOut, i), cfg.Dim, qDim)
		l.OBias = b.OptionalVector(model.Layer(model.TAttnOutBias, i), cfg.Dim)
		l.FFNNorm = b.Vector(model.Layer(model.TFFNNorm, i), cfg.Dim)
		x := &l.MoE
		x.Router = b.Matrix(model.Layer(model.TFFNGateInp, i), prm.Experts, cfg.Dim)
		x.Gate = b.Experts(model.Layer(model.TFFNGateExps, i), prm.Experts, ff, cfg.Dim)
		x.Up = b.Experts(model.Layer(model.TFFNUpExps, i), prm.Experts, ff, cfg.Dim)
		x.Down = b.Experts(model.Layer(model.TFFNDownExps, i), prm.Experts, cfg.Dim, ff)
		if sh > 0 {
			x.HasShared = true
			x.SharedGate = b.Matrix(model.Layer(model.TFFNGateShexp, i), sh, cfg.Dim)
			x.SharedUp = b.Matrix(model.Layer(model.TFFNUpShexp, i), sh, cfg.Dim)
			x.SharedDown = b.Matrix(model.Layer(model.TFFNDownShexp, i), cfg.Dim, sh)
			if opts.Shared == GatedShared {
				x.SharedGateInp = b.Vector(model.Layer(model.TFFNGateInpShexp, i), cfg.Dim)
			}
		}
	}
	b.CheckBlocks(cfg.Layers)
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", arch, err)
	}
	m := &Model{cfg: cfg, params: prm, w: w, pass: model.Pass{Pool: env.Pool}}
	m.ffn = FFN{Routing: Routing{Experts: prm.Experts, Used: prm.Used, Normalize: prm.Normalize}, Dim: cfg.Dim, Width: ff, SharedWidth: sh}
	m.rope = cfg.RoPE(opts.NeoX)
	m.rope.FreqFactors = w.RopeFreqs
	return m, nil
}

// readParams reads the experts' hyper-parameters and Granite's multipliers.
func readParams(md model.Metadata, cfg *model.Config, opts Options) (Params, model.Ends, error) {
	var ends model.Ends
	u := func(tmpl string) (int, bool) {
		v, ok := md.Uint(cfg.Key(tmpl))
		if !ok || v > math.MaxInt32 {
			return 0, false
		}
		return int(v), true
	}
	f := func(tmpl string) float32 {
		v, _ := md.Float(cfg.Key(tmpl))
		return float32(v)
	}
	p := Params{ExpertFFN: cfg.FFN, Normalize: opts.Normalize, AttnScale: float32(1 / math.Sqrt(float64(cfg.HeadDim)))}
	p.Experts, _ = u(model.KeyExpertCount)
	p.Used, _ = u(model.KeyExpertUsedCount)
	if p.Experts <= 0 || p.Experts > MaxExperts || p.Used <= 0 || p.Used > p.Experts {
		return p, ends, model.Invalidf("%s: expert_count %d and expert_used_count %d must satisfy 0 < used ≤ count ≤ %d",
			cfg.Arch, p.Experts, p.Used, MaxExperts)
	}
	if opts.ExpertFFN {
		if n, ok := u(model.KeyExpertFFN); ok && n > 0 {
			p.ExpertFFN = n
		} else {
			p.ExpertFFN = cfg.FFN / p.Used
		}
	}
	switch opts.Shared {
	case GatedShared:
		p.SharedFFN = cfg.FFN
		if n, ok := u(model.KeyExpertSharedFFN); ok && n > 0 {
			p.SharedFFN = n
		}
	case OptionalShared:
		p.SharedFFN, _ = u(model.KeyExpertSharedFFN)
	}
	if p.ExpertFFN <= 0 || p.ExpertFFN > 1<<22 || p.SharedFFN > 1<<22 {
		return p, ends, model.Invalidf("%s: expert feed-forward width %d or shared width %d out of range", cfg.Arch, p.ExpertFFN, p.SharedFFN)
	}
	if opts.Granite {
		ls := f(model.KeyLogitScale)
		if !(ls > 0) || math.IsInf(float64(ls), 0) {
			return p, ends, model.Invalidf("%s: logit_scale must be present and positive (got %g)", cfg.Arch, ls)
		}
		ends.LogitScale = 1 / ls
		ends.EmbedScale = f(model.KeyEmbeddingScale)
		p.ResidualScale = f(model.KeyResidualScale)
		if s := f(model.KeyAttentionScale); s != 0 {
			p.AttnScale = s
		}
		if on, ok := md.Bool(cfg.Key(model.KeyRopeFinetuned)); ok && !on {
			return p, ends, fmt.Errorf("%w: %s: rope.scaling.finetuned = false (attention without RoPE) is not implemented", model.ErrUnsupported, cfg.Arch)
		}
	}
	return p, ends, nil
}

// Config returns the hyper-parameters.
func (m *Model) Config() *model.Config { return m.cfg }

// Params returns the experts' hyper-parameters.
func (m *Model) Params() Params { return m.params }

// Weights returns the bound tensors.
func (m *Model) Weights() *Weights { return &m.w }

// ExpertBytes is how many bytes of routed experts' matrices the forward
// passes so far have multiplied with (each expert once per step and block
// it ran in): divided by the decode steps it is what routing reads of the
// experts' tensors per step.
func (m *Model) ExpertBytes() int64 { return m.ffn.ExpertBytes }

// NewState allocates a sequence.
func (m *Model) NewState(opts model.StateOptions) (*model.State, error) {
	return model.NewState(m.cfg, opts, nil)
}

// KVBytes is the KV cache memory of one sequence with opts.
func (m *Model) KVBytes(opts model.StateOptions) int64 {
	return model.KVBytes(m.cfg, opts, nil)
}

// Forward runs one step over every sequence of b. The attention half runs
// all rows through each matrix together; the experts run on the rows routed
// to them (FFN).
func (m *Model) Forward(b *model.Batch) error {
	return m.pass.Run(b, m.cfg, &m.w.Ends, m.attention, m.moe)
}

func (m *Model) attention(b *model.Batch, l, n int) {
	cfg, p, w := m.cfg, &m.pass, &m.w.Blocks[l]
	model.RMSRows(p.XN, p.X, w.AttnNorm, n, cfg.RMSEps)
	p.QKV(&w.Q, &w.K, &w.V, n)
	addBias(p.Q, w.QBias, n)
	addBias(p.K, w.KBias, n)
	addBias(p.V, w.VBias, n)
	if w.QNorm != nil {
		model.RMSRows(p.Q, p.Q, w.QNorm, n, cfg.RMSEps)
		model.RMSRows(p.K, p.K, w.KNorm, n, cfg.RMSEps)
	}
	p.Attention(b, cfg, l, n, &m.rope, 1, kvcache.AttnParams{Scale: m.params.AttnScale}, &w.O)
	addBias(p.Proj, w.OBias, n)
	m.residual(n)
}

func (m *Model) moe(_ *model.Batch, l, n int) {
	cfg, p, w := m.cfg, &m.pass, &m.w.Blocks[l]
	model.RMSRows(p.XN, p.X, w.FFNNorm, n, cfg.RMSEps)
	m.ffn.Forward(p, &w.MoE, p.XN, n, p.Proj)
	m.residual(n)
}

// residual adds Proj, times Granite's residual scale, to the stream.
func (m *Model) residual(n int) {
	d := m.cfg.Dim
	if s := m.params.ResidualScale; s != 0 {
		kernels.Scale(m.pass.Proj[:n*d], s)
	}
	m.pass.Residual(n, d)
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
