package kernels

import (
	"encoding/binary"
	"math"
)

// The reference twins of the k-quant dot kernels (genericKernels' dot
// entries): integer block dots against Q8_K activations (ggml's
// ggml_vec_dot_q*_K_q8_K_generic). Within a super-block every product and
// every group scale is applied in integers; the block is then scaled once in
// float32. Q3_K..Q6_K keep ggml's eight running float32 lanes (element i of
// the block goes to lane i%8) so their rounding follows llama.cpp's scalar
// build. The minimum of Q2_K/Q4_K/Q5_K is applied through the activation
// block's group sums: Σ(d·s·q - m)·a = d·s·Σq·a - m·Σa.

const q8KBytes = 292

// q8KBlock splits a Q8_K block into its scale, quants and group sums.
func q8KBlock(y []byte) (d float32, qs []byte, bsums []byte) {
	return math.Float32frombits(binary.LittleEndian.Uint32(y)), y[4:260], y[260:292]
}

func bsum(bsums []byte, g int) int { return int(int16(binary.LittleEndian.Uint16(bsums[2*g:]))) }

// laneDot adds scale·Σ q8[i]·a[i] over len(a) elements into the lanes.
func laneDot(aux *[8]int32, scale int32, q8 []byte, a []int8) {
	for i, v := range a {
		aux[i%8] += scale * int32(int8(q8[i])) * int32(v)
	}
}

// addLanes adds a block's integer lane sums, scaled by d, to the float lanes.
func addLanes(sums *[8]float32, d float32, aux *[8]int32) {
	for l := range sums {
		sums[l] += d * float32(aux[l])
	}
}

// sumLanes returns sumf plus the lanes, added in order.
func sumLanes(sumf float32, sums *[8]float32) float32 {
	for _, s := range sums {
		sumf += s
	}
	return sumf
}

// unpackQ45K sets a to the 256 quants (0..15) of the Q4_K block x or, with
// five, the Q5_K block x (0..31: the fifth bit of element 32g+l is bit g of
// qh[l], qh at +16, the nibbles at +48).
func unpackQ45K(x []byte, five bool, a *[QK_K]int8) {
	q, qh := x[16:144], x[16:48]
	if five {
		q = x[48:176]
	}
	for g := range 8 {
		qq := q[g/2*32 : g/2*32+32]
		shift := 4 * (g % 2)
		for l, v := range qq {
			qv := v >> shift & 0xf
			if five {
				qv |= (qh[l] >> g & 1) << 4
			}
			a[32*g+l] = int8(qv)
		}
	}
}

// unpackQ6K sets a to the 256 signed quants (-32..31) of the Q6_K block x.
func unpackQ6K(x []byte, a *[QK_K]int8) {
	ql, qh := x[0:128], x[128:192]
	for h := range 2 {
		for l := range 32 {
			hb := qh[32*h+l]
			lo, hi := ql[64*h+l], ql[64*h+l+32]
			a[128*h+l] = int8(lo&0xf|(hb&3)<<4) - 32
			a[128*h+l+32] = int8(hi&0xf|(hb>>2&3)<<4) - 32
			a[128*h+l+64] = int8(lo>>4|(hb>>4&3)<<4) - 32
			a[128*h+l+96] = int8(hi>>4|(hb>>6&3)<<4) - 32
		}
	}
}

func dotQ2KGeneric(w, xq []byte) float32 {
	var sumf float32
	for ib := 0; ib < len(w)/84; ib++ {
		x := w[ib*84 : ib*84+84]
		yd, q8, bsums := q8KBlock(xq[ib*q8KBytes : ib*q8KBytes+q8KBytes])
		sc, q2 := x[0:16], x[16:80]
		summs := 0
		for g := range 16 {
			summs += bsum(bsums, g) * int(sc[g]>>4)
		}
		dall := yd * getF16(x[80:])
		dmin := yd * getF16(x[82:])
		isum := 0
		for g := range 16 { // group g: elements 16g..16g+15
			e0 := 16 * g
			qq := q2[e0/128*32+e0%32:]
			shift := 2 * (e0 % 128 / 32)
			s := 0
			for l := range 16 {
				s += int(int8(q8[e0+l])) * int(qq[l]>>shift&3)
			}
			isum += int(sc[g]&0xf) * s
		}
		sumf += dall*float32(isum) - dmin*float32(summs)
	}
	return sumf
}

func dotQ3KGeneric(w, xq []byte) float32 {
	var sums [8]float32
	var a [QK_K]int8
	for ib := 0; ib < len(w)/110; ib++ {
		x := w[ib*110 : ib*110+110]
		yd, q8, _ := q8KBlock(xq[ib*q8KBytes : ib*q8KBytes+q8KBytes])
		hmask, q3, sc := x[0:32], x[32:96], x[96:108]
		for e := range QK_K {
			l := e % 32
			v := int8(q3[e/128*32+l] >> (2 * (e % 128 / 32)) & 3)
			if hmask[l]>>(e/32)&1 == 0 {
				v -= 4
			}
			a[e] = v
		}
		var aux [8]int32
		for g := range 16 {
			laneDot(&aux, int32(q3Scale(sc, g)), q8[16*g:16*g+16], a[16*g:16*g+16])
		}
		addLanes(&sums, getF16(x[108:])*yd, &aux)
	}
	return sumLanes(0, &sums)
}

// dotQ45KGeneric is the Q4_K dot, or with five the Q5_K dot (fifth bits in qh).
func dotQ45KGeneric(w, xq []byte, blockBytes int, five bool) float32 {
	var sums [8]float32
	var a [QK_K]int8
	var sumf float32
	for ib := 0; ib < len(w)/blockBytes; ib++ {
		x := w[ib*blockBytes : (ib+1)*blockBytes]
		yd, q8, bsums := q8KBlock(xq[ib*q8KBytes : ib*q8KBytes+q8KBytes])
		sc := x[4:16]
		unpackQ45K(x, five, &a)
		var aux [8]int32
		sumi := 0
		for g := range 8 {
			s, m := scaleMinK4(g, sc)
			sumi += (bsum(bsums, 2*g) + bsum(bsums, 2*g+1)) * int(m)
			laneDot(&aux, int32(s), q8[32*g:32*g+32], a[32*g:32*g+32])
		}
		addLanes(&sums, getF16(x[0:])*yd, &aux)
		dmin := getF16(x[2:]) * yd
		sumf -= dmin * float32(sumi)
	}
	return sumLanes(sumf, &sums)
}

func dotQ4KGeneric(w, xq []byte) float32 { return dotQ45KGeneric(w, xq, 144, false) }

func dotQ5KGeneric(w, xq []byte) float32 { return dotQ45KGeneric(w, xq, 176, true) }

func dotQ6KGeneric(w, xq []byte) float32 {
	var sums [8]float32
	var a [QK_K]int8
	for ib := 0; ib < len(w)/210; ib++ {
		x := w[ib*210 : ib*210+210]
		yd, q8, _ := q8KBlock(xq[ib*q8KBytes : ib*q8KBytes+q8KBytes])
		unpackQ6K(x, &a)
		sc := x[192:208]
		var aux [8]int32
		for g := range 16 {
			laneDot(&aux, int32(int8(sc[g])), q8[16*g:16*g+16], a[16*g:16*g+16])
		}
		addLanes(&sums, getF16(x[208:])*yd, &aux)
	}
	return sumLanes(0, &sums)
}
