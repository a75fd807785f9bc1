package kernels

import (
	"encoding/binary"
	"fmt"
)

// Dot products of one encoded weight row with one activation row. DotQ is
// the path matrix products take (activations quantized once per matmul, then
// integer arithmetic inside each block, as llama.cpp does); DotF32 decodes the
// weights block by block against float activations and serves as the
// higher-precision cross-check and the path for one-off dots. Both dispatch
// through the active tier's table (dispatch.go) to the reference twins
// (dot_generic.go, dot_k_generic.go) or the assembly (dot_amd64.go).

// DotQ returns the dot product of weight row w (type t, n elements) with the
// activation row xq, which must have been encoded by Quantize(VecDotType(t)).
// Each block's products are summed in integers and scaled once, following
// ggml's scalar ggml_vec_dot_<t>_<vt>, so results agree with llama.cpp up to
// float summation order. On the assembly tiers (see dispatch.go) the integer
// sums are the same and the float order is ggml's AVX2 one. F32, F16 and
// BF16 rows sum products in float64 as ggml's scalar ggml_vec_dot_f32/f16/
// bf16 do, but for F32 rows on the assembly tiers, which sum in float32
// lanes (see dispatch.go). It panics on mismatched lengths.
func DotQ(t DType, n int, w, xq []byte) float32 {
	vt := VecDotType(t)
	mustRow("DotQ", t, n, len(w))
	mustRow("DotQ", vt, n, len(xq))
	return dotQ(t, w, xq)
}

// dotQ is DotQ without the shape checks, for callers that validated once
// (t has a vec-dot type).
func dotQ(t DType, w, xq []byte) float32 { return kern.dot[t](w, xq) }

// DotF32 returns the dot product of encoded row w (type t, len(x) elements)
// with x. Blocks are decoded into a stack buffer one at a time, products summed
// in float32 within a block and in float64 across blocks; nothing is
// allocated. F32 rows take their tier's kernel: the reference's float64
// sum, or the assembly's 32 float32 lanes (dispatch.go). It panics on
// mismatched lengths.
func DotF32(t DType, w []byte, x []float32) float32 {
	mustRow("DotF32", t, len(x), len(w))
	var sum float64
	switch t {
	case F32:
		return kern.f32F32(w, x)
	case F16:
		return kern.f16F32(w, x)
	case BF16:
		for i, v := range x {
			sum += float64(BF16ToF32(binary.LittleEndian.Uint16(w[2*i:])) * v)
		}
	default:
		var buf [QK_K]float32
		bs, bb := t.BlockSize(), t.BlockBytes()
		y := buf[:bs]
		for i, j := 0, 0; i < len(x); i, j = i+bs, j+bb {
			dequantBlock(t, w[j:j+bb], y)
			var s float32
			for k, v := range x[i : i+bs] {
				s += y[k] * v
			}
			sum += float64(s)
		}
	}
	return float32(sum)
}

// Dot returns the dot product of two float32 vectors of equal length, summed
// in float64.
func Dot(a, b []float32) float32 {
	if len(a) != len(b) {
		panic(fmt.Sprintf("kernels: Dot: lengths %d and %d differ", len(a), len(b)))
	}
	var sum float64
	for i, v := range a {
		sum += float64(v * b[i])
	}
	return float32(sum)
}
