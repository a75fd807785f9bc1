package synth

import (
	"cmp"
	"slices"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/phi3"
)

// family is what synth needs of an architecture beyond the shared
// hyper-parameters: its tensors, named by the templates of model/names.go,
// and the metadata keys of its own. An architecture added to the runtime's
// registry gets its entry here, built from the Llama entry where it can be.
type family struct {
	global   []tensor                // the model's own tensors
	block    []tensor                // each block's ("%d" in the name)
	metadata func(s Shape) []gguf.KV // keys with "%s" for the architecture
	// controls are control tokens of the real vocabulary, at their real ids
	// (controlsAt on), where the vocabulary is large enough: llama.cpp's
	// loader looks some of them up by name.
	controls   []string
	controlsAt int
}

// tensor is a tensor of a family: its name template, its axes in ggml order
// (the row length first), and how it is filled.
type tensor struct {
	name string
	axes []axis
	ones bool // norms and rope factors: 1s; otherwise random
	// jitter fills a norm with 1 + 0.2·N(0, 1) instead, so that a norm
	// whose weights are not applied shows in the logits.
	jitter bool
	when   func(Shape) bool // nil: every model of the family has it
}

// axis is a tensor dimension as a function of the shape.
type axis func(Shape) uint64

func embd(s Shape) uint64     { return uint64(s.Dim) }
func ffn(s Shape) uint64      { return uint64(s.FFN) }
func ffn2(s Shape) uint64     { return 2 * uint64(s.FFN) } // gate and up fused
func vocabN(s Shape) uint64   { return uint64(s.Vocab) }
func qDim(s Shape) uint64     { return uint64(s.Heads * s.headDim()) }
func kvDim(s Shape) uint64    { return uint64(s.KVHeads * s.headDim()) }
func qkvDim(s Shape) uint64   { return qDim(s) + 2*kvDim(s) } // q, k and v fused
func halfHead(s Shape) uint64 { return uint64(s.headDim() / 2) }

func nExpert(s Shape) uint64   { return uint64(s.experts()) }
func expertFFN(s Shape) uint64 { return uint64(s.expertFFN()) }
func sharedFFN(s Shape) uint64 { return uint64(cmp.Or(s.SharedFFN, s.FFN)) }

func untied(s Shape) bool    { return !s.Tied }
func shared(s Shape) bool    { return s.SharedFFN > 0 }
func ropeFreqs(s Shape) bool { return s.RopeFreqs }

func axes(a ...axis) []axis { return a }

// llamaGlobal and llamaBlock are the Llama tensors the other families
// start from.
var (
	llamaGlobal = []tensor{
		{name: model.TTokenEmbd, axes: axes(embd, vocabN)},
		{name: model.TOutputNorm, axes: axes(embd), ones: true},
		{name: model.TOutput, axes: axes(embd, vocabN), when: untied},
		{name: model.TRopeFreqs, axes: axes(halfHead), ones: true, when: ropeFreqs},
	}
	llamaBlock = []tensor{
		{name: model.TAttnNorm, axes: axes(embd), ones: true},
		{name: model.TAttnQ, axes: axes(embd, qDim)},
		{name: model.TAttnK, axes: axes(embd, kvDim)},
		{name: model.TAttnV, axes: axes(embd, kvDim)},
		{name: model.TAttnOut, axes: axes(qDim, embd)},
		{name: model.TFFNNorm, axes: axes(embd), ones: true},
		{name: model.TFFNGate, axes: axes(embd, ffn)},
		{name: model.TFFNUp, axes: axes(embd, ffn)},
		{name: model.TFFNDown, axes: axes(ffn, embd)},
	}
)

// moeBlock is a Llama block whose feed-forward half is a router and
// stacked experts; moeShared is a shared expert's tensors.
var (
	moeBlock = append(slices.Clip(llamaBlock[:6]),
		tensor{name: model.TFFNGateInp, axes: axes(embd, nExpert)},
		tensor{name: model.TFFNGateExps, axes: axes(embd, expertFFN, nExpert)},
		tensor{name: model.TFFNUpExps, axes: axes(embd, expertFFN, nExpert)},
		tensor{name: model.TFFNDownExps, axes: axes(expertFFN, embd, nExpert)})
	moeShared = []tensor{
		{name: model.TFFNGateShexp, axes: axes(embd, sharedFFN)},
		{name: model.TFFNUpShexp, axes: axes(embd, sharedFFN)},
		{name: model.TFFNDownShexp, axes: axes(sharedFFN, embd)},
	}
)

// moeKVs are the expert counts every mixture-of-experts family writes.
func moeKVs(s Shape) []gguf.KV {
	return []gguf.KV{
		{Key: model.KeyExpertCount, Value: gguf.U32(uint32(s.experts()))},
		{Key: model.KeyExpertUsedCount, Value: gguf.U32(uint32(s.used()))},
	}
}

// families is the table of architectures synth can write.
var families = map[string]family{
	"llama": {global: llamaGlobal, block: llamaBlock},
	"qwen2": {global: llamaGlobal, block: after(llamaBlock, model.TAttnV,
		tensor{name: model.TAttnQBias, axes: axes(qDim)},
		tensor{name: model.TAttnKBias, axes: axes(kvDim)},
		tensor{name: model.TAttnVBias, axes: axes(kvDim)})},
	"bitnet": {
		global: llamaGlobal, // always tied: llama.cpp's bitnet has no output matrix
		block: after(after(llamaBlock, model.TAttnOut,
			tensor{name: model.TAttnSubNorm, axes: axes(qDim), jitter: true}), model.TFFNDown,
			tensor{name: model.TFFNSubNorm, axes: axes(ffn), jitter: true}),
	},
	"olmoe": {
		global: llamaGlobal,
		block: after(moeBlock, model.TAttnOut,
			tensor{name: model.TAttnQNorm, axes: axes(qDim), jitter: true},
			tensor{name: model.TAttnKNorm, axes: axes(kvDim), jitter: true}),
		metadata: moeKVs,
	},
	"qwen2moe": {
		global: llamaGlobal,
		block: append(after(moeBlock, model.TAttnV,
			tensor{name: model.TAttnQBias, axes: axes(qDim)},
			tensor{name: model.TAttnKBias, axes: axes(kvDim)},
			tensor{name: model.TAttnVBias, axes: axes(kvDim)}),
			append([]tensor{{name: model.TFFNGateInpShexp, axes: axes(embd)}}, moeShared...)...),
		metadata: func(s Shape) []gguf.KV {
			return append(moeKVs(s),
				gguf.KV{Key: model.KeyExpertFFN, Value: gguf.U32(uint32(s.expertFFN()))},
				gguf.KV{Key: model.KeyExpertSharedFFN, Value: gguf.U32(uint32(sharedFFN(s)))})
		},
	},
	"granitemoe": {
		global: llamaGlobal,
		block:  append(slices.Clip(moeBlock), withWhen(moeShared, shared)...),
		metadata: func(s Shape) []gguf.KV {
			kvs := append(moeKVs(s),
				gguf.KV{Key: model.KeyLogitScale, Value: gguf.F32(cmp.Or(s.LogitScale, 1))})
			if s.SharedFFN > 0 {
				kvs = append(kvs, gguf.KV{Key: model.KeyExpertSharedFFN, Value: gguf.U32(uint32(s.SharedFFN))})
			}
			for _, kv := range []struct {
				key string
				v   float32
			}{{model.KeyEmbeddingScale, s.EmbedScale}, {model.KeyResidualScale, s.ResidualScale}, {model.KeyAttentionScale, s.AttnScale}} {
				if kv.v != 0 {
					kvs = append(kvs, gguf.KV{Key: kv.key, Value: gguf.F32(kv.v)})
				}
			}
			return kvs
		},
	},
	"gemma2": {
		global: llamaGlobal,
		block: after(after(llamaBlock, model.TAttnOut,
			tensor{name: model.TPostAttnNorm, axes: axes(embd), ones: true}), model.TFFNDown,
			tensor{name: model.TPostFFNNorm, axes: axes(embd), ones: true}),
		metadata: func(s Shape) []gguf.KV {
			return []gguf.KV{{Key: model.KeyQueryPreAttn, Value: gguf.U32(uint32(s.headDim()))}}
		},
	},
	"phi3": {
		global: append(slices.Clip(llamaGlobal),
			tensor{name: model.TRopeLong, axes: axes(halfHead), ones: true},
			tensor{name: model.TRopeShort, axes: axes(halfHead), ones: true}),
		block: []tensor{
			{name: model.TAttnNorm, axes: axes(embd), ones: true},
			{name: model.TAttnQKV, axes: axes(embd, qkvDim)},
			{name: model.TAttnOut, axes: axes(qDim, embd)},
			{name: model.TFFNNorm, axes: axes(embd), ones: true},
			{name: model.TFFNUp, axes: axes(embd, ffn2)},
			{name: model.TFFNDown, axes: axes(ffn, embd)},
		},
		metadata: func(s Shape) []gguf.KV {
			if s.OrigContext <= 0 {
				return nil
			}
			return []gguf.KV{
				{Key: model.KeyRopeOrigCtx, Value: gguf.U32(uint32(s.OrigContext))},
				{Key: model.KeyRopeAttnFactor, Value: gguf.F32(phi3.AttnFactor(s.Context, s.OrigContext))},
			}
		},
		// Phi-3's added tokens. llama.cpp's vocabulary loader marks
		// <|endoftext|> of a model named "phi-3…" by looking it up, and
		// refuses the file without it.
		controls: []string{"<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
			"<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"},
		controlsAt: 32000,
	},
}

// withWhen returns ts, each present only when when says.
func withWhen(ts []tensor, when func(Shape) bool) []tensor {
	out := slices.Clone(ts)
	for i := range out {
		out[i].when = when
	}
	return out
}

// after returns ts with extra inserted after the tensor named name.
func after(ts []tensor, name string, extra ...tensor) []tensor {
	i := slices.IndexFunc(ts, func(t tensor) bool { return t.name == name })
	return slices.Insert(slices.Clone(ts), i+1, extra...)
}
