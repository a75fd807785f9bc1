// Package quantize converts GGUF models between weight formats, with
// llama.cpp's mixes (Q4_K_M, Q5_K_M), and chooses per-tensor types the way
// llama-quantize does so the output loads in llama.cpp too.
package quantize

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
)

// Scheme is a target: a llama.cpp file type (llama_ftype), its default
// tensor type, and the rules llama-quantize applies on top for that type.
type Scheme struct {
	Name     string
	Base     kernels.DType
	FileType uint32 // general.file_type (llama_ftype)
}

// The llama_ftype values of the schemes.
const (
	ftypeF32    = 0
	ftypeF16    = 1
	ftypeQ4_0   = 2
	ftypeQ4_1   = 3
	ftypeQ5_0   = 8
	ftypeQ5_1   = 9
	ftypeQ8_0   = 7
	ftypeQ4_K_S = 14
	ftypeQ4_K_M = 15
	ftypeQ5_K_S = 16
	ftypeQ5_K_M = 17
	ftypeQ6_K   = 18
	ftypeBF16   = 32
	ftypeTQ1_0  = 36
	ftypeTQ2_0  = 37
)

// Schemes are the targets `corelm quantize` accepts. Q4_K and Q5_K are
// llama.cpp's names for the _S mixes' file types.
var Schemes = map[string]Scheme{
	"F32":    {Name: "F32", Base: kernels.F32, FileType: ftypeF32},
	"F16":    {Name: "F16", Base: kernels.F16, FileType: ftypeF16},
	"BF16":   {Name: "BF16", Base: kernels.BF16, FileType: ftypeBF16},
	"Q8_0":   {Name: "Q8_0", Base: kernels.Q8_0, FileType: ftypeQ8_0},
	"Q4_0":   {Name: "Q4_0", Base: kernels.Q4_0, FileType: ftypeQ4_0},
	"Q4_1":   {Name: "Q4_1", Base: kernels.Q4_1, FileType: ftypeQ4_1},
	"Q5_0":   {Name: "Q5_0", Base: kernels.Q5_0, FileType: ftypeQ5_0},
	"Q5_1":   {Name: "Q5_1", Base: kernels.Q5_1, FileType: ftypeQ5_1},
	"Q4_K_S": {Name: "Q4_K_S", Base: kernels.Q4_K, FileType: ftypeQ4_K_S},
	"Q4_K":   {Name: "Q4_K_S", Base: kernels.Q4_K, FileType: ftypeQ4_K_S},
	"Q5_K_S": {Name: "Q5_K_S", Base: kernels.Q5_K, FileType: ftypeQ5_K_S},
	"Q5_K":   {Name: "Q5_K_S", Base: kernels.Q5_K, FileType: ftypeQ5_K_S},
	"Q6_K":   {Name: "Q6_K", Base: kernels.Q6_K, FileType: ftypeQ6_K},
	"Q4_K_M": {Name: "Q4_K_M", Base: kernels.Q4_K, FileType: ftypeQ4_K_M},
	"Q5_K_M": {Name: "Q5_K_M", Base: kernels.Q5_K, FileType: ftypeQ5_K_M},
	"TQ1_0":  {Name: "TQ1_0", Base: kernels.TQ1_0, FileType: ftypeTQ1_0},
	"TQ2_0":  {Name: "TQ2_0", Base: kernels.TQ2_0, FileType: ftypeTQ2_0},
}

// ParseScheme looks a scheme up by name (case-insensitive).
func ParseScheme(name string) (Scheme, error) {
	if s, ok := Schemes[strings.ToUpper(name)]; ok {
		return s, nil
	}
	names := make([]string, 0, len(Schemes))
	for n := range Schemes {
		names = append(names, n)
	}
	sort.Strings(names)
	return Scheme{}, fmt.Errorf("unknown quantization type %q (want one of %s)", name, strings.Join(names, ", "))
}

// Tensor is what type selection knows of a tensor.
type Tensor struct {
	Name  string
	Type  kernels.DType // in the source
	Shape []uint64      // ggml order: Shape[0] is the row length
}

// Model is what type selection knows of the model.
type Model struct {
	Arch           string
	Layers         int // block_count
	Heads, KVHeads int
	Experts        int // expert_count of a mixture of experts, else 0
}

// Types chooses the type of every tensor of a model quantized with s, as
// llama-quantize (llama.cpp 0a50d99, llama-quant.cpp) does for this file
// type without an importance matrix or overrides: tensors in its order
// (layer, then name), so its per-category counters count the same; the
// output matrix (or the token embedding when it doubles as the output) in
// Q6_K, or Q8_0 when the base type is Q8_0 or its rows do not fit the base
// block; the _M and _S mixes' upgrades of attention-value-like (attn_v,
// attn_qkv) and ffn_down matrices; its rules for mixtures of exactly 8
// experts (Mixtral's count: attention values and keys in Q8_0, the
// attention output in Q5_K for Q4_K_S and Q4_K_M), and for any mixture the
// ffn_down layer read from the tensor's name (its experts' and shared
// expert's matrices are both ffn_down); and its fallbacks for row lengths
// a block does not divide. Tensors it does not quantize (1-D, norms) keep
// their type. It fails where llama-quantize does: a row length that no
// type of the chain fits.
func (s Scheme) Types(m Model, tensors []Tensor) (map[string]kernels.DType, error) {
	order := slices.Clone(tensors)
	slices.SortStableFunc(order, func(a, b Tensor) int {
		if la, lb := layerOf(a.Name), layerOf(b.Name); la != lb {
			return cmp.Compare(la, lb)
		}
		return strings.Compare(a.Name, b.Name)
	})
	st := typeState{scheme: s, model: m, tied: true}
	for _, t := range order {
		c := categoryOf(t.Name)
		if isAttnV(c) {
			st.nAttnV++
		}
		if c == catOutput {
			st.tied = false
		}
	}
	out := make(map[string]kernels.DType, len(order))
	for _, t := range order {
		typ, err := st.typeOf(t)
		if err != nil {
			return nil, err
		}
		out[t.Name] = typ
	}
	return out, nil
}

// layerOf is the layer of a "blk.N." tensor, -1 for the others (as
// llama.cpp's loader orders them).
func layerOf(name string) int {
	if m := layerRE.FindStringSubmatch(name); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil {
			return n
		}
	}
	return -1
}

var layerRE = regexp.MustCompile(`^blk\.(\d+)\.`)

type category int

const (
	catOther category = iota
	catOutput
	catTokenEmbd
	catAttnQKV
	catAttnKVB
	catAttnV
	catAttnK
	catAttnQ
	catAttnOutput
	catFFNUp
	catFFNGate
	catFFNDown
)

// categoryOf is llama-quantize's tensor category: by substring, first match.
func categoryOf(name string) category {
	switch {
	case name == "output.weight":
		return catOutput
	case name == "token_embd.weight" || name == "per_layer_token_embd.weight":
		return catTokenEmbd
	}
	for _, c := range []struct {
		sub string
		cat category
	}{
		{"attn_qkv.weight", catAttnQKV}, {"attn_kv_b.weight", catAttnKVB}, {"attn_v.weight", catAttnV},
		{"attn_k.weight", catAttnK}, {"attn_q.weight", catAttnQ}, {"attn_output.weight", catAttnOutput},
		{"ffn_up", catFFNUp}, {"ffn_gate", catFFNGate}, {"ffn_down", catFFNDown},
	} {
		if strings.Contains(name, c.sub) {
			return c.cat
		}
	}
	return catOther
}

// isAttnV: the attention-value-like matrices, the most sensitive.
func isAttnV(c category) bool { return c == catAttnV || c == catAttnQKV || c == catAttnKVB }

// typeState walks the tensors in order, counting as llama-quantize counts.
type typeState struct {
	scheme         Scheme
	model          Model
	tied           bool // no output.weight: the token embedding is the output
	nAttnV, iAttnV int
	iFFNDown       int
}

// quantizable is llama-quantize's tensor_allows_quantization for the
// tensors of the architectures corelm reads.
func quantizable(t Tensor) bool {
	return len(t.Shape) >= 2 && strings.HasSuffix(t.Name, "weight") && !strings.Contains(t.Name, "_norm.weight") &&
		!strings.Contains(t.Name, "ffn_gate_inp.weight") && t.Name != "position_embd.weight" && t.Name != "token_types.weight"
}

// useMoreBits is llama.cpp's rule for which layers of a mix get more bits:
// the first and last eighth, and every third layer in between.
func useMoreBits(layer, layers int) bool {
	return layer < layers/8 || layer >= 7*layers/8 || (layer-layers/8)%3 == 2
}

func (st *typeState) typeOf(t Tensor) (kernels.DType, error) {
	if !quantizable(t) {
		return t.Type, nil
	}
	typ := st.scheme.Base
	if typ.BlockSize() == 1 { // F32, F16, BF16: no rules
		return typ, nil
	}
	f := st.scheme.FileType
	switch c := categoryOf(t.Name); {
	case c == catOutput || (st.tied && c == catTokenEmbd):
		if t.Shape[0]%uint64(typ.BlockSize()) != 0 {
			typ = kernels.Q8_0
		} else if typ != kernels.Q8_0 {
			typ = kernels.Q6_K
		}
	case c == catTokenEmbd:
		if f == ftypeTQ1_0 || f == ftypeTQ2_0 {
			typ = kernels.Q4_K
		}
	case isAttnV(c):
		switch {
		case (f == ftypeQ4_K_M || f == ftypeQ5_K_M) && useMoreBits(st.iAttnV, st.nAttnV):
			typ = kernels.Q6_K
		case f == ftypeQ4_K_S && st.iAttnV < 4:
			typ = kernels.Q5_K
		}
		if st.is70B() && (typ == kernels.Q3_K || typ == kernels.Q4_K) {
			typ = kernels.Q5_K
		}
		if st.model.Experts == 8 {
			typ = kernels.Q8_0
		}
		st.iAttnV++
	case c == catAttnK:
		if st.model.Experts == 8 {
			typ = kernels.Q8_0
		}
	case c == catAttnOutput:
		if st.model.Experts == 8 && (f == ftypeQ4_K_S || f == ftypeQ4_K_M) {
			typ = kernels.Q5_K
		}
	case c == catFFNDown:
		i, n := st.iFFNDown, st.model.Layers
		if st.model.Experts > 1 {
			// llama.cpp: a mixture's experts may come in any order, so
			// the layer is the one the name says.
			if i = layerOf(t.Name); i < 0 || i >= n {
				return 0, fmt.Errorf("tensor %s: no layer in [0, %d) in its name", t.Name, n)
			}
		}
		switch {
		case (f == ftypeQ4_K_M || f == ftypeQ5_K_M) && useMoreBits(i, n):
			typ = kernels.Q6_K
		case f == ftypeQ4_K_S && i < n/8:
			typ = kernels.Q5_K
		}
		st.iFFNDown++
	}
	return fallback(t, typ)
}

// is70B is llama.cpp's LLM_TYPE_70B for the architectures here: 80 layers
// of grouped-query attention (Llama-2/3 70B, Qwen2-72B).
func (st *typeState) is70B() bool {
	m := st.model
	return m.Layers == 80 && ((m.Arch == "llama" && m.Heads != m.KVHeads) || m.Arch == "qwen2")
}

// fallback is llama-quantize's type for a row length typ's block does not
// divide: a type of 32-value blocks, else F16.
func fallback(t Tensor, typ kernels.DType) (kernels.DType, error) {
	cols := t.Shape[0]
	if cols%uint64(typ.BlockSize()) == 0 {
		return typ, nil
	}
	next, ok := map[kernels.DType]kernels.DType{
		kernels.Q2_K: kernels.Q4_0, kernels.Q3_K: kernels.Q4_0, kernels.TQ1_0: kernels.Q4_0, kernels.TQ2_0: kernels.Q4_0, kernels.Q4_K: kernels.Q5_0,
		kernels.Q5_K: kernels.Q5_1, kernels.Q6_K: kernels.Q8_0,
	}[typ]
	if !ok {
		return 0, fmt.Errorf("tensor %s: rows of %d values do not fit %s blocks of %d, and llama.cpp defines no fallback for it",
			t.Name, cols, typ, typ.BlockSize())
	}
	if cols%uint64(next.BlockSize()) != 0 {
		return kernels.F16, nil
	}
	return next, nil
}

// Convert writes src re-encoded with scheme s to out. Every key is kept
// (general.file_type updated); rows are decoded to float32 and re-encoded
// one at a time, spread over the pool, so memory stays small.
func Convert(ctx context.Context, src *gguf.File, s Scheme, pool *kernels.Pool, out io.Writer, progress func(done, total int)) error {
	types, err := s.Types(ModelOf(src), TensorsOf(src))
	if err != nil {
		return err
	}
	w := gguf.NewWriter(3)
	w.SetAlignment(src.Alignment)
	for _, kv := range src.KVs {
		if kv.Key == "general.alignment" {
			continue
		}
		w.AddKV(kv.Key, kv.Value)
	}
	w.AddKV("general.file_type", gguf.U32(s.FileType))
	w.AddKV("general.quantization_version", gguf.U32(2))
	total := len(src.Tensors)
	for i := range src.Tensors {
		t := &src.Tensors[i]
		if !kernels.Supported(t.Type) {
			return fmt.Errorf("tensor %s: cannot decode type %s", t.Name, t.Type)
		}
		dst := types[t.Name]
		data := src.TensorData(t)
		if dst == t.Type {
			w.AddTensor(t.Name, t.Type, t.Shape, data)
			continue
		}
		idx := i
		w.AddTensorFunc(t.Name, dst, t.Shape, func(wr io.Writer) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			err := convertTensor(t, data, dst, pool, wr)
			if progress != nil {
				progress(idx+1, total)
			}
			return err
		})
	}
	_, err = w.WriteTo(out)
	return err
}

// ModelOf reads what type selection needs of a GGUF model.
func ModelOf(f *gguf.File) Model {
	arch, _ := f.String("general.architecture")
	get := func(key string) int {
		v, _ := f.Uint(arch + "." + key)
		return int(v)
	}
	m := Model{Arch: arch, Layers: get("block_count"), Heads: get("attention.head_count"), KVHeads: get("attention.head_count_kv"),
		Experts: get("expert_count")}
	if m.KVHeads == 0 {
		m.KVHeads = m.Heads
	}
	return m
}

// TensorsOf lists f's tensors for type selection.
func TensorsOf(f *gguf.File) []Tensor {
	ts := make([]Tensor, len(f.Tensors))
	for i, t := range f.Tensors {
		ts[i] = Tensor{Name: t.Name, Type: t.Type, Shape: t.Shape}
	}
	return ts
}

// convertTensor re-encodes a tensor in slabs of rows.
func convertTensor(t *gguf.Tensor, data []byte, dst kernels.DType, pool *kernels.Pool, out io.Writer) error {
	cols := int(t.Shape[0])
	rows := int(t.Elements()) / cols
	inRow, _ := t.Type.RowBytes(cols)
	outRow, _ := dst.RowBytes(cols)
	slab := max(1, min(rows, (8<<20)/max(outRow, 1)))
	buf := make([]byte, slab*outRow)
	for r0 := 0; r0 < rows; r0 += slab {
		n := min(slab, rows-r0)
		pool.Run(n, func(lo, hi int) {
			f := make([]float32, cols) // one per chunk: chunks run concurrently
			for r := lo; r < hi; r++ {
				src := data[(r0+r)*inRow : (r0+r+1)*inRow]
				kernels.Dequantize(t.Type, src, f)
				kernels.Quantize(dst, f, buf[r*outRow:(r+1)*outRow])
			}
		})
		if _, err := out.Write(buf[:n*outRow]); err != nil {
			return err
		}
	}
	return nil
}
