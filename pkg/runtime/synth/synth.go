// Package synth writes synthetic GGUF models with the exact shapes of real
// ones (Llama-3.1-8B, Qwen2.5-7B, ...) and random weights, so benchmarks and
// load tests can be reproduced without downloading weights. The files load in
// llama.cpp too: they carry a complete (synthetic) SentencePiece vocabulary.
package synth

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/quantize"
)

// Shape is the architecture and hyper-parameters of a model family member.
type Shape struct {
	Arch         string // a key of families (and of the runtime's registry)
	Dim          int
	Layers       int
	FFN          int
	Heads        int
	KVHeads      int
	HeadDim      int // 0 = Dim/Heads
	Vocab        int
	Context      int
	RopeBase     float32
	RMSEps       float32
	Tied         bool // no output.weight: the embedding is reused
	RopeFreqs    bool // llama-3 rope_freqs.weight
	SlidingWin   int  // gemma2 (every other layer)
	AttnSoftcap  float32
	FinalSoftcap float32
	OrigContext  int // phi3 LongRoPE

	// Mixture of experts (olmoe, qwen2moe, granitemoe): Experts per block
	// (0: 8), ExpertsUsed per token (0: 2), each expert ExpertFFN wide (0:
	// FFN; qwen2moe writes it as expert_feed_forward_length) and a shared
	// expert SharedFFN wide (qwen2moe: 0 means FFN; granitemoe: 0 means
	// none).
	Experts, ExpertsUsed int
	ExpertFFN, SharedFFN int
	// Granite's multipliers (granitemoe; LogitScale 0 is written as 1).
	EmbedScale, ResidualScale, AttnScale, LogitScale float32
}

// Presets are the shapes `corelm synth --like` knows.
var Presets = map[string]Shape{
	"llama-3.1-8b":    {Arch: "llama", Dim: 4096, Layers: 32, FFN: 14336, Heads: 32, KVHeads: 8, Vocab: 128256, Context: 131072, RopeBase: 500000, RMSEps: 1e-5, RopeFreqs: true},
	"llama-3.2-1b":    {Arch: "llama", Dim: 2048, Layers: 16, FFN: 8192, Heads: 32, KVHeads: 8, Vocab: 128256, Context: 131072, RopeBase: 500000, RMSEps: 1e-5, RopeFreqs: true, Tied: true},
	"llama-3.2-3b":    {Arch: "llama", Dim: 3072, Layers: 28, FFN: 8192, Heads: 24, KVHeads: 8, Vocab: 128256, Context: 131072, RopeBase: 500000, RMSEps: 1e-5, RopeFreqs: true, Tied: true},
	"qwen2.5-7b":      {Arch: "qwen2", Dim: 3584, Layers: 28, FFN: 18944, Heads: 28, KVHeads: 4, Vocab: 152064, Context: 32768, RopeBase: 1e6, RMSEps: 1e-6},
	"qwen2.5-0.5b":    {Arch: "qwen2", Dim: 896, Layers: 24, FFN: 4864, Heads: 14, KVHeads: 2, Vocab: 151936, Context: 32768, RopeBase: 1e6, RMSEps: 1e-6, Tied: true},
	"gemma-2-9b":      {Arch: "gemma2", Dim: 3584, Layers: 42, FFN: 14336, Heads: 16, KVHeads: 8, HeadDim: 256, Vocab: 256000, Context: 8192, RopeBase: 10000, RMSEps: 1e-6, Tied: true, SlidingWin: 4096, AttnSoftcap: 50, FinalSoftcap: 30},
	"phi-3.5-mini":    {Arch: "phi3", Dim: 3072, Layers: 32, FFN: 8192, Heads: 32, KVHeads: 32, Vocab: 32064, Context: 131072, RopeBase: 10000, RMSEps: 1e-5, OrigContext: 4096},
	"bitnet-b1.58-2b": {Arch: "bitnet", Dim: 2560, Layers: 30, FFN: 6912, Heads: 20, KVHeads: 5, Vocab: 128256, Context: 4096, RopeBase: 500000, RMSEps: 1e-5, Tied: true},
	// Mixtures of experts: allenai/OLMoE-1B-7B-0924, ibm-granite/granite-3.1-3b-a800m,
	// Qwen/Qwen1.5-MoE-A2.7B (their config.json).
	"olmoe-1b-7b": {Arch: "olmoe", Dim: 2048, Layers: 16, FFN: 1024, Heads: 16, KVHeads: 16, Vocab: 50304, Context: 4096, RopeBase: 10000, RMSEps: 1e-5,
		Experts: 64, ExpertsUsed: 8},
	"granite-3.1-3b-a800m": {Arch: "granitemoe", Dim: 1536, Layers: 32, FFN: 512, Heads: 24, KVHeads: 8, Vocab: 49155, Context: 131072, RopeBase: 1e7, RMSEps: 1e-6, Tied: true,
		Experts: 40, ExpertsUsed: 8, EmbedScale: 12, ResidualScale: 0.22, AttnScale: 0.015625, LogitScale: 6},
	"qwen1.5-moe-a2.7b": {Arch: "qwen2moe", Dim: 2048, Layers: 24, FFN: 5632, Heads: 16, KVHeads: 16, Vocab: 151936, Context: 8192, RopeBase: 1e6, RMSEps: 1e-6,
		Experts: 60, ExpertsUsed: 4, ExpertFFN: 1408, SharedFFN: 5632},
	// The golden-test models of the mixture-of-experts architectures
	// (testdata/golden/SOURCE.md): the other goldens' size, 8 experts of
	// 256, 2 per token.
	"golden-olmoe": {Arch: "olmoe", Dim: 256, Layers: 2, FFN: 256, Heads: 4, KVHeads: 4, Vocab: 320, Context: 4096, RopeBase: 10000, RMSEps: 1e-5,
		Experts: 8, ExpertsUsed: 2},
	"golden-qwen2moe": {Arch: "qwen2moe", Dim: 256, Layers: 2, FFN: 512, Heads: 4, KVHeads: 2, Vocab: 320, Context: 4096, RopeBase: 1e6, RMSEps: 1e-6,
		Experts: 8, ExpertsUsed: 2, ExpertFFN: 256, SharedFFN: 512},
	"golden-granitemoe": {Arch: "granitemoe", Dim: 256, Layers: 2, FFN: 256, Heads: 4, KVHeads: 2, Vocab: 320, Context: 4096, RopeBase: 1e4, RMSEps: 1e-6, Tied: true,
		Experts: 8, ExpertsUsed: 2, EmbedScale: 12, ResidualScale: 0.22, AttnScale: 0.015625, LogitScale: 6},
	// A small llama for tests and load tests: big enough to batch, small enough for CI.
	"tiny-llama": {Arch: "llama", Dim: 256, Layers: 4, FFN: 768, Heads: 8, KVHeads: 4, Vocab: 1024, Context: 4096, RopeBase: 10000, RMSEps: 1e-5},
}

// PresetNames lists the presets.
func PresetNames() []string { return slices.Sorted(maps.Keys(Presets)) }

func (s Shape) experts() int   { return cmp.Or(s.Experts, 8) }
func (s Shape) used() int      { return cmp.Or(s.ExpertsUsed, 2) }
func (s Shape) expertFFN() int { return cmp.Or(s.ExpertFFN, s.FFN) }

func (s Shape) headDim() int {
	if s.HeadDim > 0 {
		return s.HeadDim
	}
	return s.Dim / s.Heads
}

type tensorSpec struct {
	name   string
	shape  []uint64 // ggml order
	fill   float32  // constant fill for vectors; 0 = random
	jitter bool     // vectors: 1 + 0.2·N(0, 1) each
}

// Tensors lists the tensors of s in llama.cpp's names and shapes: those of
// its family's table, the model's own first, then each block's.
func (s Shape) Tensors() []tensorSpec {
	f := families[s.Arch]
	var ts []tensorSpec
	add := func(t tensor, name string) {
		if t.when != nil && !t.when(s) {
			return
		}
		spec := tensorSpec{name: name, shape: make([]uint64, len(t.axes))}
		for i, a := range t.axes {
			spec.shape[i] = a(s)
		}
		if t.ones {
			spec.fill = 1
		}
		spec.jitter = t.jitter
		ts = append(ts, spec)
	}
	for _, t := range f.global {
		add(t, t.name)
	}
	for i := 0; i < s.Layers; i++ {
		for _, t := range f.block {
			add(t, model.Layer(t.name, i))
		}
	}
	return ts
}

// Metadata returns the KVs llama.cpp expects for s, with a synthetic vocabulary.
func (s Shape) Metadata(name string, fileType uint32) []gguf.KV {
	a := s.Arch
	key := func(tmpl string) string { return fmt.Sprintf(tmpl, a) }
	kvs := []gguf.KV{
		{Key: model.KeyArchitecture, Value: gguf.Str(a)},
		{Key: "general.name", Value: gguf.Str(name)},
		{Key: "general.file_type", Value: gguf.U32(fileType)},
		{Key: "general.quantization_version", Value: gguf.U32(2)},
		{Key: key(model.KeyContextLength), Value: gguf.U32(uint32(s.Context))},
		{Key: key(model.KeyEmbeddingLength), Value: gguf.U32(uint32(s.Dim))},
		{Key: key(model.KeyBlockCount), Value: gguf.U32(uint32(s.Layers))},
		{Key: key(model.KeyFeedForwardLength), Value: gguf.U32(uint32(s.FFN))},
		{Key: key(model.KeyHeadCount), Value: gguf.U32(uint32(s.Heads))},
		{Key: key(model.KeyHeadCountKV), Value: gguf.U32(uint32(s.KVHeads))},
		{Key: key(model.KeyRMSEpsilon), Value: gguf.F32(s.RMSEps)},
		{Key: key(model.KeyRopeFreqBase), Value: gguf.F32(s.RopeBase)},
		{Key: key(model.KeyRopeDimCount), Value: gguf.U32(uint32(s.headDim()))},
		{Key: key(model.KeyVocabSize), Value: gguf.U32(uint32(s.Vocab))},
	}
	if s.HeadDim > 0 {
		kvs = append(kvs, gguf.KV{Key: key(model.KeyKeyLength), Value: gguf.U32(uint32(s.HeadDim))},
			gguf.KV{Key: key(model.KeyValueLength), Value: gguf.U32(uint32(s.HeadDim))})
	}
	if s.SlidingWin > 0 {
		kvs = append(kvs, gguf.KV{Key: key(model.KeySlidingWindow), Value: gguf.U32(uint32(s.SlidingWin))})
	}
	if s.AttnSoftcap > 0 {
		kvs = append(kvs, gguf.KV{Key: key(model.KeyAttnSoftcap), Value: gguf.F32(s.AttnSoftcap)},
			gguf.KV{Key: key(model.KeyFinalSoftcap), Value: gguf.F32(s.FinalSoftcap)})
	}
	if m := families[s.Arch].metadata; m != nil {
		for _, kv := range m(s) {
			kvs = append(kvs, gguf.KV{Key: key(kv.Key), Value: kv.Value})
		}
	}
	tokens, scores, types := vocab(s.Vocab)
	if f := families[s.Arch]; f.controlsAt > 0 && f.controlsAt+len(f.controls) <= s.Vocab {
		for i, c := range f.controls {
			tokens[f.controlsAt+i], scores[f.controlsAt+i], types[f.controlsAt+i] = c, 0, 3
		}
	}
	kvs = append(kvs,
		gguf.KV{Key: "tokenizer.ggml.model", Value: gguf.Str("llama")},
		gguf.KV{Key: model.KeyTokens, Value: gguf.Strs(tokens)},
		gguf.KV{Key: "tokenizer.ggml.scores", Value: gguf.F32s(scores)},
		gguf.KV{Key: "tokenizer.ggml.token_type", Value: gguf.I32s(types)},
		gguf.KV{Key: "tokenizer.ggml.unknown_token_id", Value: gguf.U32(0)},
		gguf.KV{Key: "tokenizer.ggml.bos_token_id", Value: gguf.U32(1)},
		gguf.KV{Key: "tokenizer.ggml.eos_token_id", Value: gguf.U32(2)},
		gguf.KV{Key: "tokenizer.ggml.add_bos_token", Value: gguf.Bool(true)},
	)
	return kvs
}

// vocab is a SentencePiece vocabulary: <unk>, <s>, </s>, the 256 byte
// tokens, then "▁tN" filler pieces with decreasing scores.
func vocab(n int) ([]string, []float32, []int32) {
	tokens := make([]string, n)
	scores := make([]float32, n)
	types := make([]int32, n)
	tokens[0], tokens[1], tokens[2] = "<unk>", "<s>", "</s>"
	types[0], types[1], types[2] = 2, 3, 3
	for i := 0; i < 256 && 3+i < n; i++ {
		tokens[3+i] = fmt.Sprintf("<0x%02X>", i)
		types[3+i] = 6
	}
	for i := 259; i < n; i++ {
		tokens[i] = fmt.Sprintf("▁t%d", i)
		scores[i] = -float32(i)
		types[i] = 1
	}
	return tokens, scores, types
}

// Write writes a model of shape s quantized with scheme to out. Weights are
// N(0, 1/fan_in) rows, quantized once into a small pool and reused, so an 8B
// file is written at disk speed.
func Write(out io.Writer, s Shape, name string, scheme quantize.Scheme, seed uint64) (int64, error) {
	if _, ok := families[s.Arch]; !ok {
		return 0, fmt.Errorf("synth: no entry for architecture %q (synth knows %v)", s.Arch, slices.Sorted(maps.Keys(families)))
	}
	w := gguf.NewWriter(3)
	w.SetAlignment(32)
	for _, kv := range s.Metadata(name, scheme.FileType) {
		w.AddKV(kv.Key, kv.Value)
	}
	var specs []quantize.Tensor
	for _, spec := range s.Tensors() {
		specs = append(specs, quantize.Tensor{Name: spec.name, Type: kernels.F32, Shape: spec.shape})
	}
	types, err := scheme.Types(quantize.Model{Arch: s.Arch, Layers: s.Layers, Heads: s.Heads, KVHeads: s.KVHeads}, specs)
	if err != nil {
		return 0, fmt.Errorf("synth: %w", err)
	}
	rng := rand.New(rand.NewPCG(seed, seed+1))
	pools := map[string][][]byte{}
	for ti, spec := range s.Tensors() {
		shape := spec.shape
		if len(shape) == 1 {
			vals := make([]float32, shape[0])
			for i := range vals {
				if spec.jitter {
					vals[i] = float32(1 + 0.2*rng.NormFloat64())
				} else if spec.fill != 0 {
					vals[i] = spec.fill
				} else {
					vals[i] = float32(rng.NormFloat64() * 0.02)
				}
			}
			data := make([]byte, 4*len(vals))
			kernels.Quantize(kernels.F32, vals, data)
			w.AddTensor(spec.name, kernels.F32, shape, data)
			continue
		}
		t := types[spec.name]
		cols, rows := int(shape[0]), int(shape[1])
		if len(shape) == 3 { // experts: their rows one after the other
			rows *= int(shape[2])
		}
		key := fmt.Sprintf("%s/%d", t, cols)
		pool, ok := pools[key]
		if !ok {
			pool = rowPool(rng, t, cols, 64)
			pools[key] = pool
		}
		ti := ti
		w.AddTensorFunc(spec.name, t, shape, func(wr io.Writer) error {
			r := rand.New(rand.NewPCG(seed, uint64(ti)))
			const slab = 256
			buf := make([]byte, 0, slab*len(pool[0]))
			for r0 := 0; r0 < rows; r0 += slab {
				buf = buf[:0]
				for i := r0; i < min(rows, r0+slab); i++ {
					buf = append(buf, pool[r.IntN(len(pool))]...)
				}
				if _, err := wr.Write(buf); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return w.WriteTo(out)
}

func rowPool(rng *rand.Rand, t kernels.DType, cols, n int) [][]byte {
	std := 1 / math.Sqrt(float64(cols))
	f := make([]float32, cols)
	rb, _ := t.RowBytes(cols)
	pool := make([][]byte, n)
	for i := range pool {
		for j := range f {
			f[j] = float32(rng.NormFloat64() * std)
		}
		pool[i] = make([]byte, rb)
		kernels.Quantize(t, f, pool[i])
	}
	return pool
}
