package kernels

import (
	"encoding/binary"
	"math"
)

// The "legacy" 32-element block formats (ggml-common.h), all little-endian:
//
//	Q4_0  d f16 | qs[16]                    x = (q-8)·d,   q 4 bits
//	Q4_1  d f16 | m f16 | qs[16]            x = q·d + m,   q 4 bits
//	Q5_0  d f16 | qh u32 | qs[16]           x = (q-16)·d,  q 5 bits
//	Q5_1  d f16 | m f16 | qh u32 | qs[16]   x = q·d + m,   q 5 bits
//	Q8_0  d f16 | qs[32] int8               x = q·d
//	Q8_1  d f16 | s f16 | qs[32] int8       x = q·d, s = d·Σq (activations only)
//
// Nibble j of the 4/5-bit formats holds element j in its low half and element
// j+16 in its high half; bit j of qh is the fifth bit of element j. The
// quantizers follow quantize_row_*_ref, including their truncating casts.

const qk = 32 // elements per legacy block

// maxAbs returns the element of largest magnitude with its sign (the first
// one on ties), which the symmetric formats scale by.
func maxAbs(x []float32) (amax, signed float32) {
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, signed = a, v
		}
	}
	return amax, signed
}

func minMax(x []float32) (lo, hi float32) {
	lo, hi = math.MaxFloat32, -math.MaxFloat32
	for _, v := range x {
		lo = min(lo, v)
		hi = max(hi, v)
	}
	return lo, hi
}

func inverse(d float32) float32 {
	if d == 0 {
		return 0
	}
	return 1 / d
}

func quantQ4_0(x []float32, b []byte) {
	_, m := maxAbs(x[:qk])
	d := m / -8 // the extreme maps to -8, the one code with no positive twin
	id := inverse(d)
	putF16(b, d)
	qs := b[2:18]
	for j := range 16 {
		q0 := min(15, int8(x[j]*id+8.5))
		q1 := min(15, int8(x[j+16]*id+8.5))
		qs[j] = uint8(q0) | uint8(q1)<<4
	}
}

func dequantQ4_0(b []byte, y []float32) {
	d := getF16(b)
	y = y[:qk]
	for j := range 16 {
		v0, v1 := nibbles(b[2:18], 0, j)
		y[j] = float32(v0-8) * d
		y[j+16] = float32(v1-8) * d
	}
}

// minScale writes the scale d = (max-min)/levels and the minimum of a
// Q4_1/Q5_1 block of x to b and returns the minimum and 1/d.
func minScale(x []float32, b []byte, levels float32) (lo, id float32) {
	lo, hi := minMax(x[:qk])
	d := (hi - lo) / levels
	putF16(b, d)
	putF16(b[2:], lo)
	return lo, inverse(d)
}

func quantQ4_1(x []float32, b []byte) {
	lo, id := minScale(x, b, 15)
	qs := b[4:20]
	for j := range 16 {
		q0 := min(15, int8((x[j]-lo)*id+0.5))
		q1 := min(15, int8((x[j+16]-lo)*id+0.5))
		qs[j] = uint8(q0) | uint8(q1)<<4
	}
}

func dequantQ4_1(b []byte, y []float32) {
	d, m := getF16(b), getF16(b[2:])
	y = y[:qk]
	for j := range 16 {
		v0, v1 := nibbles(b[4:20], 0, j)
		y[j] = float32(v0)*d + m
		y[j+16] = float32(v1)*d + m
	}
}

// nibbles returns quants j and j+16 of a 32-element block: the low and the
// high nibble of qs[j], with bits j and j+16 of qh as their fifth bits (qh
// is 0 for the 4-bit formats).
func nibbles(qs []byte, qh uint32, j int) (v0, v1 int) {
	q := qs[j]
	return int(q&0xf | uint8(qh>>j&1)<<4), int(q>>4 | uint8(qh>>(j+16)&1)<<4)
}

// put5 stores the 5-bit quants q0 (element j) and q1 (element j+16) of a
// Q5_0/Q5_1 block: their low nibbles in qs[j], their fifth bits in qh.
func put5(qs []byte, qh *uint32, j int, q0, q1 uint8) {
	qs[j] = q0&0xf | (q1&0xf)<<4
	*qh |= uint32(q0>>4&1)<<j | uint32(q1>>4&1)<<(j+16)
}

func quantQ5_0(x []float32, b []byte) {
	_, m := maxAbs(x[:qk])
	d := m / -16
	id := inverse(d)
	putF16(b, d)
	var qh uint32
	qs := b[6:22]
	for j := range 16 {
		q0 := uint8(min(31, int8(x[j]*id+16.5)))
		q1 := uint8(min(31, int8(x[j+16]*id+16.5)))
		put5(qs, &qh, j, q0, q1)
	}
	binary.LittleEndian.PutUint32(b[2:], qh)
}

func dequantQ5_0(b []byte, y []float32) {
	d := getF16(b)
	qh := binary.LittleEndian.Uint32(b[2:])
	y = y[:qk]
	for j := range 16 {
		v0, v1 := nibbles(b[6:22], qh, j)
		y[j] = float32(v0-16) * d
		y[j+16] = float32(v1-16) * d
	}
}

func quantQ5_1(x []float32, b []byte) {
	lo, id := minScale(x, b, 31)
	var qh uint32
	qs := b[8:24]
	for j := range 16 {
		// No clamp, as in ggml: the rounding cannot exceed 31 by construction.
		q0 := uint8(int32((x[j]-lo)*id + 0.5))
		q1 := uint8(int32((x[j+16]-lo)*id + 0.5))
		put5(qs, &qh, j, q0, q1)
	}
	binary.LittleEndian.PutUint32(b[4:], qh)
}

func dequantQ5_1(b []byte, y []float32) {
	d, m := getF16(b), getF16(b[2:])
	qh := binary.LittleEndian.Uint32(b[4:])
	y = y[:qk]
	for j := range 16 {
		v0, v1 := nibbles(b[8:24], qh, j)
		y[j] = float32(v0)*d + m
		y[j+16] = float32(v1)*d + m
	}
}

// quantQ8_0 scales by amax/127 and rounds half away from zero (C roundf).
func quantQ8_0(x []float32, b []byte) {
	d, _ := quant8(x[:qk], b[2:34])
	putF16(b, d)
}

// quant8 writes x as int8 quants of scale d = amax/127, rounded half away
// from zero (C roundf), to qs, and returns d and the sum of the quants.
func quant8(x []float32, qs []byte) (d float32, sum int) {
	amax, _ := maxAbs(x)
	d = amax / 127
	id := inverse(d)
	for j, v := range x {
		q := int8(roundAway(v * id))
		qs[j] = uint8(q)
		sum += int(q)
	}
	return d, sum
}

func dequantQ8_0(b []byte, y []float32) {
	d := getF16(b)
	for j, q := range b[2:34] {
		y[j] = float32(int8(q)) * d
	}
}

// quantQ8_1 is Q8_0 plus s = d·Σq, which lets the Q4_1/Q5_1 dots fold the
// weight block's minimum in with one multiply.
func quantQ8_1(x []float32, b []byte) {
	d, sum := quant8(x[:qk], b[4:36])
	putF16(b, d)
	putF16(b[2:], float32(sum)*d)
}

func dequantQ8_1(b []byte, y []float32) {
	d := getF16(b)
	for j, q := range b[4:36] {
		y[j] = float32(int8(q)) * d
	}
}
