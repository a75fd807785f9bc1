package kernels

import (
	"fmt"
	"math"
)

// Half-precision conversions. GGUF stores block scales as IEEE binary16 and
// some tensors as F16 or BF16; every decoder in this package goes through
// these four functions, so they must round exactly like ggml or quantized
// files written here would differ from llama.cpp's in the last bit.

// F16ToF32 widens an IEEE binary16 value. The conversion is exact; a NaN keeps
// its sign and payload and comes back quiet, as it does through ggml's
// conversion (and F16C) on x86.
func F16ToF32(h uint16) float32 { return f16Table[h] }

// f16Table holds every binary16 value widened (256 KiB): a load is cheaper
// than the bit manipulation in the KV cache and dequantization loops.
var f16Table = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = f16ToF32Bits(uint16(i))
	}
	return &t
}()

func f16ToF32Bits(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: mant × 2⁻²⁴ is exact in float32.
		v := float32(mant) * (1.0 / (1 << 24))
		return math.Float32frombits(sign | math.Float32bits(v))
	case 0x1f:
		if mant == 0 {
			return math.Float32frombits(sign | 0x7f800000)
		}
		return math.Float32frombits(sign | 0x7fc00000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// F32ToF16 narrows f to IEEE binary16 rounding to nearest, ties to even.
// Values beyond the half range become ±Inf; every NaN becomes the canonical
// quiet NaN 0x7e00 with f's sign, which is what ggml_compute_fp32_to_fp16
// produces.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15 // biased half exponent
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// The result is a half subnormal (or rounds up to the smallest normal):
		// its integer significand is the 24-bit float significand shifted right
		// by 14-e. Below 2⁻²⁵ everything rounds to zero.
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint(14 - e)
		h := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || rem == half && h&1 == 1 {
			h++
		}
		return sign | uint16(h)
	}
	// A carry out of the mantissa bumps the exponent, up to Inf: both are right.
	h := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || rem == 0x1000 && h&1 == 1 {
		h++
	}
	return sign | uint16(h)
}

// BF16ToF32 widens a bfloat16 value (the top half of a float32); exact.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 narrows f to bfloat16, rounding to nearest even. A NaN keeps its
// sign and top payload bits and is forced quiet, as ggml_compute_fp32_to_bf16
// does (plain truncation could turn a NaN with a low-only payload into Inf).
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// AxpyF16 adds w times the float16 values v (2·len(o) bytes, little-endian)
// to o: attention's accumulation of value rows from an f16 KV cache. The
// assembly tiers use one fused multiply-add per element, the reference a
// multiply and an add (results differ in the last bit).
func AxpyF16(w float32, v []byte, o []float32) {
	if len(v) != 2*len(o) {
		panic(fmt.Sprintf("kernels: AxpyF16: %d bytes of values for %d floats", len(v), len(o)))
	}
	kern.axpyF16(w, v, o)
}

// AxpysF16 adds Σ_i w[i]·v_i to o, v_i the len(o) float16 values at
// v[i·stride:] (bytes), rows in order: attention's accumulation of the value
// rows of consecutive cache positions. Each tier gives what len(w) calls of
// its AxpyF16 would.
func AxpysF16(w []float32, v []byte, stride int, o []float32) {
	if len(w) > 0 && (stride < 2*len(o) || len(v) < (len(w)-1)*stride+2*len(o)) {
		panic(fmt.Sprintf("kernels: AxpysF16: %d rows of %d values at stride %d in %d bytes", len(w), len(o), stride, len(v)))
	}
	kern.axpysF16(w, v, stride, o)
}
