// Package packtest builds synthetic GGUF models for tests and benchmarks of
// packing and loading: small Llamas whose matrices are really quantized, and
// large ones of any size whose weights are random bytes (valid containers
// and shapes, meaningless numbers).
package packtest

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
)

// Spec is the shape of a synthetic Llama.
type Spec struct {
	Dim, FFN, Layers, Heads, KVHeads, Vocab, Context int
	// Matrix is the type of the attention and FFN matrices; Embedding of the
	// token embedding (tied output). Down defaults to Matrix.
	Matrix, Down, Embedding kernels.DType
	// Random fills quantized tensors with random bytes instead of quantizing
	// random weights: much faster, for large benchmark files.
	Random bool
	Seed   uint64
	// Edit, when set, may change a tensor's type or shape before it is
	// written (data are generated for the result) or drop it (keep false):
	// for tests of files that are valid GGUF but not a valid model.
	Edit func(name string, t kernels.DType, shape []uint64) (kernels.DType, []uint64, bool)
}

// Tiny is a two-layer Llama with Q4_K, Q6_K and Q8_0 matrices (a few
// hundred KiB).
var Tiny = Spec{Dim: 256, FFN: 512, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 64, Context: 128,
	Matrix: kernels.Q4_K, Down: kernels.Q6_K, Embedding: kernels.Q8_0, Seed: 1}

// Large returns a spec of roughly size bytes of Q8_0 weights (dim 2048).
func Large(size int64) Spec {
	s := Spec{Dim: 2048, FFN: 5632, Heads: 32, KVHeads: 8, Vocab: 512, Context: 2048,
		Matrix: kernels.Q8_0, Embedding: kernels.Q8_0, Random: true, Seed: 2}
	perLayer := int64(2*s.Dim*s.Dim+2*s.Dim*s.Dim/4+3*s.Dim*s.FFN) * 34 / 32
	s.Layers = max(1, int(size/perLayer))
	return s
}

// Writer returns a GGUF writer for the model; the caller may add or
// override keys and tensors before writing.
func (s Spec) Writer() *gguf.Writer {
	if s.Down == 0 {
		s.Down = s.Matrix
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0x9e3779b97f4a7c15))
	headDim := s.Dim / s.Heads
	kvDim := s.KVHeads * headDim
	w := gguf.NewWriter(3)
	w.AddKV("general.architecture", gguf.Str("llama"))
	w.AddKV("general.name", gguf.Str("packtest synthetic llama"))
	w.AddKV("llama.context_length", gguf.U32(uint32(s.Context)))
	w.AddKV("llama.embedding_length", gguf.U32(uint32(s.Dim)))
	w.AddKV("llama.block_count", gguf.U32(uint32(s.Layers)))
	w.AddKV("llama.feed_forward_length", gguf.U32(uint32(s.FFN)))
	w.AddKV("llama.attention.head_count", gguf.U32(uint32(s.Heads)))
	w.AddKV("llama.attention.head_count_kv", gguf.U32(uint32(s.KVHeads)))
	w.AddKV("llama.attention.layer_norm_rms_epsilon", gguf.F32(1e-5))
	w.AddKV("llama.rope.dimension_count", gguf.U32(uint32(headDim)))
	w.AddKV("llama.rope.freq_base", gguf.F32(10000))
	tokens := make([]string, s.Vocab)
	scores := make([]float32, s.Vocab)
	types := make([]int32, s.Vocab)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("tok%d", i)
		scores[i] = -float32(i)
		types[i] = 1
	}
	tokens[0], tokens[1], tokens[2] = "<unk>", "<s>", "</s>"
	types[0], types[1], types[2] = 2, 3, 3
	w.AddKV("tokenizer.ggml.model", gguf.Str("llama"))
	w.AddKV("tokenizer.ggml.tokens", gguf.Strs(tokens))
	w.AddKV("tokenizer.ggml.scores", gguf.F32s(scores))
	w.AddKV("tokenizer.ggml.token_type", gguf.I32s(types))
	w.AddKV("tokenizer.ggml.bos_token_id", gguf.U32(1))
	w.AddKV("tokenizer.ggml.eos_token_id", gguf.U32(2))
	w.AddKV("tokenizer.chat_template", gguf.Str("{% for m in messages %}{{ m.content }}{% endfor %}"))

	add := func(name string, t kernels.DType, cols, rows int) {
		shape := []uint64{uint64(cols)}
		if rows > 0 {
			shape = append(shape, uint64(rows))
		}
		seed := rng.Uint64()
		if s.Edit != nil {
			var keep bool
			if t, shape, keep = s.Edit(name, t, shape); !keep {
				return
			}
			cols, rows = int(shape[0]), 1
			for _, d := range shape[1:] {
				rows *= int(d)
			}
		}
		w.AddTensorFunc(name, t, shape, func(out io.Writer) error {
			return writeTensor(out, t, cols, max(rows, 1), s.Random, seed)
		})
	}
	add("token_embd.weight", s.Embedding, s.Dim, s.Vocab)
	add("output_norm.weight", kernels.F32, s.Dim, 0)
	for i := range s.Layers {
		blk := func(n string) string { return fmt.Sprintf("blk.%d.%s.weight", i, n) }
		add(blk("attn_norm"), kernels.F32, s.Dim, 0)
		add(blk("attn_q"), s.Matrix, s.Dim, s.Dim)
		add(blk("attn_k"), s.Matrix, s.Dim, kvDim)
		add(blk("attn_v"), s.Matrix, s.Dim, kvDim)
		add(blk("attn_output"), s.Matrix, s.Dim, s.Dim)
		add(blk("ffn_norm"), kernels.F32, s.Dim, 0)
		add(blk("ffn_gate"), s.Matrix, s.Dim, s.FFN)
		add(blk("ffn_up"), s.Matrix, s.Dim, s.FFN)
		add(blk("ffn_down"), s.Down, s.FFN, s.Dim)
	}
	return w
}

// Bytes encodes the model in memory.
func (s Spec) Bytes() ([]byte, error) { return s.Writer().Bytes() }

// writeTensor writes rows of cols weights of type t, row by row.
func writeTensor(out io.Writer, t kernels.DType, cols, rows int, random bool, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 1))
	rowBytes, ok := t.RowBytes(cols)
	if !ok {
		return fmt.Errorf("packtest: %d columns of %s", cols, t)
	}
	row := make([]byte, rowBytes)
	x := make([]float32, cols)
	for range rows {
		if random && t.BlockSize() > 1 {
			i := 0
			for ; i+8 <= len(row); i += 8 {
				binary.LittleEndian.PutUint64(row[i:], rng.Uint64())
			}
			for ; i < len(row); i++ {
				row[i] = byte(rng.Uint32())
			}
			// Keep the block scales finite: ggml blocks of this family
			// start with an fp16 scale; set it to 2^-8.
			if t == kernels.Q8_0 || t == kernels.Q4_0 {
				for b := 0; b < len(row); b += t.BlockBytes() {
					binary.LittleEndian.PutUint16(row[b:], kernels.F32ToF16(1.0/256))
				}
			}
		} else {
			for i := range x {
				x[i] = float32(rng.NormFloat64() * 0.05)
				if t == kernels.F32 {
					x[i] = 1 + float32(math.Abs(float64(x[i])))
				}
			}
			kernels.Quantize(t, x, row)
		}
		if _, err := out.Write(row); err != nil {
			return err
		}
	}
	return nil
}
