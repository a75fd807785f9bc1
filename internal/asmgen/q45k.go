package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The Q4_K kernels and the Q5_K ones, which are Q4_K with a fifth bit per
// quant (qh at +16, nibbles at +48, 176-byte blocks): one row, rows and
// cols.

// q4kScales unpacks the 12 packed scale bytes at w+4 of a Q4_K/Q5_K block
// (ggml's get_scale_min_k4) into an xmm, scales 0..7 in bytes 0..7 and mins
// 0..7 in bytes 8..15, and widens them to int16 in a ymm (scales low, mins
// high). With b the bytes at w+4:
//
//	sc0..3 = b0..3 & 63          sc4..7 = b8..11 & 15 | b0..3>>6<<4
//	mn0..3 = b4..7 & 63          mn4..7 = b8..11>>4   | b4..7>>6<<4
//
// computed as (P >> [0,0,0,4]) & [63,15,63,15] | (Q>>2) & 0x30 per dword
// with P = b[0..3, 8..11, 4..7, 8..11] and Q = [0, b0..3, 0, b4..7].
// evex selects EVEX-encodable instructions, for kernels whose registers may
// be X16..X31.
func q4kScales(w Register, evex bool) VecVirtual {
	return q4kScalesAt(Mem{Base: w, Disp: 4}, evex)
}

// q4kScalesAt is q4kScales with the address of the 12 scale bytes.
func q4kScalesAt(m Mem, evex bool) VecVirtual {
	b, p, q := XMM(), XMM(), XMM()
	and := func(a, b, c Op) { VPAND(a, b, c) }
	or := func(a, b, c Op) { VPOR(a, b, c) }
	if evex {
		and = func(a, b, c Op) { VPANDD(a, b, c) }
		or = func(a, b, c Op) { VPORD(a, b, c) }
		VMOVDQU64(m, b) // 12 scale bytes and 4 quant bytes
	} else {
		VMOVDQU(m, b)
	}
	VPSHUFB(scShufP, b, p)
	VPSHUFB(scShufQ, b, q)
	VPSRLVD(scShift, p, p)
	and(scMask, p, p)
	VPSRLW(U8(2), q, q)
	and(m30Z, q, q)
	or(q, p, p)
	y := YMM()
	VPMOVZXBW(p, y)
	return y
}

// q4kMins computes, into accm (4 float32 lanes), accm -= dmin·m where
// m[k] = mins[2k]·(b[4k]+b[4k+1]) + mins[2k+1]·(b[4k+2]+b[4k+3]) from the
// Q8_K block's bsums (at x+260).
func q4kMins(mins, dmin VecVirtual, x Register, accm Op) {
	q := XMM()
	VMOVDQU(Mem{Base: x, Disp: 260}, q)
	VPHADDW(Mem{Base: x, Disp: 276}, q, q)
	VPMADDWD(q, mins, q)
	VCVTDQ2PS(q, q)
	VFNMADD231PS(dmin, q, accm)
}

// blockScales returns ymm d (broadcast) and xmm dmin (broadcast) for a
// k-quant block: d = yd·f16(w+0), dmin = yd·f16(w+2).
func blockScales(w, x Register) (d, dmin VecVirtual) {
	t := XMM()
	VMOVD(Mem{Base: w}, t)
	VCVTPH2PS(t, t)
	yd := XMM()
	VBROADCASTSS(Mem{Base: x}, yd)
	VMULPS(yd, t, t)
	d = YMM()
	VBROADCASTSS(t, d)
	dmin = XMM()
	VSHUFPS(U8(0x55), t, t, dmin)
	return d, dmin
}

// q45kGeometry returns the kernel names' part for Q4_K or, with five, Q5_K,
// the offset of the nibbles and the block size (qh, the fifth bits, at +16).
func q45kGeometry(five bool) (typ string, qs, bb int) {
	if five {
		return "Q5K", 48, 176
	}
	return "Q4K", 16, 144
}

// dtypeName is the ggml name of the type of a kernel name's part ("Q4K").
func dtypeName(typ string) string { return typ[:2] + "_K" }

// q45kRow is the frame of the one-row Q4_K/Q5_K kernels: the float
// accumulators stay in registers (acc: 8 lanes, accm: 4 min lanes, stored
// to acc[0:8] and acc[8:12] at the end). setup loads the tier's constants;
// per block, split takes the unpacked scales (q4kScales) apart into the
// mins and the sub-block scales as block wants them, and block returns the
// block's 8 int32 lane sums, which one FMA scales by d into acc.
func q45kRow(name, doc string, five, evex bool, setup func(), split func(ms VecVirtual) (mins, sc VecVirtual), block func(w, x Register, sc VecVirtual) Register) {
	typ, _, bb := q45kGeometry(five)
	kernel(name, "func(w, x *byte, nb int, acc *[12]float32)", doc)
	defer wrapDot(name, dtypeName(typ), bb, "q8KBytes", true, false)
	w, x, nb := Load(Param("w"), GP64()), Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	acc, accm := YMM(), XMM()
	VXORPS(acc, acc, acc)
	VXORPS(accm, accm, accm)
	setup()
	whileNonZero(name, nb, func() {
		prefetch(w, bb)
		mins, sc := split(q4kScales(w, evex))
		d, dmin := blockScales(w, x)
		q4kMins(mins, dmin, x, accm)
		s := block(w, x, sc)
		VCVTDQ2PS(s, s)
		VFMADD231PS(d, s, acc)
		nextBlock(nb, w, bb, x)
	})
	p := Load(Param("acc"), GP64())
	VMOVUPS(acc, Mem{Base: p})
	VMOVUPS(accm, Mem{Base: p, Disp: 32})
	VZEROUPPER()
	RET()
}

// q45kAVX2 is the Q4_K kernel or, with five, the Q5_K one.
func q45kAVX2(five bool) {
	typ, qs, _ := q45kGeometry(five)
	name := "dot" + typ + "AVX2Asm"
	var m4, m16, qh VecVirtual
	setup := func() {
		m4 = YMM()
		VMOVDQU(m4Z, m4)
		if five {
			m16, qh = YMM(), YMM()
			VMOVDQU(m16Z, m16)
		}
	}
	split := func(ms VecVirtual) (mins, sc VecVirtual) {
		mins = XMM()
		VEXTRACTI128(U8(1), ms, mins)
		sc = YMM()
		VPERMQ(U8(0x44), ms, sc)
		return mins, sc
	}
	block := func(w, x Register, sc VecVirtual) Register {
		if five {
			VMOVDQU(Mem{Base: w, Disp: 16}, qh)
		}
		sumi := YMM()
		VPXOR(sumi, sumi, sumi)
		for j := range 4 {
			lo, hi, sl, sh := YMM(), YMM(), YMM(), YMM()
			VMOVDQU(Mem{Base: w, Disp: qs + 32*j}, hi)
			VPAND(m4, hi, lo)
			VPSRLW(U8(4), hi, hi)
			VPAND(m4, hi, hi)
			if five {
				fifthBit(qh, 2*j, m16, lo)
				fifthBit(qh, 2*j+1, m16, hi)
			}
			VPSHUFB(shufK4[2*j], sc, sl)
			VPSHUFB(shufK4[2*j+1], sc, sh)
			VPMADDUBSW(Mem{Base: x, Disp: 4 + 64*j}, lo, lo)
			VPMADDWD(sl, lo, lo)
			VPMADDUBSW(Mem{Base: x, Disp: 4 + 64*j + 32}, hi, hi)
			VPMADDWD(sh, hi, hi)
			VPADDD(lo, sumi, sumi)
			VPADDD(hi, sumi, sumi)
		}
		return sumi
	}
	q45kRow(name, fmt.Sprintf("%s accumulates nb %s × Q8_K blocks into acc (8 lanes, 4 min lanes).", name, dtypeName(typ)), five, false, setup, split, block)
}

// fifthBit ORs bit k of each qh byte, moved to bit 4, into q.
func fifthBit(qh VecVirtual, k int, m16, q VecVirtual) {
	t := YMM()
	switch {
	case k < 4:
		VPSLLW(U8(4-k), qh, t)
	case k > 4:
		VPSRLW(U8(k-4), qh, t)
	default:
		VMOVDQA(qh, t)
	}
	VPAND(m16, t, t)
	VPOR(t, q, q)
}

// q45k512 holds the constants of the avx512vnni Q4_K/Q5_K kernels: the nibble
// mask, k1 selecting the top 256 bits and, for Q5_K, the fifth bit's value
// (m16) and the register of the block's qh.
type q45k512 struct {
	five        bool
	qs          int
	m4, m16, qh VecVirtual
	k1          OpmaskVirtual
}

func loadQ45K512(five bool) *q45k512 {
	_, qs, _ := q45kGeometry(five)
	c := &q45k512{five: five, qs: qs, m4: ZMM()}
	VMOVDQU64(m4Z, c.m4)
	c.k1 = K()
	km := GP32()
	MOVL(U32(0xffff0000), km)
	KMOVD(km, c.k1)
	if five {
		c.m16, c.qh = ZMM(), ZMM()
		VMOVDQU64(m16Z, c.m16)
	}
	return c
}

// quants sets q to the 64 quants of sub-blocks 2j (low 256 bits) and 2j+1
// (high) of the block at w, and s to their scales (sc as VSHUFI32X4 made
// it) in int16 pairs.
func (c *q45k512) quants(w Register, j int, sc, q, s VecVirtual) {
	VBROADCASTI64X4(Mem{Base: w, Disp: c.qs + 32*j}, q)
	VPSRLW(U8(4), q, c.k1, q) // high nibbles (group 2j+1) in the top 256 bits
	VPANDD(c.m4, q, q)
	if c.five {
		// bit 2j of qh for the low half, 2j+1 for the high half → 16
		k2 := K()
		VPTESTMB(bitSelZ[j], c.qh, k2)
		VPADDB(c.m16, q, k2, q)
	}
	VPSHUFB(shufZ[j], sc, s)
}

func q45kAVX512(five bool) {
	typ, _, _ := q45kGeometry(five)
	name := "dot" + typ + "AVX512Asm"
	var c *q45k512
	setup := func() { c = loadQ45K512(five) }
	split := func(ms VecVirtual) (mins, sc VecVirtual) {
		mins = XMM()
		VEXTRACTI32X4(U8(1), ms, mins)
		sc = ZMM()
		VSHUFI32X4(U8(0), ms.AsZ(), ms.AsZ(), sc)
		return mins, sc
	}
	block := func(w, x Register, sc VecVirtual) Register {
		if five {
			VBROADCASTI64X4(Mem{Base: w, Disp: 16}, c.qh)
		}
		sumi := ZMM()
		VPXORD(sumi, sumi, sumi)
		for j := range 4 {
			q, s, p := ZMM(), ZMM(), ZMM()
			c.quants(w, j, sc, q, s)
			VPMADDUBSW(Mem{Base: x, Disp: 4 + 64*j}, q, p)
			VPDPWSSD(s, p, sumi)
		}
		hi := YMM()
		VEXTRACTI64X4(U8(1), sumi, hi)
		s8 := sumi.AsY()
		VPADDD(hi, s8, s8)
		return s8
	}
	q45kRow(name, fmt.Sprintf("%s is the AVX2 kernel with 512-bit integer work and VPDPWSSD.", name), five, true, setup, split, block)
}

// rowsFloat folds one block's integer lane sums of activation row r into
// acc[r] (8 lanes at acc+48r, 4 min lanes at acc+48r+32).
func rowsFloat(r int, sumi VecVirtual, mins, dm VecVirtual, xr, accp Register) {
	yd, t := XMM(), XMM()
	VBROADCASTSS(Mem{Base: xr}, yd)
	VMULPS(yd, dm, t)
	d := YMM()
	VBROADCASTSS(t, d)
	dmin := XMM()
	VSHUFPS(U8(0x55), t, t, dmin)
	VCVTDQ2PS(sumi, sumi)
	a := YMM()
	VMOVUPS(Mem{Base: accp, Disp: 48 * r}, a)
	VFMADD231PS(d, sumi, a)
	VMOVUPS(a, Mem{Base: accp, Disp: 48 * r})
	am := XMM()
	VMOVUPS(Mem{Base: accp, Disp: 48*r + 32}, am)
	q4kMins(mins, dmin, xr, am)
	VMOVUPS(am, Mem{Base: accp, Disp: 48*r + 32})
}

// q4kRowsAVX2 is the AVX2 Q4_K kernel for R activation rows (float
// accumulators in memory, acc[12r:12r+12]: AVX2 has only 16 registers).
func q4kRowsAVX2(R int) {
	name := "rowsQ4KAVX2Asm"
	defer wrapRows(name, "Q4_K", R, 144, 12, true)
	w, nb := rowsProlog(name, "Q4_K", R, 12, " (layout of dotQ4KAVX2Asm's acc)")
	accp := Load(Param("acc"), GP64())
	xs := chainedRows(R)
	m4 := YMM()
	VMOVDQU(m4Z, m4)
	whileNonZero(name, nb, func() {
		ms := q4kScales(w, false)
		sc := YMM()
		VPERMQ(U8(0x44), ms, sc)
		sums := zeroed(R, YMM, vpxor)
		for j := range 4 {
			lo, hi, sl, sh := YMM(), YMM(), YMM(), YMM()
			VMOVDQU(Mem{Base: w, Disp: 16 + 32*j}, hi)
			VPAND(m4, hi, lo)
			VPSRLW(U8(4), hi, hi)
			VPAND(m4, hi, hi)
			VPSHUFB(shufK4[2*j], sc, sl)
			VPSHUFB(shufK4[2*j+1], sc, sh)
			for r, xr := range xs {
				p := YMM()
				VPMADDUBSW(Mem{Base: xr, Disp: 4 + 64*j}, lo, p)
				VPMADDWD(sl, p, p)
				VPADDD(p, sums[r], sums[r])
				VPMADDUBSW(Mem{Base: xr, Disp: 4 + 64*j + 32}, hi, p)
				VPMADDWD(sh, p, p)
				VPADDD(p, sums[r], sums[r])
			}
		}
		mins := XMM()
		VEXTRACTI128(U8(1), ms, mins)
		dm := XMM()
		VMOVD(Mem{Base: w}, dm)
		VCVTPH2PS(dm, dm)
		for r, xr := range xs {
			rowsFloat(r, sums[r], mins, dm, xr, accp)
		}
		nextBlock(nb, w, 144, xs...)
	})
	VZEROUPPER()
	RET()
}

// q45kRowsAVX512 is the multi-row kernel of the avx512vnni tier for Q4_K (or,
// with five, Q5_K): R activation rows at x + r·xstride share each decoded
// weight block. Its float accumulators stay in registers, one zmm per row:
// lanes 0..7 the main lanes, 8..11 the min lanes (the negated mins are
// multiplied in, so one FMA serves both: fma(dmin, -m, acc) is exactly
// ggml's fnmadd), 12..15 zero. They are stored to acc[16r:16r+16] at the end.
func q45kRowsAVX512(R int, five bool) {
	typ, _, bb := q45kGeometry(five)
	name := "rows" + typ + "AVX512Asm"
	defer wrapRows(name, dtypeName(typ), R, bb, 16, true)
	w, nb := rowsProlog(name, dtypeName(typ), R, 16, " (8 lanes, 4 min lanes, 4 zeros)")
	rowMem := rowAddressing(R)
	c := loadQ45K512(five)
	perm, ones := ZMM(), YMM()
	VMOVDQU64(dmPermZ, perm)
	VMOVDQU64(ones16Y, ones)
	accs := zeroed(R, ZMM, VPXORD)
	whileNonZero(name, nb, func() {
		ms := q4kScales(w, true)
		sc := ZMM()
		VSHUFI32X4(U8(0), ms.AsZ(), ms.AsZ(), sc)
		nm := XMM()
		VEXTRACTI32X4(U8(1), ms, nm)
		zero := XMM()
		VPXORD(zero, zero, zero)
		VPSUBW(nm, zero, nm)
		// dmv = [d ×8, dmin ×4, 0 ×4] (VMOVD zero-fills lanes 2, 3)
		dm := XMM()
		VMOVD(Mem{Base: w}, dm)
		VCVTPH2PS(dm, dm)
		dmv := ZMM()
		VPERMPS(dm.AsZ(), perm, dmv)
		if five {
			VBROADCASTI64X4(Mem{Base: w, Disp: 16}, c.qh)
		}
		sums := zeroed(R, ZMM, VPXORD)
		for j := range 4 {
			q, s := ZMM(), ZMM()
			c.quants(w, j, sc, q, s)
			for r := range R {
				p := ZMM()
				VPMADDUBSW(rowMem(r, 4+64*j), q, p)
				VPDPWSSD(s, p, sums[r])
			}
		}
		for r := range R {
			hi := YMM()
			VEXTRACTI64X4(U8(1), sums[r], hi)
			s8 := sums[r].AsY()
			VPADDD(hi, s8, s8) // zeroes lanes 8..15 of sums[r]
			// b[2g]+b[2g+1] as int32, narrowed back to int16 (|·| ≤ 4064)
			pw := YMM()
			VPMADDWD(rowMem(r, 260), ones, pw)
			mq := XMM()
			VPMOVDW(pw, mq)
			VPMADDWD(nm, mq, mq)
			z := sums[r]
			VINSERTI32X4(U8(2), mq, z, z)
			VCVTDQ2PS(z, z)
			yd := ZMM()
			VBROADCASTSS(rowMem(r, 0), yd)
			VMULPS(yd, dmv, yd)
			VFMADD231PS(yd, z, accs[r])
		}
		nextBlock(nb, w, bb, rowRegs.x0, rowRegs.x4)
	})
	accp := Load(Param("acc"), GP64())
	for r := range R {
		VMOVUPS(accs[r], Mem{Base: accp, Disp: 64 * r})
	}
	VZEROUPPER()
	RET()
}

// q4kColsAVX512 is the decode kernel of the avx512vnni tier for Q4_K: C weight
// rows at w + c·wstride against one Q8_K row, so the activation block (its
// quants rearranged once per block, its bsum pairs negated once) is shared
// by the C rows, whose dependency chains are independent. Each row follows
// exactly the float operations of rowsQ4KAVX512Asm (one zmm accumulator:
// 8 lanes, 4 min lanes, 4 zeros), hence of the one-row model. The quants
// are loaded 64 bytes at a time: the low nibbles are sub-blocks [4i | 4i+2]
// and the high nibbles [4i+1 | 4i+3] (256-bit halves), matched by
// activation registers of the same layout; integer lane sums are exact, so
// the order of the sub-blocks within a lane does not matter.
func q4kColsAVX512(C int) {
	name := "colsQ4KAVX512Asm"
	defer wrapCols(name, "Q4_K", C, 144)
	w, x, nb, rowMem, pf := colsProlog(name, C, "Q4_K", "hsumQ4K")
	m4 := ZMM()
	VMOVDQU64(m4Z, m4)
	perm, ones := ZMM(), YMM()
	VMOVDQU64(dmPermZ, perm)
	VMOVDQU64(ones16Y, ones)
	accs := zeroed(C, ZMM, VPXORD)
	whileNonZero(name, nb, func() {
		colsPrefetchNext(pf, C*144)
		var xv [4]VecVirtual
		for i := range 2 {
			for h := range 2 {
				s := 4*i + h
				v := ZMM()
				VMOVDQU64(Mem{Base: x, Disp: 4 + 32*s}, v.AsY())
				VINSERTI64X4(U8(1), Mem{Base: x, Disp: 4 + 32*(s+2)}, v, v)
				xv[2*i+h] = v
			}
		}
		// -(b[2g]+b[2g+1]) as int16
		pw := YMM()
		VPMADDWD(Mem{Base: x, Disp: 260}, ones, pw)
		nmq, zero := XMM(), XMM()
		VPMOVDW(pw, nmq)
		VPXORD(zero, zero, zero)
		VPSUBW(nmq, zero, nmq)
		yd := ZMM()
		VBROADCASTSS(Mem{Base: x}, yd)
		for c := range C {
			ms := q4kScalesAt(rowMem(c, 4), true)
			sc := ZMM()
			VSHUFI32X4(U8(0), ms.AsZ(), ms.AsZ(), sc)
			mins := XMM()
			VEXTRACTI32X4(U8(1), ms, mins)
			dm := XMM()
			VMOVD(rowMem(c, 0), dm)
			VCVTPH2PS(dm, dm)
			dmv := ZMM()
			VPERMPS(dm.AsZ(), perm, dmv)
			VMULPS(yd, dmv, dmv) // [yd·d ×8, yd·dmin ×4, 0 ×4]
			sum := ZMM()
			VPXORD(sum, sum, sum)
			for i := range 2 {
				q, lo := ZMM(), ZMM()
				VMOVDQU64(rowMem(c, 16+64*i), q)
				VPANDD(m4, q, lo)
				VPSRLW(U8(4), q, q)
				VPANDD(m4, q, q)
				for h, v := range []VecVirtual{lo, q} {
					s, p := ZMM(), ZMM()
					VPSHUFB(shufPair[2*i+h], sc, s)
					VPMADDUBSW(xv[2*i+h], v, p)
					VPDPWSSD(s, p, sum)
				}
			}
			hi := YMM()
			VEXTRACTI64X4(U8(1), sum, hi)
			s8 := sum.AsY()
			VPADDD(hi, s8, s8) // zeroes lanes 8..15 of sum
			mm := XMM()
			VPMADDWD(nmq, mins, mm)
			VINSERTI32X4(U8(2), mm, sum, sum)
			VCVTDQ2PS(sum, sum)
			VFMADD231PS(dmv, sum, accs[c])
		}
		nextBlock(nb, w, 144, x)
	})
	outp := Load(Param("out"), GP64())
	for c := range C {
		// hsumQ4K: t = a[0:4]+a[4:8], then [t | m] pairwise as hsum8
		// and the min lanes do, then the two sums added.
		a := accs[c]
		t, m := XMM(), XMM()
		VEXTRACTF32X4(U8(1), a, t)
		VADDPS(t, a.AsX(), t)
		VEXTRACTF32X4(U8(2), a, m)
		tm := YMM()
		VINSERTF32X4(U8(1), m, t.AsY(), tm)
		colsPairSums(tm)
		hi := XMM()
		VEXTRACTF32X4(U8(1), tm, hi)
		VADDSS(hi, tm.AsX(), hi)
		VMOVSS(hi, Mem{Base: outp, Disp: 4 * c})
	}
	VZEROUPPER()
	RET()
}
