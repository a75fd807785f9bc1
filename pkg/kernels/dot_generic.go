package kernels

import (
	"encoding/binary"
	"math"
)

// The reference twins of the dot kernels (genericKernels' dot entries; the
// k-quants' are in dot_k_generic.go): the oracle the assembly is tested
// against, and the path of the generic tier.
//
// The float rows (F32, F16, BF16) sum the float32 products w[i]·x[i] in
// float64, in order, and round once (ggml's scalar ggml_vec_dot_f32/f16/bf16).
//
// The 32-element formats against Q8_0/Q8_1 activations follow ggml's
// ggml_vec_dot_q*_q8_*_generic: per block, the quants are multiplied and
// summed exactly in integers, then scaled by both block scales in float32
// and added to a float32 sum, block by block. For the formats with a minimum
// (Q4_1, Q5_1) the term m·Σx is folded in from the activation block's
// precomputed s = d·Σq.

func dotF32Generic(w, xq []byte) float32 {
	var sum float64
	for i := 0; i+4 <= len(w); i += 4 {
		a := math.Float32frombits(binary.LittleEndian.Uint32(w[i:]))
		b := math.Float32frombits(binary.LittleEndian.Uint32(xq[i:]))
		sum += float64(a * b)
	}
	return float32(sum)
}

// dotF32F32Generic is DotF32 of an F32 row: dotF32Generic's sum.
func dotF32F32Generic(w []byte, x []float32) float32 {
	var sum float64
	for i, v := range x {
		sum += float64(math.Float32frombits(binary.LittleEndian.Uint32(w[4*i:])) * v)
	}
	return float32(sum)
}

func dotF16F16Generic(w, xq []byte) float32 { return float32(sumF16F16(0, w, xq)) }

// dotF16F32Generic is DotF32 of an F16 row.
func dotF16F32Generic(w []byte, x []float32) float32 { return float32(sumF16F32(0, w, x)) }

// sumF16F16 adds the products of the F16 rows w and x to sum in order (also
// the tail of the assembly's F16 dots).
func sumF16F16(sum float64, w, x []byte) float64 {
	for i := 0; i+2 <= len(w); i += 2 {
		a := F16ToF32(binary.LittleEndian.Uint16(w[i:]))
		b := F16ToF32(binary.LittleEndian.Uint16(x[i:]))
		sum += float64(a * b)
	}
	return sum
}

// sumF16F32 adds the products of the F16 row w with x to sum in order.
func sumF16F32(sum float64, w []byte, x []float32) float64 {
	for i, v := range x {
		sum += float64(F16ToF32(binary.LittleEndian.Uint16(w[2*i:])) * v)
	}
	return sum
}

func dotBF16Generic(w, xq []byte) float32 {
	var sum float64
	for i := 0; i+2 <= len(w); i += 2 {
		a := BF16ToF32(binary.LittleEndian.Uint16(w[i:]))
		b := BF16ToF32(binary.LittleEndian.Uint16(xq[i:]))
		sum += float64(a * b)
	}
	return float32(sum)
}

const (
	q8_0Bytes = 34
	q8_1Bytes = 36
)

// nibbleDot returns the exact integer dot of the 32 quants of a Q4/Q5 block
// with the activation quants q8: quant j is nibble j%16 of qs (low nibbles
// first) with bit j of qh as its fifth bit (qh is 0 for Q4), less off.
func nibbleDot(qs []byte, qh uint32, off int, q8 []byte) int {
	s0, s1 := 0, 0
	for j := range 16 {
		v0, v1 := nibbles(qs, qh, j)
		s0 += (v0 - off) * int(int8(q8[j]))
		s1 += (v1 - off) * int(int8(q8[j+16]))
	}
	return s0 + s1
}

func dotQ4_0Generic(w, xq []byte) float32 {
	var sumf float32
	for ib := range len(w) / 18 {
		x, y := w[ib*18:(ib+1)*18], xq[ib*q8_0Bytes:(ib+1)*q8_0Bytes]
		sumf += float32(nibbleDot(x[2:18], 0, 8, y[2:34])) * getF16(x) * getF16(y)
	}
	return sumf
}

func dotQ4_1Generic(w, xq []byte) float32 {
	var sumf float32
	for ib := range len(w) / 20 {
		x, y := w[ib*20:(ib+1)*20], xq[ib*q8_1Bytes:(ib+1)*q8_1Bytes]
		s := nibbleDot(x[4:20], 0, 0, y[4:36])
		sumf += getF16(x)*getF16(y)*float32(s) + getF16(x[2:])*getF16(y[2:])
	}
	return sumf
}

func dotQ5_0Generic(w, xq []byte) float32 {
	var sumf float32
	for ib := range len(w) / 22 {
		x, y := w[ib*22:(ib+1)*22], xq[ib*q8_0Bytes:(ib+1)*q8_0Bytes]
		s := nibbleDot(x[6:22], binary.LittleEndian.Uint32(x[2:]), 16, y[2:34])
		sumf += getF16(x) * getF16(y) * float32(s)
	}
	return sumf
}

func dotQ5_1Generic(w, xq []byte) float32 {
	var sumf float32
	for ib := range len(w) / 24 {
		x, y := w[ib*24:(ib+1)*24], xq[ib*q8_1Bytes:(ib+1)*q8_1Bytes]
		s := nibbleDot(x[8:24], binary.LittleEndian.Uint32(x[4:]), 0, y[4:36])
		sumf += getF16(x)*getF16(y)*float32(s) + getF16(x[2:])*getF16(y[2:])
	}
	return sumf
}

func dotQ8_0Generic(w, xq []byte) float32 {
	var sumf float32
	for ib := 0; ib < len(w)/q8_0Bytes; ib++ {
		x := w[ib*q8_0Bytes : ib*q8_0Bytes+q8_0Bytes]
		y := xq[ib*q8_0Bytes : ib*q8_0Bytes+q8_0Bytes]
		s := 0
		for j, q := range x[2:34] {
			s += int(int8(q)) * int(int8(y[2+j]))
		}
		sumf += float32(s) * (getF16(x) * getF16(y))
	}
	return sumf
}
