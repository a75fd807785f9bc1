package model

import (
	"errors"
	"fmt"
	"math"

	"github.com/corelm/corelm/pkg/kernels"
)

// ErrInvalidModel is wrapped by every error about a model whose metadata or
// tensors do not describe a runnable model of its architecture.
var ErrInvalidModel = errors.New("invalid model")

// ErrUnsupported is wrapped when a model is well-formed but uses something
// corelm does not implement.
var ErrUnsupported = errors.New("unsupported model")

// Invalidf returns an ErrInvalidModel error with a message.
func Invalidf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidModel, fmt.Sprintf(format, a...))
}

// GGUF metadata keys, as llama.cpp's llama-arch.cpp names them. "%s" is the
// architecture name.
const (
	KeyArchitecture      = "general.architecture"
	KeyContextLength     = "%s.context_length"
	KeyEmbeddingLength   = "%s.embedding_length"
	KeyBlockCount        = "%s.block_count"
	KeyFeedForwardLength = "%s.feed_forward_length"
	KeyHeadCount         = "%s.attention.head_count"
	KeyHeadCountKV       = "%s.attention.head_count_kv"
	KeyKeyLength         = "%s.attention.key_length"
	KeyValueLength       = "%s.attention.value_length"
	KeyRMSEpsilon        = "%s.attention.layer_norm_rms_epsilon"
	KeySlidingWindow     = "%s.attention.sliding_window"
	KeySlidingPattern    = "%s.attention.sliding_window_pattern"
	KeyQueryPreAttn      = "%s.attention.query_pre_attn_scalar" // not written by llama.cpp's converter; honoured when present
	KeyRopeDimCount      = "%s.rope.dimension_count"
	KeyRopeFreqBase      = "%s.rope.freq_base"
	KeyRopeFreqBaseSWA   = "%s.rope.freq_base_swa"
	KeyRopeScalingType   = "%s.rope.scaling.type"
	KeyRopeScalingFactor = "%s.rope.scaling.factor"
	KeyRopeOrigCtx       = "%s.rope.scaling.original_context_length"
	KeyRopeAttnFactor    = "%s.rope.scaling.attn_factor"
	KeyAttnSoftcap       = "%s.attn_logit_softcapping"
	KeyFinalSoftcap      = "%s.final_logit_softcapping"
	KeyVocabSize         = "%s.vocab_size"
	KeyPoolingType       = "%s.pooling_type"
	KeyTokens            = "tokenizer.ggml.tokens"

	// Mixture of experts.
	KeyExpertCount     = "%s.expert_count"
	KeyExpertUsedCount = "%s.expert_used_count"
	KeyExpertFFN       = "%s.expert_feed_forward_length"
	KeyExpertSharedFFN = "%s.expert_shared_feed_forward_length"
	// Granite's multipliers.
	KeyLogitScale     = "%s.logit_scale"
	KeyResidualScale  = "%s.residual_scale"
	KeyEmbeddingScale = "%s.embedding_scale"
	KeyAttentionScale = "%s.attention.scale"
	KeyRopeFinetuned  = "%s.rope.scaling.finetuned"
)

// Config holds the hyper-parameters every decoder-only transformer here
// shares. Architecture packages read their extras themselves.
type Config struct {
	Arch       string
	Context    int     // trained context length
	Dim        int     // embedding width
	Layers     int     // transformer blocks
	FFN        int     // feed-forward hidden width
	Heads      int     // query heads
	KVHeads    int     // key/value heads (GQA when < Heads)
	HeadDim    int     // key/query head width
	ValueDim   int     // value head width
	Vocab      int     // vocabulary size
	RMSEps     float32 // RMSNorm epsilon
	RopeDims   int     // rotated dimensions per head
	RopeBase   float32 // RoPE frequency base
	RopeScale  float32 // linear RoPE frequency scale (1 = none)
	OrigCtx    int     // rope.scaling.original_context_length, 0 if absent
	AttnFactor float32 // rope.scaling.attn_factor, 1 if absent
	Pooling    Pooling // pooling_type: how the model's embeddings are pooled; PoolNone if absent
}

// QDim is the width of all query heads together.
func (c *Config) QDim() int { return c.Heads * c.HeadDim }

// KVDim is the width of all key (or value) heads together.
func (c *Config) KVDim() int { return c.KVHeads * c.HeadDim }

// ClampContext is the context a model of cfg serves when n is asked for: n,
// or the trained context when n is 0 or more than it (corelm does not extend
// a model's context). Every knob that names a context goes through it.
func (c *Config) ClampContext(n int) int {
	if n <= 0 || n > c.Context {
		return c.Context
	}
	return n
}

// DefaultContextCap is the most context serving gives a model that was
// not told one: 8192 positions, llama.cpp's and Ollama's order of magnitude
// for a default, is a long chat on a 7–9B model and 1 GiB of f16 KV cache
// for Llama-3.1-8B, where its trained 131,072 would be 16 GiB.
const DefaultContextCap = 8192

// DefaultContext is the context serving starts from when none is asked
// for: the trained context, capped at DefaultContextCap. Memory may lower
// it further (runtime.Plan).
func (c *Config) DefaultContext() int {
	return min(c.ClampContext(0), DefaultContextCap)
}

// RoPE is the rotation the hyper-parameters describe, NeoX-style (pairs
// (i, i+d/2)) or not ((2i, 2i+1)), without frequency factors and with an
// attention factor of 1; an architecture sets what it has of those.
func (c *Config) RoPE(neox bool) kernels.RoPE {
	return kernels.RoPE{Dims: c.RopeDims, HeadSize: c.HeadDim, Base: c.RopeBase, FreqScale: c.RopeScale, AttnFactor: 1, NeoX: neox}
}

// Key expands an architecture-relative key template.
func (c *Config) Key(tmpl string) string { return fmt.Sprintf(tmpl, c.Arch) }

// ParseConfig reads the shared hyper-parameters of arch from md and checks
// that they are consistent. Missing optional keys take llama.cpp's defaults.
func ParseConfig(md Metadata, arch string) (*Config, error) {
	c := &Config{Arch: arch, RopeBase: 10000, RopeScale: 1, AttnFactor: 1}
	r := keyReader{md: md, arch: arch}
	c.Context = r.int(KeyContextLength, true, 0)
	c.Dim = r.int(KeyEmbeddingLength, true, 0)
	c.Layers = r.int(KeyBlockCount, true, 0)
	c.FFN = r.int(KeyFeedForwardLength, true, 0)
	c.Heads = r.int(KeyHeadCount, true, 0)
	c.KVHeads = r.int(KeyHeadCountKV, false, c.Heads)
	if r.err != nil {
		return nil, r.err
	}
	if c.Dim <= 0 || c.Layers <= 0 || c.FFN <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.Context <= 0 {
		return nil, Invalidf("%s: embedding_length, block_count, feed_forward_length, head_count, head_count_kv and context_length must be positive (got %d, %d, %d, %d, %d, %d)",
			arch, c.Dim, c.Layers, c.FFN, c.Heads, c.KVHeads, c.Context)
	}
	if c.Layers > 1024 || c.Heads > 1024 || c.Dim > 1<<20 || c.FFN > 1<<22 {
		return nil, Invalidf("%s: hyper-parameters out of range (block_count %d, head_count %d, embedding_length %d, feed_forward_length %d)", arch, c.Layers, c.Heads, c.Dim, c.FFN)
	}
	if c.Heads%c.KVHeads != 0 {
		return nil, Invalidf("%s: head_count %d is not a multiple of head_count_kv %d", arch, c.Heads, c.KVHeads)
	}
	defHead := 0
	if c.Dim%c.Heads == 0 {
		defHead = c.Dim / c.Heads
	}
	c.HeadDim = r.int(KeyKeyLength, false, defHead)
	c.ValueDim = r.int(KeyValueLength, false, c.HeadDim)
	if r.err != nil {
		return nil, r.err
	}
	if c.HeadDim <= 0 {
		return nil, Invalidf("%s: embedding_length %d is not a multiple of head_count %d and no attention.key_length is given", arch, c.Dim, c.Heads)
	}
	if c.ValueDim != c.HeadDim {
		return nil, fmt.Errorf("%w: %s: value head width %d differs from key head width %d", ErrUnsupported, arch, c.ValueDim, c.HeadDim)
	}
	c.RopeDims = r.int(KeyRopeDimCount, false, c.HeadDim)
	if c.RopeDims <= 0 || c.RopeDims > c.HeadDim || c.RopeDims%2 != 0 {
		return nil, Invalidf("%s: rope.dimension_count %d must be even and within the head width %d", arch, c.RopeDims, c.HeadDim)
	}
	eps := r.float(KeyRMSEpsilon, false, 1e-5)
	c.RMSEps = float32(eps)
	c.RopeBase = float32(r.float(KeyRopeFreqBase, false, 10000))
	if typ, ok := md.String(c.Key(KeyRopeScalingType)); ok && typ == "linear" {
		if f := r.float(KeyRopeScalingFactor, false, 1); f > 0 {
			c.RopeScale = float32(1 / f)
		}
	}
	c.OrigCtx = r.int(KeyRopeOrigCtx, false, 0)
	c.AttnFactor = float32(r.float(KeyRopeAttnFactor, false, 1))
	c.Pooling = Pooling(r.int(KeyPoolingType, false, 0))
	if r.err != nil {
		return nil, r.err
	}
	if c.Pooling > PoolRank {
		return nil, Invalidf("%s: pooling_type %d is not one of llama.cpp's (0 to 4)", arch, int(c.Pooling))
	}
	if !(eps > 0 && eps < 1) || !(c.RopeBase > 0) || math.IsInf(float64(c.RopeBase), 0) || !(c.AttnFactor > 0) {
		return nil, Invalidf("%s: layer_norm_rms_epsilon %g, rope.freq_base %g or rope.scaling.attn_factor %g out of range", arch, eps, c.RopeBase, c.AttnFactor)
	}
	// The vocabulary size comes from the token list when the arch key is absent.
	c.Vocab = r.int(KeyVocabSize, false, 0)
	if c.Vocab == 0 {
		if toks, ok := md.Strings(KeyTokens); ok {
			c.Vocab = len(toks)
		}
	}
	return c, r.err
}

// ReadConfig is ParseConfig for a model source: a vocabulary size that the
// metadata lacks is taken from the token embedding's shape, and without
// either the model is invalid.
func ReadConfig(src Source, arch string) (*Config, error) {
	c, err := ParseConfig(src, arch)
	if err != nil {
		return nil, err
	}
	if c.Vocab == 0 {
		if t, ok := src.LookupTensor(TTokenEmbd); ok && len(t.Shape) == 2 {
			c.Vocab = t.Shape[1]
		}
	}
	if c.Vocab <= 0 {
		return nil, Invalidf("%s: vocabulary size unknown (no %s.vocab_size and no tokenizer.ggml.tokens)", arch, arch)
	}
	return c, nil
}

// keyReader reads arch-relative keys and remembers the first error.
type keyReader struct {
	md   Metadata
	arch string
	err  error
}

func (r *keyReader) int(tmpl string, required bool, def int) int {
	key := fmt.Sprintf(tmpl, r.arch)
	u, ok := r.md.Uint(key)
	if !ok {
		if _, present := r.md.Float(key); present || !required {
			if present && r.err == nil {
				r.err = Invalidf("metadata %s must be a non-negative integer", key)
			}
			return def
		}
		if r.err == nil {
			r.err = Invalidf("missing metadata key %s", key)
		}
		return def
	}
	if u > math.MaxInt32 {
		if r.err == nil {
			r.err = Invalidf("metadata %s = %d is out of range", key, u)
		}
		return def
	}
	return int(u)
}

func (r *keyReader) float(tmpl string, required bool, def float64) float64 {
	key := fmt.Sprintf(tmpl, r.arch)
	f, ok := r.md.Float(key)
	if !ok {
		if required && r.err == nil {
			r.err = Invalidf("missing metadata key %s", key)
		}
		return def
	}
	return f
}
