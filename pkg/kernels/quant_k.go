package kernels

import (
	"encoding/binary"
	"math"
)

// The k-quant super-block formats (256 elements, ggml-common.h), little-endian:
//
//	Q2_K  scales[16] | qs[64] | d f16 | dmin f16                       84 B
//	      16 groups of 16; scales[g] = scale(4b) | min(4b)<<4
//	      x = d·scale·q - dmin·min, q 2 bits
//	Q3_K  hmask[32] | qs[64] | scales[12] | d f16                       110 B
//	      16 groups of 16, 6-bit signed scales (offset 32)
//	      x = d·(scale-32)·(q-4), q = 2 low bits | high bit from hmask
//	Q4_K  d f16 | dmin f16 | scales[12] | qs[128]                       144 B
//	      8 groups of 32, 6-bit scale and 6-bit min each
//	      x = d·scale·q - dmin·min, q 4 bits
//	Q5_K  d f16 | dmin f16 | scales[12] | qh[32] | qs[128]              176 B
//	      as Q4_K with a fifth bit per quant in qh
//	Q6_K  ql[128] | qh[64] | scales[16] int8 | d f16                    210 B
//	      16 groups of 16; x = d·scale·(q-32), q = 4 low | 2 high bits
//	Q8_K  d f32 | qs[256] int8 | bsums[16] int16                        292 B
//	      activations only; bsums are the sums of 16-quant groups
//
// The 2-bit planes (Q2_K, Q3_K, Q6_K's high bits) hold, in each 128-element
// half, element 32·p+l in bits 2p..2p+1 of byte l. The nibble formats (Q4_K,
// Q5_K, Q6_K's low bits) hold, per 64 elements, element l in the low and
// element l+32 in the high nibble of byte l. Q3_K's hmask bit p of byte l and
// Q5_K's qh bit p of byte l belong to element 32·p+l.

// q3Scale unpacks Q3_K group g's 6-bit scale, minus its offset: the low four
// bits are nibbles of bytes 0..7, the high two bits pairs of bytes 8..11.
func q3Scale(sc []byte, g int) int {
	var lo byte
	if g < 8 {
		lo = sc[g] & 0xf
	} else {
		lo = sc[g-8] >> 4
	}
	hi := sc[8+g%4] >> (2 * (g / 4)) & 3
	return int(lo|hi<<4) - 32
}

// scaleMinK4 unpacks Q4_K/Q5_K group g's 6-bit scale and min (ggml's
// get_scale_min_k4): groups 0..3 sit in the low six bits of bytes 0..7, groups
// 4..7 keep four bits in bytes 8..11 and their top two bits in the spare top
// bits of bytes 0..7.
func scaleMinK4(g int, sc []byte) (scale, m uint8) {
	if g < 4 {
		return sc[g] & 63, sc[g+4] & 63
	}
	return sc[g+4]&0xf | (sc[g-4]>>6)<<4, sc[g+4]>>4 | (sc[g]>>6)<<4
}

// pack2Bit stores 256 2-bit quants in the 64-byte plane layout above.
func pack2Bit(L []uint8, qs []byte) {
	for j := 0; j < QK_K; j += 128 {
		for l := range 32 {
			qs[j/4+l] = L[j+l] | L[j+l+32]<<2 | L[j+l+64]<<4 | L[j+l+96]<<6
		}
	}
}

// ---- Q2_K

func dequantQ2K(b []byte, y []float32) {
	sc, q := b[0:16], b[16:80]
	d, dmin := getF16(b[80:]), getF16(b[82:])
	y = y[:QK_K]
	for e := range QK_K {
		g := e / 16
		dl := d * float32(sc[g]&0xf)
		ml := dmin * float32(sc[g]>>4)
		qv := q[e/128*32+e%32] >> (2 * (e % 128 / 32)) & 3
		y[e] = dl*float32(qv) - ml
	}
}

func quantQ2K(x []float32, b []byte) {
	const q4scale = 15
	var (
		L       [QK_K]uint8
		laux    [16]uint8
		weights [16]float32
		scales  [16]float32
		mins    [16]float32
	)
	x = x[:QK_K]
	var maxScale, maxMin float32
	for g := range 16 {
		xs := x[16*g : 16*g+16]
		for l, v := range xs {
			weights[l] = abs32(v)
		}
		scales[g], mins[g] = makeQKX2Quants(3, xs, weights[:], L[16*g:16*g+16], laux[:], -0.5, 0.1, 15, true)
		if scales[g] > maxScale {
			maxScale = scales[g]
		}
		if mins[g] > maxMin {
			maxMin = mins[g]
		}
	}
	sc := b[0:16]
	clear(sc)
	putF16(b[80:], 0)
	putF16(b[82:], 0)
	if maxScale > 0 {
		iscale := q4scale / maxScale
		for g := range 16 {
			sc[g] = uint8(nearestInt(iscale * scales[g]))
		}
		putF16(b[80:], maxScale/q4scale)
	}
	if maxMin > 0 {
		iscale := q4scale / maxMin
		for g := range 16 {
			sc[g] |= uint8(nearestInt(iscale*mins[g]) << 4)
		}
		putF16(b[82:], maxMin/q4scale)
	}
	// Requantize against the scales as stored, rounding included.
	d, dmin := getF16(b[80:]), getF16(b[82:])
	for g := range 16 {
		dg := d * float32(sc[g]&0xf)
		if dg == 0 {
			continue
		}
		dm := dmin * float32(sc[g]>>4)
		for i := 16 * g; i < 16*g+16; i++ {
			L[i] = uint8(clampInt(nearestInt((x[i]+dm)/dg), 0, 3))
		}
	}
	pack2Bit(L[:], b[16:80])
}

// ---- Q3_K

func dequantQ3K(b []byte, y []float32) {
	hmask, q, sc := b[0:32], b[32:96], b[96:108]
	d := getF16(b[108:])
	y = y[:QK_K]
	for e := range QK_K {
		dl := d * float32(q3Scale(sc, e/16))
		l := e % 32
		qv := int(q[e/128*32+l] >> (2 * (e % 128 / 32)) & 3)
		if hmask[l]>>(e/32)&1 == 0 {
			qv -= 4
		}
		y[e] = dl * float32(qv)
	}
}

// groupFits fits each group of 16 elements of x on its own, with
// makeQ3Quants(4, …) for Q3_K or makeQXQuants(32, …) for Q6_K, the group's
// quants in L, and returns the fits and the one of largest magnitude.
func groupFits(x []float32, L *[QK_K]int8, q3 bool) (scales [16]float32, maxScale, maxAbs float32) {
	for g := range 16 {
		xg, lg := x[16*g:16*g+16], L[16*g:16*g+16]
		if q3 {
			scales[g] = makeQ3Quants(4, xg, lg)
		} else {
			scales[g] = makeQXQuants(32, xg, lg)
		}
		if s := abs32(scales[g]); s > maxAbs {
			maxAbs, maxScale = s, scales[g]
		}
	}
	return scales, maxScale, maxAbs
}

// requant16 redoes the quants of each group g of 16 elements of x against
// the stored scale d·s[g]: round(x/(d·s[g])) clamped to [-half, half) and
// offset by half. Groups whose scale is 0 keep the first pass's quants.
func requant16(x []float32, L *[QK_K]int8, d float32, s *[16]int, half int) {
	for g := range 16 {
		dg := d * float32(s[g])
		if dg == 0 {
			continue
		}
		for i := 16 * g; i < 16*g+16; i++ {
			L[i] = int8(clampInt(nearestInt(x[i]/dg), -half, half-1) + half)
		}
	}
}

func quantQ3K(x []float32, b []byte) {
	var L [QK_K]int8
	x = x[:QK_K]
	scales, maxScale, _ := groupFits(x, &L, true)
	hmask, qs, sc := b[0:32], b[32:96], b[96:108]
	clear(sc)
	if maxScale != 0 {
		iscale := -32 / maxScale
		for g := range 16 {
			l8 := int8(nearestInt(iscale * scales[g])) // truncated like ggml's int8_t
			l := uint8(max(-32, min(31, l8)) + 32)
			if g < 8 {
				sc[g] = l & 0xf
			} else {
				sc[g-8] |= (l & 0xf) << 4
			}
			sc[8+g%4] |= (l >> 4) << (2 * (g / 4))
		}
		putF16(b[108:], 1/iscale)
	} else {
		putF16(b[108:], 0)
	}
	var s [16]int
	for g := range s {
		s[g] = q3Scale(sc, g)
	}
	requant16(x, &L, getF16(b[108:]), &s, 4)
	clear(hmask)
	var low [QK_K]uint8
	for e, l := range L {
		if l > 3 {
			hmask[e%32] |= 1 << (e / 32)
			l -= 4
		}
		low[e] = uint8(l)
	}
	pack2Bit(low[:], qs)
}

// ---- Q4_K and Q5_K share their scale layout and search.

// quantKScales runs ggml's Q4_K/Q5_K search: a weighted min/scale fit per
// group of 32, the fits quantized to 6 bits against the largest, then every
// quant redone against the stored values. It writes d, dmin and the 12 scale
// bytes of b and leaves the quants (0..nmax) in L.
func quantKScales(x []float32, b []byte, L *[QK_K]uint8, nmax int, rmin float32, nstep int) {
	var (
		laux    [32]uint8
		weights [32]float32
		scales  [8]float32
		mins    [8]float32
	)
	var maxScale, maxMin float32
	for g := range 8 {
		xs := x[32*g : 32*g+32]
		var sumX2 float32
		for _, v := range xs {
			sumX2 += v * v
		}
		av := sqrt32(sumX2 / 32)
		for l, v := range xs {
			weights[l] = av + abs32(v)
		}
		scales[g], mins[g] = makeQKX2Quants(nmax, xs, weights[:], L[32*g:32*g+32], laux[:], rmin, 0.1, nstep, false)
		if scales[g] > maxScale {
			maxScale = scales[g]
		}
		if mins[g] > maxMin {
			maxMin = mins[g]
		}
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	sc := b[4:16]
	for g := range 8 {
		ls := min(63, uint8(nearestInt(invScale*scales[g])))
		lm := min(63, uint8(nearestInt(invMin*mins[g])))
		if g < 4 {
			sc[g] = ls
			sc[g+4] = lm
		} else {
			sc[g+4] = ls&0xf | (lm&0xf)<<4
			sc[g-4] |= (ls >> 4) << 6
			sc[g] |= (lm >> 4) << 6
		}
	}
	putF16(b[0:], maxScale/63)
	putF16(b[2:], maxMin/63)
	d, dmin := getF16(b[0:]), getF16(b[2:])
	for g := range 8 {
		s, m := scaleMinK4(g, sc)
		dg := d * float32(s)
		if dg == 0 {
			continue
		}
		dm := dmin * float32(m)
		for i := 32 * g; i < 32*g+32; i++ {
			L[i] = uint8(clampInt(nearestInt((x[i]+dm)/dg), 0, nmax))
		}
	}
}

func dequantQ4K(b []byte, y []float32) { dequantQ45K(b, y, false) }

func quantQ4K(x []float32, b []byte) {
	var L [QK_K]uint8
	quantKScales(x[:QK_K], b, &L, 15, -1, 20)
	q := b[16:144]
	for j := 0; j < QK_K; j += 64 {
		for l := range 32 {
			q[j/2+l] = L[j+l] | L[j+l+32]<<4
		}
	}
}

func dequantQ5K(b []byte, y []float32) { dequantQ45K(b, y, true) }

// dequantQ45K decodes a Q4_K block or, with five, a Q5_K block (the fifth
// bits in qh at +16, the nibbles at +48).
func dequantQ45K(b []byte, y []float32, five bool) {
	var a [QK_K]int8
	unpackQ45K(b, five, &a)
	d, dmin := getF16(b[0:]), getF16(b[2:])
	y = y[:QK_K]
	for g := range 8 {
		s, m := scaleMinK4(g, b[4:16])
		dl, ml := d*float32(s), dmin*float32(m)
		for l, q := range a[32*g : 32*g+32] {
			y[32*g+l] = dl*float32(q) - ml
		}
	}
}

func quantQ5K(x []float32, b []byte) {
	var L [QK_K]uint8
	quantKScales(x[:QK_K], b, &L, 31, -0.5, 15)
	qh, q := b[16:48], b[48:176]
	clear(qh)
	for j := 0; j < QK_K; j += 64 {
		g := j / 32
		for l := range 32 {
			lo, hi := L[j+l], L[j+l+32]
			qh[l] |= (lo>>4)<<g | (hi>>4)<<(g+1)
			q[j/2+l] = lo&0xf | (hi&0xf)<<4
		}
	}
}

// ---- Q6_K

func dequantQ6K(b []byte, y []float32) {
	ql, qh, sc := b[0:128], b[128:192], b[192:208]
	d := getF16(b[208:])
	y = y[:QK_K]
	for e := range QK_K {
		h, r := e/128, e%128 // half and position inside it
		l, p := r%32, r/32   // byte and plane
		lo := ql[64*h+32*(p%2)+l] >> (4 * (p / 2)) & 0xf
		hi := qh[32*h+l] >> (2 * p) & 3
		qv := int(lo|hi<<4) - 32
		y[e] = d * float32(int8(sc[e/16])) * float32(qv)
	}
}

func quantQ6K(x []float32, b []byte) {
	var L [QK_K]int8
	x = x[:QK_K]
	scales, maxScale, maxAbsScale := groupFits(x, &L, false)
	if maxAbsScale < groupMaxEps {
		clear(b[:210])
		return
	}
	ql, qh, sc := b[0:128], b[128:192], b[192:208]
	iscale := -128 / maxScale
	putF16(b[208:], 1/iscale)
	for g := range 16 {
		sc[g] = uint8(int8(min(127, nearestInt(iscale*scales[g]))))
	}
	var s [16]int
	for g := range s {
		s[g] = int(int8(sc[g]))
	}
	requant16(x, &L, getF16(b[208:]), &s, 32)
	for h := range 2 {
		Lh := L[128*h : 128*h+128]
		for l := range 32 {
			q1, q2, q3, q4 := uint8(Lh[l]), uint8(Lh[l+32]), uint8(Lh[l+64]), uint8(Lh[l+96])
			ql[64*h+l] = q1&0xf | (q3&0xf)<<4
			ql[64*h+l+32] = q2&0xf | (q4&0xf)<<4
			qh[32*h+l] = q1>>4 | (q2>>4)<<2 | (q3>>4)<<4 | (q4>>4)<<6
		}
	}
}

// ---- Q8_K (activations for the k-quant dots)

func dequantQ8K(b []byte, y []float32) {
	d := math.Float32frombits(binary.LittleEndian.Uint32(b))
	for j, q := range b[4:260] {
		y[j] = d * float32(int8(q))
	}
}

// quantQ8K scales by -127/x where x is the element of largest magnitude, so
// that element becomes ∓127 exactly and no quant reaches -128 (ggml needs
// that for its IQ dots). The group sums feed the k-quant dots' min terms.
func quantQ8K(x []float32, b []byte) {
	amax, m := maxAbs(x[:QK_K])
	qs := b[4:260]
	if amax == 0 {
		clear(b[:292])
		return
	}
	iscale := -127 / m
	for j, v := range x[:QK_K] {
		qs[j] = uint8(int8(min(127, nearestInt(iscale*v))))
	}
	for g := range 16 {
		sum := 0
		for _, q := range qs[16*g : 16*g+16] {
			sum += int(int8(q))
		}
		binary.LittleEndian.PutUint16(b[260+2*g:], uint16(int16(sum)))
	}
	binary.LittleEndian.PutUint32(b, math.Float32bits(1/iscale))
}

// quantQ8KGeneric is the reference of the quantQ8K kernels, Quantize to
// Q8_K: quantQ8K block by block.
func quantQ8KGeneric(src []float32, dst []byte) {
	for i := range len(src) / QK_K {
		quantQ8K(src[i*QK_K:(i+1)*QK_K], dst[i*q8KBytes:(i+1)*q8KBytes])
	}
}
