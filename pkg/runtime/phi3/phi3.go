// Package phi3 implements Microsoft's Phi-3 / Phi-3.5 (mini, medium) and
// Phi-4, the "phi3" GGUF architecture, as llama.cpp runs it. The block is
// Llama's with fused projections:
//
//	q|k|v = Wqkv · rms(x)                      (one matrix, rows q, then k, then v)
//	h     = x + Wo · attn(rope(q)/√head_dim, rope(k), v)
//	g|u   = Wup · rms(h)                       (one matrix, rows gate, then up)
//	x'    = h + Wdown · (silu(g) ⊙ u)
//
// then logits = Wout · rms(x). RoPE is NeoX-style. Phi-3.5 and the 128k
// Phi-3 models use LongRoPE: each rotated pair's angle is divided by a
// per-dimension factor, short factors while the context the model is served
// at fits the original training context and long factors past it (the same
// for every sequence, as in llama.cpp), and cos/sin are multiplied by an
// attention factor (so q·k by its square). Phi-3.5-mini has 32 KV heads
// (plain multi-head attention), Phi-4 uses GQA.
//
// The metadata of some models names a sliding window. llama.cpp disables it
// for this architecture (its loader warns and sets no window), and so does
// corelm, so that results agree with llama.cpp's.
package phi3

import (
	"fmt"
	"math"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// Weights are the model's tensors, slices into the mapped file.
type Weights struct {
	model.Ends                 // token embedding, output norm, output (tied: the embedding)
	RopeShort   []float32      // (rope_dims/2) LongRoPE short factors, or nil
	RopeLong    []float32      // (rope_dims/2) LongRoPE long factors, or nil
	Blocks      []BlockWeights // (layers)
	FusedQKV    bool           // blocks carry QKV rather than Q, K, V
	AttnFactor  float32        // LongRoPE magnitude correction of cos/sin
	OrigContext int            // context up to which the short factors apply
}

// BlockWeights are one transformer block's tensors.
type BlockWeights struct {
	AttnNorm []float32    // (dim)
	QKV      model.Matrix // (heads*head_dim + 2*kv_heads*head_dim, dim) when fused
	Q        model.Matrix // (heads*head_dim, dim) when not fused
	K        model.Matrix // (kv_heads*head_dim, dim) when not fused
	V        model.Matrix // (kv_heads*head_dim, dim) when not fused
	O        model.Matrix // (dim, heads*head_dim)
	FFNNorm  []float32    // (dim)
	GateUp   model.Matrix // (2*ffn, dim): gate rows, then up rows
	Down     model.Matrix // (dim, ffn)
}

// Model is a Phi-3 model bound to its weights.
type Model struct {
	cfg         *model.Config
	w           Weights
	short, long kernels.RoPE // rotations for served contexts up to / past OrigContext
	pass        model.Pass
	fused       []float32 // (n, q_dim+2*kv_dim) or (n, 2*ffn): a fused projection's output
}

var _ model.Model = (*Model)(nil)

// LongRoPEAttnFactor is the factor cos and sin are multiplied by:
// rope.scaling.attn_factor when the file has it (llama.cpp's converter
// always writes it for LongRoPE models), otherwise the formula that
// converter and Hugging Face's LongRoPE use, √(1 + ln s / ln orig) with
// s = context/orig, and 1 when s ≤ 1 or the model has no LongRoPE factors.
func LongRoPEAttnFactor(md model.Metadata, cfg *model.Config, longRoPE bool) float32 {
	if _, ok := md.Float(cfg.Key(model.KeyRopeAttnFactor)); ok {
		return cfg.AttnFactor
	}
	if !longRoPE {
		return 1
	}
	return AttnFactor(cfg.Context, cfg.OrigCtx)
}

// AttnFactor is LongRoPE's attention factor for a model trained to ctx
// positions from an original context of orig: √(1 + ln(ctx/orig)/ln orig),
// and 1 when ctx ≤ orig.
func AttnFactor(ctx, orig int) float32 {
	if orig <= 1 || ctx <= orig {
		return 1
	}
	s := float64(ctx) / float64(orig)
	return float32(math.Sqrt(1 + math.Log(s)/math.Log(float64(orig))))
}

// UseLongFactors reports whether a model served at a context of ctx
// positions rotates with the long factors: like llama.cpp
// (llama_model::get_rope_factors, from the n_ctx of its context), when ctx
// exceeds the original context length; at or below it, the short ones.
func UseLongFactors(ctx, origCtx int) bool { return ctx > origCtx }

// New parses the hyper-parameters, binds the weights and checks every
// shape: it builds a "phi3" model.
func New(src model.Source, env model.Env) (*Model, error) {
	const arch = "phi3"
	cfg, err := model.ReadConfig(src, arch)
	if err != nil {
		return nil, err
	}
	b := model.NewBinder(src)
	qDim, kvDim := cfg.QDim(), cfg.KVDim()
	w := Weights{
		Ends:      b.Ends(cfg, true),
		RopeLong:  b.OptionalVector(model.TRopeLong, cfg.RopeDims/2),
		RopeShort: b.OptionalVector(model.TRopeShort, cfg.RopeDims/2),
		Blocks:    make([]BlockWeights, cfg.Layers),
		FusedQKV:  b.Has(model.Layer(model.TAttnQKV, 0)),
	}
	for i := range w.Blocks {
		l := &w.Blocks[i]
		l.AttnNorm = b.Vector(model.Layer(model.TAttnNorm, i), cfg.Dim)
		if w.FusedQKV {
			l.QKV = b.Matrix(model.Layer(model.TAttnQKV, i), qDim+2*kvDim, cfg.Dim)
		} else {
			l.Q = b.Matrix(model.Layer(model.TAttnQ, i), qDim, cfg.Dim)
			l.K = b.Matrix(model.Layer(model.TAttnK, i), kvDim, cfg.Dim)
			l.V = b.Matrix(model.Layer(model.TAttnV, i), kvDim, cfg.Dim)
		}
		l.O = b.Matrix(model.Layer(model.TAttnOut, i), cfg.Dim, qDim)
		l.FFNNorm = b.Vector(model.Layer(model.TFFNNorm, i), cfg.Dim)
		l.GateUp = b.Matrix(model.Layer(model.TFFNUp, i), 2*cfg.FFN, cfg.Dim)
		l.Down = b.Matrix(model.Layer(model.TFFNDown, i), cfg.Dim, cfg.FFN)
	}
	b.CheckBlocks(cfg.Layers)
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", arch, err)
	}
	w.OrigContext = cfg.OrigCtx
	if w.OrigContext <= 0 {
		w.OrigContext = cfg.Context // llama.cpp: n_ctx_orig_yarn defaults to n_ctx_train
	}
	w.AttnFactor = LongRoPEAttnFactor(src, cfg, w.RopeLong != nil || w.RopeShort != nil)
	m := &Model{cfg: cfg, w: w, pass: model.Pass{Pool: env.Pool}}
	m.short = cfg.RoPE(true)
	m.short.AttnFactor = w.AttnFactor
	m.short.FreqFactors = w.RopeShort
	m.long = m.short
	m.long.FreqFactors = w.RopeLong
	return m, nil
}

// Config returns the hyper-parameters.
func (m *Model) Config() *model.Config { return m.cfg }

// Weights returns the bound tensors.
func (m *Model) Weights() *Weights { return &m.w }

// ropeFor returns the rotation of a model served at a context of ctx
// positions (State.Context): the same for every sequence, however long each
// may grow.
func (m *Model) ropeFor(ctx int) *kernels.RoPE {
	if UseLongFactors(ctx, m.w.OrigContext) {
		return &m.long
	}
	return &m.short
}

// NewState allocates a sequence. Every layer is global (see the package
// comment on sliding windows).
func (m *Model) NewState(opts model.StateOptions) (*model.State, error) {
	return model.NewState(m.cfg, opts, nil)
}

// KVBytes is the KV cache memory of one sequence with opts.
func (m *Model) KVBytes(opts model.StateOptions) int64 {
	return model.KVBytes(m.cfg, opts, nil)
}
