package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
)

// This file is the public face of the block formats: Quantize, Dequantize,
// Row and VecDotType dispatch on the type once per row and then run the
// per-block codecs of quant_legacy.go and quant_k.go. The codecs are reached
// through switch statements rather than function values so that callers'
// stack buffers do not escape (an indirect call makes the compiler assume
// they do).

// Supported reports whether Dequantize, DotF32 and Row can decode t.
func Supported(t DType) bool {
	switch t {
	case F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q8_K, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, TQ1_0, TQ2_0:
		return true
	}
	return false
}

// QuantizeSupported reports whether Quantize can encode t. Every supported
// decode type is also an encode type.
func QuantizeSupported(t DType) bool { return Supported(t) }

// VecDotType is the type ggml quantizes the activation vector to before a dot
// with a weight row of type t (ggml's type_traits_cpu[t].vec_dot_type). DotQ
// expects its activation operand in this type. It panics for a type that has
// no quantized dot here.
func VecDotType(t DType) DType {
	switch t {
	case Q4_0, Q5_0, Q8_0:
		return Q8_0
	case Q4_1, Q5_1:
		return Q8_1
	case Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, TQ1_0, TQ2_0:
		return Q8_K
	case F32, F16, BF16:
		return t
	}
	panic(fmt.Sprintf("kernels: no vec-dot type for %v", t))
}

// mustRow panics unless n elements of t fit exactly in nbytes bytes. Callers
// of the exported kernels validate shapes at load time, so a mismatch here is
// a programming error, not bad input.
func mustRow(op string, t DType, n, nbytes int) {
	if !Supported(t) {
		panic(fmt.Sprintf("kernels: %s: unsupported type %v", op, t))
	}
	size, ok := t.RowBytes(n)
	if !ok {
		panic(fmt.Sprintf("kernels: %s: %d elements is not a whole number of %v blocks (%d)", op, n, t, t.BlockSize()))
	}
	if size != nbytes {
		panic(fmt.Sprintf("kernels: %s: %d elements of %v take %d bytes, got %d", op, n, t, size, nbytes))
	}
}

// Dequantize decodes len(dst) elements of type t from src. len(dst) must be a
// multiple of t.BlockSize() and len(src) must equal t.RowBytes(len(dst));
// otherwise it panics.
func Dequantize(t DType, src []byte, dst []float32) {
	mustRow("Dequantize", t, len(dst), len(src))
	switch t {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	default:
		bs, bb := t.BlockSize(), t.BlockBytes()
		for i, j := 0, 0; i < len(dst); i, j = i+bs, j+bb {
			dequantBlock(t, src[j:j+bb], dst[i:i+bs])
		}
	}
}

// Quantize encodes src into dst with ggml's reference quantizers
// (quantize_row_*_ref), so files written from it load in llama.cpp and match
// its own output up to floating-point contraction differences (Q8_K, the
// activation encoding of the k-quants, has an assembly encoder on amd64 that
// writes the same bytes for finite input). len(src) must
// be a multiple of t.BlockSize() and len(dst) must equal t.RowBytes(len(src));
// otherwise it panics.
func Quantize(t DType, src []float32, dst []byte) {
	mustRow("Quantize", t, len(src), len(dst))
	switch t {
	case Q8_K:
		kern.quantQ8K(src, dst)
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
		}
	default:
		bs, bb := t.BlockSize(), t.BlockBytes()
		for i, j := 0, 0; i < len(src); i, j = i+bs, j+bb {
			quantBlock(t, src[i:i+bs], dst[j:j+bb])
		}
	}
}

// Row decodes row r of a row-major matrix of type t with cols columns into
// dst[:cols] (an embedding lookup, ggml's GET_ROWS). It panics if w does not
// hold row r whole or dst is shorter than cols.
func Row(t DType, w []byte, cols, r int, dst []float32) {
	rb, ok := t.RowBytes(cols)
	if !ok || r < 0 || (r+1)*rb > len(w) || len(dst) < cols {
		panic(fmt.Sprintf("kernels: Row: row %d of %d-column %v does not fit (%d bytes, dst %d)", r, cols, t, len(w), len(dst)))
	}
	Dequantize(t, w[r*rb:(r+1)*rb], dst[:cols])
}

// dequantBlock decodes one block of a block-quantized type.
func dequantBlock(t DType, b []byte, y []float32) {
	switch t {
	case Q4_0:
		dequantQ4_0(b, y)
	case Q4_1:
		dequantQ4_1(b, y)
	case Q5_0:
		dequantQ5_0(b, y)
	case Q5_1:
		dequantQ5_1(b, y)
	case Q8_0:
		dequantQ8_0(b, y)
	case Q8_1:
		dequantQ8_1(b, y)
	case Q2_K:
		dequantQ2K(b, y)
	case Q3_K:
		dequantQ3K(b, y)
	case Q4_K:
		dequantQ4K(b, y)
	case Q5_K:
		dequantQ5K(b, y)
	case Q6_K:
		dequantQ6K(b, y)
	case Q8_K:
		dequantQ8K(b, y)
	case TQ1_0:
		dequantTQ1_0(b, y)
	case TQ2_0:
		dequantTQ2_0(b, y)
	default:
		panic(fmt.Sprintf("kernels: no block decoder for %v", t))
	}
}

// quantBlock encodes one block of a block-quantized type.
func quantBlock(t DType, x []float32, b []byte) {
	switch t {
	case Q4_0:
		quantQ4_0(x, b)
	case Q4_1:
		quantQ4_1(x, b)
	case Q5_0:
		quantQ5_0(x, b)
	case Q5_1:
		quantQ5_1(x, b)
	case Q8_0:
		quantQ8_0(x, b)
	case Q8_1:
		quantQ8_1(x, b)
	case Q2_K:
		quantQ2K(x, b)
	case Q3_K:
		quantQ3K(x, b)
	case Q4_K:
		quantQ4K(x, b)
	case Q5_K:
		quantQ5K(x, b)
	case Q6_K:
		quantQ6K(x, b)
	case Q8_K:
		quantQ8K(x, b)
	case TQ1_0:
		quantTQ1_0(x, b)
	case TQ2_0:
		quantTQ2_0(x, b)
	default:
		panic(fmt.Sprintf("kernels: no block encoder for %v", t))
	}
}

// Little-endian field helpers shared by the codecs.

func getF16(b []byte) float32 { return F16ToF32(binary.LittleEndian.Uint16(b)) }

func putF16(b []byte, f float32) { binary.LittleEndian.PutUint16(b, F32ToF16(f)) }

func abs32(f float32) float32 { return math.Float32frombits(math.Float32bits(f) &^ (1 << 31)) }

// roundAway rounds half away from zero, as C's roundf.
func roundAway(f float32) float32 { return float32(math.Round(float64(f))) }
