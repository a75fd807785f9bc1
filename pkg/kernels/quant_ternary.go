package kernels

import "math"

// The ternary formats of BitNet b1.58 and TriLM models (ggml's TQ1_0 and
// TQ2_0): every weight of a 256-value block is -1, 0 or +1 times the block's
// f16 scale, the largest magnitude. Weights are stored as trits t = w+1 in
// {0, 1, 2}.
//
// TQ1_0 (54 bytes) packs five trits in a byte as a base-3 number scaled to
// 0..255 (byte = ⌈n·256/243⌉ for the number n < 243, so that trit k, most
// significant first, is the top of (byte·3^k mod 256)·3 / 256):
//
//	0    qs[48]  bytes 0..31: value 32k+i in trit k of byte i (k < 5), for
//	             values 0..159; bytes 32..47: value 160+16k+i in trit k of
//	             byte 32+i, for values 160..239
//	48   qh[4]   value 240+4k+i in trit k of byte i (k < 4; the fifth
//	             trit is 0)
//	52   d       f16
//
// TQ2_0 (66 bytes) stores a trit in two bits:
//
//	0    qs[64]  byte 32h+i holds, from bit 0, the trits of values
//	             128h+i, 128h+32+i, 128h+64+i, 128h+96+i
//	64   d       f16
//
// Both dot with Q8_K activations: the sum of t-1 times the activation is
// exact in integers, and one float multiply per block scales it.

const (
	tq1Bytes = 54
	tq2Bytes = 66
)

// ternary is x·id rounded to the nearest of -1, 0, 1, as a trit 0..2.
func ternary(x, id float32) int {
	return int(math.Round(float64(x*id))) + 1
}

// ternaryScale writes the f16 scale of block x (its largest magnitude) at
// b and returns its inverse (0 for an all-zero block).
func ternaryScale(x []float32, b []byte) float32 {
	var amax float32
	for _, v := range x[:QK_K] {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	putF16(b, amax)
	if amax == 0 {
		return 0
	}
	return 1 / amax
}

// packTrits5 is the byte of the base-3 number of trits (most significant
// first), scaled to 0..255 by ceiling division.
func packTrits5(n int) byte { return byte((n*256 + 242) / 243) }

// trit is trit k (0: most significant) of a byte packTrits5 made.
func trit(b byte, k int) int {
	q := b * [5]byte{1, 3, 9, 27, 81}[k]
	return int(uint16(q)*3>>8) - 1
}

func quantTQ1_0(x []float32, b []byte) {
	id := ternaryScale(x, b[52:])
	x = x[:QK_K]
	pos := 0
	for _, span := range [2]struct{ bytes, at int }{{32, 0}, {16, 32}} {
		for i := range span.bytes {
			n := 0
			for k := range 5 {
				n = 3*n + ternary(x[pos+k*span.bytes+i], id)
			}
			b[span.at+i] = packTrits5(n)
		}
		pos += 5 * span.bytes
	}
	for i := range 4 {
		n := 0
		for k := range 4 {
			n = 3*n + ternary(x[pos+4*k+i], id)
		}
		b[48+i] = packTrits5(3 * n)
	}
}

func dequantTQ1_0(b []byte, y []float32) {
	d := getF16(b[52:])
	y = y[:QK_K]
	for v := range QK_K {
		y[v] = float32(tq1Trit(b, v)) * d
	}
}

// tq1Trit is value v of a TQ1_0 block, -1, 0 or 1.
func tq1Trit(b []byte, v int) int {
	switch {
	case v < 160:
		return trit(b[v%32], v/32)
	case v < 240:
		return trit(b[32+(v-160)%16], (v-160)/16)
	}
	return trit(b[48+(v-240)%4], (v-240)/4)
}

func quantTQ2_0(x []float32, b []byte) {
	id := ternaryScale(x, b[64:])
	x = x[:QK_K]
	for h := range 2 {
		for i := range 32 {
			var q byte
			for k := range 4 {
				q |= byte(ternary(x[128*h+32*k+i], id)&3) << (2 * k)
			}
			b[32*h+i] = q
		}
	}
}

func dequantTQ2_0(b []byte, y []float32) {
	d := getF16(b[64:])
	y = y[:QK_K]
	for v := range QK_K {
		y[v] = float32(tq2Trit(b, v)) * d
	}
}

// tq2Trit is value v of a TQ2_0 block, -1, 0 or 1.
func tq2Trit(b []byte, v int) int {
	return int(b[32*(v/128)+v%32]>>(2*(v%128/32))&3) - 1
}

// dotTQ1_0Generic and dotTQ2_0Generic are ggml's reference dots: per
// block, the exact integer sum of trit·activation, times d·d_x.
func dotTQ1_0Generic(w, xq []byte) float32 { return dotTernary(w, xq, tq1Bytes, 52, tq1Trit) }

func dotTQ2_0Generic(w, xq []byte) float32 { return dotTernary(w, xq, tq2Bytes, 64, tq2Trit) }

func dotTernary(w, xq []byte, bb, dOff int, trit func(b []byte, v int) int) float32 {
	var sumf float32
	for ib := 0; ib < len(w)/bb; ib++ {
		x := w[ib*bb : (ib+1)*bb]
		yd, q8, _ := q8KBlock(xq[ib*q8KBytes : (ib+1)*q8KBytes])
		sum := 0
		for v := range QK_K {
			sum += trit(x, v) * int(int8(q8[v]))
		}
		sumf += float32(sum) * (getF16(x[dOff:]) * yd)
	}
	return sumf
}
