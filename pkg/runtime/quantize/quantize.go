// Package quantize converts GGUF models between weight formats, with
// llama.cpp's mixes (Q4_K_M, Q5_K_M), and chooses per-tensor types the way
// llama-quantize does so the output loads in llama.cpp too.
package quantize

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
)

// Scheme is a target: a single type, or a mix that upgrades some tensors.
type Scheme struct {
	Name     string
	Base     kernels.DType
	FileType uint32 // general.file_type (llama_ftype)
	mix      bool   // Q4_K_M / Q5_K_M rules: attn_v, ffn_down of some layers and output → Q6_K
}

// Schemes are the targets `corelm quantize` accepts.
var Schemes = map[string]Scheme{
	"F32":    {Name: "F32", Base: kernels.F32, FileType: 0},
	"F16":    {Name: "F16", Base: kernels.F16, FileType: 1},
	"BF16":   {Name: "BF16", Base: kernels.BF16, FileType: 32},
	"Q8_0":   {Name: "Q8_0", Base: kernels.Q8_0, FileType: 7},
	"Q4_0":   {Name: "Q4_0", Base: kernels.Q4_0, FileType: 2},
	"Q4_K":   {Name: "Q4_K", Base: kernels.Q4_K, FileType: 14}, // = Q4_K_S without its tweaks
	"Q5_K":   {Name: "Q5_K", Base: kernels.Q5_K, FileType: 16},
	"Q6_K":   {Name: "Q6_K", Base: kernels.Q6_K, FileType: 18},
	"Q4_K_M": {Name: "Q4_K_M", Base: kernels.Q4_K, FileType: 15, mix: true},
	"Q5_K_M": {Name: "Q5_K_M", Base: kernels.Q5_K, FileType: 17, mix: true},
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
	return Scheme{}, fmt.Errorf("unknown quantization type %q (want one of %s)", name, strings.Join(names, ", "))
}

var layerOf = regexp.MustCompile(`^blk\.(\d+)\.`)

// useMoreBits is llama.cpp's rule for which layers of a mix get more bits:
// the first and last eighth, and every third layer in between.
func useMoreBits(layer, layers int) bool {
	return layer < layers/8 || layer >= 7*layers/8 || (layer-layers/8)%3 == 2
}

// TypeFor picks the type of one tensor: 1-D tensors stay F32; matrices get
// the scheme's type, upgraded by the mix rules, and fall back to a type whose
// block fits when the row length is not a multiple of the block size.
func (s Scheme) TypeFor(name string, shape []uint64, layers int) kernels.DType {
	if len(shape) < 2 || !strings.HasSuffix(name, ".weight") {
		return kernels.F32
	}
	t := s.Base
	if s.mix {
		switch {
		case name == "output.weight":
			t = kernels.Q6_K
		case strings.HasSuffix(name, ".attn_v.weight"), strings.HasSuffix(name, ".ffn_down.weight"):
			if m := layerOf.FindStringSubmatch(name); m != nil {
				if i, _ := strconv.Atoi(m[1]); useMoreBits(i, layers) {
					t = kernels.Q6_K
				}
			}
		}
	}
	for _, fallback := range []kernels.DType{t, kernels.Q8_0, kernels.F16} {
		if shape[0]%uint64(fallback.BlockSize()) == 0 {
			return fallback
		}
	}
	return kernels.F32
}

// Convert writes src re-encoded with scheme s to out. Every key is kept
// (general.file_type updated); rows are decoded to float32 and re-encoded
// one at a time, spread over the pool, so memory stays small.
func Convert(ctx context.Context, src *gguf.File, s Scheme, pool *kernels.Pool, out io.Writer, progress func(done, total int)) error {
	arch, _ := src.String("general.architecture")
	layers64, _ := src.Uint(arch + ".block_count")
	layers := int(layers64)
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
		dst := s.TypeFor(t.Name, t.Shape, layers)
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
	_, err := w.WriteTo(out)
	return err
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
