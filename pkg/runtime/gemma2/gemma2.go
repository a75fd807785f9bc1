// Package gemma2 implements Google's Gemma 2 (2B, 9B, 27B) as llama.cpp
// runs it. The block differs from Llama's in five ways:
//
//	x  = embed(token) · √dim
//	h  = x + rms_post_attn(Wo · attn(rope(Wq·rms(x)) · s, rope(Wk·rms(x)), Wv·rms(x)))
//	x' = h + rms_post_ffw(Wdown · (gelu_tanh(Wgate·rms(h)) ⊙ Wup·rms(h)))
//
// and logits = cf·tanh(Wembᵀ·rms(x) / cf). Attention scores are soft-capped
// (ca·tanh(score/ca)), the query is scaled by s = 1/√query_pre_attn_scalar
// before the dot product, and layers alternate between a sliding window
// (local, even layers by default) and global attention. RoPE is NeoX-style
// and the output projection is the token embedding.
//
// Norm weights are used as stored: Gemma's RMSNorm multiplies by (1+w), and
// llama.cpp's converter already adds the 1 when it writes the GGUF file, so
// its graph (and this package) multiplies by the stored weight.
package gemma2

import (
	"fmt"
	"math"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// Params are Gemma 2's hyper-parameters beyond the shared Config.
type Params struct {
	// Windows holds each layer's sliding window in positions (0: global).
	Windows []int
	// AttnSoftcap caps attention scores (attn_logit_softcapping; 0: none).
	AttnSoftcap float32
	// FinalSoftcap caps the output logits (final_logit_softcapping; 0: none).
	FinalSoftcap float32
	// QueryScale multiplies the roped query: 1/√query_pre_attn_scalar.
	QueryScale float32
	// RopeBaseSWA is the RoPE base of the sliding-window layers.
	RopeBaseSWA float32
	// EmbedScale multiplies the token embeddings: √dim in float32.
	EmbedScale float32
}

// Defaults llama.cpp applies when a key is missing (llama-hparams.h,
// models/gemma2.cpp).
const (
	defaultWindow       = 4096
	defaultPattern      = 2
	defaultAttnSoftcap  = 50
	defaultFinalSoftcap = 30
	layers27B           = 46
)

// ParseParams reads Gemma 2's extra hyper-parameters.
//
// The query scale follows llama.cpp, which does not store
// query_pre_attn_scalar in GGUF files but derives it from the model size as
// Google's reference code does: n_embd/n_head for the 27B model (46 layers;
// 4608/32 = 144, not its head width 128), the head width otherwise (256 for
// 2B and 9B). A %s.attention.query_pre_attn_scalar key, if a file has one,
// takes precedence.
func ParseParams(md model.Metadata, cfg *model.Config) (Params, error) {
	key := cfg.Key
	p := Params{
		AttnSoftcap:  defaultAttnSoftcap,
		FinalSoftcap: defaultFinalSoftcap,
		RopeBaseSWA:  cfg.RopeBase,
		EmbedScale:   float32(math.Sqrt(float64(cfg.Dim))),
	}
	window, pattern := defaultWindow, defaultPattern
	if v, ok := md.Uint(key(model.KeySlidingWindow)); ok {
		window = int(min(v, math.MaxInt32))
	}
	if v, ok := md.Uint(key(model.KeySlidingPattern)); ok {
		pattern = int(min(v, math.MaxInt32))
	}
	if v, ok := md.Float(key(model.KeyAttnSoftcap)); ok {
		p.AttnSoftcap = float32(v)
	}
	if v, ok := md.Float(key(model.KeyFinalSoftcap)); ok {
		p.FinalSoftcap = float32(v)
	}
	if v, ok := md.Float(key(model.KeyRopeFreqBaseSWA)); ok {
		p.RopeBaseSWA = float32(v)
	}
	if !(p.AttnSoftcap >= 0) || !(p.FinalSoftcap >= 0) || !(p.RopeBaseSWA > 0) {
		return p, model.Invalidf("%s: soft-capping (%g, %g) must be >= 0 and rope.freq_base_swa (%g) > 0",
			cfg.Arch, p.AttnSoftcap, p.FinalSoftcap, p.RopeBaseSWA)
	}
	scalar := float64(cfg.HeadDim)
	if cfg.Layers == layers27B {
		scalar = float64(cfg.Dim / cfg.Heads)
	}
	if v, ok := md.Float(key(model.KeyQueryPreAttn)); ok {
		if !(v > 0) {
			return p, model.Invalidf("%s: attention.query_pre_attn_scalar %g must be positive", cfg.Arch, v)
		}
		scalar = v
	}
	p.QueryScale = float32(1 / math.Sqrt(scalar))
	p.Windows = SlidingLayers(cfg.Layers, pattern, window)
	return p, nil
}

// SlidingLayers returns each layer's window under llama.cpp's pattern rule
// (llama_hparams::set_swa_pattern): with period n, layer l slides when
// l mod n < n-1, so period 2 makes the even layers local; period 0 makes
// every layer local and period 1 none. A window of 0 disables sliding.
func SlidingLayers(layers, period, window int) []int {
	w := make([]int, layers)
	if window <= 0 {
		return w
	}
	for l := range w {
		if period == 0 || l%period < period-1 {
			w[l] = window
		}
	}
	return w
}

// Weights are the model's tensors, slices into the mapped file.
type Weights struct {
	model.Ends                // token embedding (also the output projection), output norm, √dim, final cap
	Blocks     []BlockWeights // (layers)
}

// BlockWeights are one transformer block's tensors.
type BlockWeights struct {
	AttnNorm     []float32    // (dim) pre-attention norm
	Q            model.Matrix // (heads*head_dim, dim)
	K            model.Matrix // (kv_heads*head_dim, dim)
	V            model.Matrix // (kv_heads*head_dim, dim)
	O            model.Matrix // (dim, heads*head_dim)
	PostAttnNorm []float32    // (dim) norm of the attention output
	FFNNorm      []float32    // (dim) pre-FFN norm
	Gate         model.Matrix // (ffn, dim)
	Up           model.Matrix // (ffn, dim)
	Down         model.Matrix // (dim, ffn)
	PostFFNNorm  []float32    // (dim) norm of the FFN output
}

// Model is a Gemma 2 model bound to its weights.
type Model struct {
	cfg   *model.Config
	p     Params
	w     Weights
	ropes []kernels.RoPE // (layers) local layers may have their own base
	pass  model.Pass
}

var _ model.Model = (*Model)(nil)

// New parses the hyper-parameters, binds the weights and checks every
// shape: it builds a "gemma2" model.
func New(src model.Source, env model.Env) (*Model, error) {
	const arch = "gemma2"
	cfg, err := model.ReadConfig(src, arch)
	if err != nil {
		return nil, err
	}
	p, err := ParseParams(src, cfg)
	if err != nil {
		return nil, err
	}
	b := model.NewBinder(src)
	qDim, kvDim := cfg.QDim(), cfg.KVDim()
	w := Weights{
		Ends:   b.Ends(cfg, false),
		Blocks: make([]BlockWeights, cfg.Layers),
	}
	for i := range w.Blocks {
		w.Blocks[i] = BlockWeights{
			AttnNorm:     b.Vector(model.Layer(model.TAttnNorm, i), cfg.Dim),
			Q:            b.Matrix(model.Layer(model.TAttnQ, i), qDim, cfg.Dim),
			K:            b.Matrix(model.Layer(model.TAttnK, i), kvDim, cfg.Dim),
			V:            b.Matrix(model.Layer(model.TAttnV, i), kvDim, cfg.Dim),
			O:            b.Matrix(model.Layer(model.TAttnOut, i), cfg.Dim, qDim),
			PostAttnNorm: b.Vector(model.Layer(model.TPostAttnNorm, i), cfg.Dim),
			FFNNorm:      b.Vector(model.Layer(model.TFFNNorm, i), cfg.Dim),
			Gate:         b.Matrix(model.Layer(model.TFFNGate, i), cfg.FFN, cfg.Dim),
			Up:           b.Matrix(model.Layer(model.TFFNUp, i), cfg.FFN, cfg.Dim),
			Down:         b.Matrix(model.Layer(model.TFFNDown, i), cfg.Dim, cfg.FFN),
			PostFFNNorm:  b.Vector(model.Layer(model.TPostFFNNorm, i), cfg.Dim),
		}
	}
	b.CheckBlocks(cfg.Layers)
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", arch, err)
	}
	m := &Model{cfg: cfg, p: p, w: w, pass: model.Pass{Pool: env.Pool}}
	m.w.EmbedScale, m.w.Softcap = p.EmbedScale, p.FinalSoftcap
	m.ropes = make([]kernels.RoPE, cfg.Layers)
	for l := range m.ropes {
		base := cfg.RopeBase
		if p.Windows[l] > 0 {
			base = p.RopeBaseSWA
		}
		m.ropes[l] = cfg.RoPE(true)
		m.ropes[l].Base = base
	}
	return m, nil
}

// Config returns the hyper-parameters.
func (m *Model) Config() *model.Config { return m.cfg }

// Params returns Gemma 2's extra hyper-parameters.
func (m *Model) Params() *Params { return &m.p }

// Weights returns the bound tensors.
func (m *Model) Weights() *Weights { return &m.w }

// NewState allocates a sequence. Sliding-window layers get ring buffers of
// window+opts.Chunk slots in a cache of its own, or in a pool (a
// scheduler's) blocks given back once the window has passed them.
func (m *Model) NewState(opts model.StateOptions) (*model.State, error) {
	return model.NewState(m.cfg, opts, m.p.Windows)
}

// KVBytes is the KV cache memory of one sequence with opts, counting the
// sliding-window layers at their ring size.
func (m *Model) KVBytes(opts model.StateOptions) int64 {
	return model.KVBytes(m.cfg, opts, m.p.Windows)
}
