package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Dot products of one encoded weight row with one activation row. DotQ is
// the path matrix products take (activations quantized once per matmul, then
// integer arithmetic inside each block, as llama.cpp does); DotF32 decodes the
// weights block by block against float activations and serves as the
// higher-precision cross-check and the path for one-off dots.

// DotQ returns the dot product of weight row w (type t, n elements) with the
// activation row xq, which must have been encoded by Quantize(VecDotType(t)).
// Each block's products are summed in integers and scaled once, following
// ggml's scalar ggml_vec_dot_<t>_<vt>, so results agree with llama.cpp up to
// float summation order. On the assembly tiers (see dispatch.go) the integer
// sums are the same and the float order is ggml's AVX2 one. F32, F16 and BF16 rows sum products in float64 as
// ggml's scalar ggml_vec_dot_f32/f16/bf16 do. It panics on mismatched lengths.
func DotQ(t DType, n int, w, xq []byte) float32 {
	vt := VecDotType(t)
	mustRow("DotQ", t, n, len(w))
	mustRow("DotQ", vt, n, len(xq))
	return dotQ(t, w, xq)
}

// dotQ is DotQ without the shape checks, for callers that validated once.
func dotQ(t DType, w, xq []byte) float32 {
	k := kern
	switch t {
	case Q4_0:
		if k.q4_0 != nil {
			return k.q4_0(w, xq)
		}
		return dotQ4_0(w, xq)
	case Q4_1:
		return dotQ4_1(w, xq)
	case Q5_0:
		return dotQ5_0(w, xq)
	case Q5_1:
		return dotQ5_1(w, xq)
	case Q8_0:
		if k.q8_0 != nil {
			return k.q8_0(w, xq)
		}
		return dotQ8_0(w, xq)
	case Q2_K:
		return dotQ2K(w, xq)
	case Q3_K:
		return dotQ3K(w, xq)
	case Q4_K:
		if k.q4K != nil {
			return k.q4K(w, xq)
		}
		return dotQ4K(w, xq)
	case Q5_K:
		if k.q5K != nil {
			return k.q5K(w, xq)
		}
		return dotQ5K(w, xq)
	case Q6_K:
		if k.q6K != nil {
			return k.q6K(w, xq)
		}
		return dotQ6K(w, xq)
	case F32:
		var sum float64
		for i := 0; i+4 <= len(w); i += 4 {
			a := math.Float32frombits(binary.LittleEndian.Uint32(w[i:]))
			b := math.Float32frombits(binary.LittleEndian.Uint32(xq[i:]))
			sum += float64(a * b)
		}
		return float32(sum)
	case F16:
		if k.f16F16 != nil {
			return k.f16F16(w, xq)
		}
		var sum float64
		for i := 0; i+2 <= len(w); i += 2 {
			a := F16ToF32(binary.LittleEndian.Uint16(w[i:]))
			b := F16ToF32(binary.LittleEndian.Uint16(xq[i:]))
			sum += float64(a * b)
		}
		return float32(sum)
	case BF16:
		var sum float64
		for i := 0; i+2 <= len(w); i += 2 {
			a := BF16ToF32(binary.LittleEndian.Uint16(w[i:]))
			b := BF16ToF32(binary.LittleEndian.Uint16(xq[i:]))
			sum += float64(a * b)
		}
		return float32(sum)
	}
	panic(fmt.Sprintf("kernels: no quantized dot for %v", t))
}

// DotF32 returns the dot product of encoded row w (type t, len(x) elements)
// with x. Blocks are decoded into a stack buffer one at a time, products summed
// in float32 within a block and in float64 across blocks; nothing is
// allocated. It panics on mismatched lengths.
func DotF32(t DType, w []byte, x []float32) float32 {
	mustRow("DotF32", t, len(x), len(w))
	var sum float64
	switch t {
	case F32:
		for i, v := range x {
			sum += float64(math.Float32frombits(binary.LittleEndian.Uint32(w[4*i:])) * v)
		}
	case F16:
		if f := kern.f16F32; f != nil {
			return f(w, x)
		}
		for i, v := range x {
			sum += float64(F16ToF32(binary.LittleEndian.Uint16(w[2*i:])) * v)
		}
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
