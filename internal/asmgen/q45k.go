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

// q45kAVX2 is the Q4_K kernel or, with five, the Q5_K one: the same block
// but for the fifth bits (qh at +16, nibbles at +48, 176-byte blocks).
func q45kAVX2(five bool) {
	name, qs, bb := "dotQ4KAVX2", 16, 144
	if five {
		name, qs, bb = "dotQ5KAVX2", 48, 176
	}
	TEXT(name, NOSPLIT, "func(w, x *byte, nb int, acc *[12]float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s accumulates nb %s × Q8_K blocks into acc (8 lanes, 4 min lanes).", name, map[bool]string{false: "Q4_K", true: "Q5_K"}[five]))
	w, x, nb := Load(Param("w"), GP64()), Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	acc, accm := YMM(), XMM()
	VXORPS(acc, acc, acc)
	VXORPS(accm, accm, accm)
	m4 := YMM()
	VMOVDQU(m4Z, m4)
	var m16, qh VecVirtual
	if five {
		m16, qh = YMM(), YMM()
		VMOVDQU(m16Z, m16)
	}
	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))
	prefetch(w, bb)
	ms := q4kScales(w, false)
	mins := XMM()
	VEXTRACTI128(U8(1), ms, mins)
	sc := YMM()
	VPERMQ(U8(0x44), ms, sc)
	d, dmin := blockScales(w, x)
	q4kMins(mins, dmin, x, accm)
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
	VCVTDQ2PS(sumi, sumi)
	VFMADD231PS(d, sumi, acc)
	ADDQ(U32(bb), w)
	ADDQ(U32(292), x)
	DECQ(nb)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	p := Load(Param("acc"), GP64())
	VMOVUPS(acc, Mem{Base: p})
	VMOVUPS(accm, Mem{Base: p, Disp: 32})
	VZEROUPPER()
	RET()
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

func q45kAVX512(five bool) {
	name, qs, bb := "dotQ4KAVX512", 16, 144
	if five {
		name, qs, bb = "dotQ5KAVX512", 48, 176
	}
	TEXT(name, NOSPLIT, "func(w, x *byte, nb int, acc *[12]float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the AVX2 kernel with 512-bit integer work and VPDPWSSD.", name))
	w, x, nb := Load(Param("w"), GP64()), Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	acc, accm := YMM(), XMM()
	VXORPS(acc, acc, acc)
	VXORPS(accm, accm, accm)
	m4 := ZMM()
	VMOVDQU64(m4Z, m4)
	k1 := K()
	km := GP32()
	MOVL(U32(0xffff0000), km)
	KMOVD(km, k1)
	var m16, qh VecVirtual
	if five {
		m16, qh = ZMM(), ZMM()
		VMOVDQU64(m16Z, m16)
	}
	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))
	prefetch(w, bb)
	ms := q4kScales(w, true)
	mins := XMM()
	VEXTRACTI32X4(U8(1), ms, mins)
	sc := ZMM()
	VSHUFI32X4(U8(0), ms.AsZ(), ms.AsZ(), sc)
	d, dmin := blockScales(w, x)
	q4kMins(mins, dmin, x, accm)
	if five {
		VBROADCASTI64X4(Mem{Base: w, Disp: 16}, qh)
	}
	sumi := ZMM()
	VPXORD(sumi, sumi, sumi)
	for j := range 4 {
		q, s, p := ZMM(), ZMM(), ZMM()
		VBROADCASTI64X4(Mem{Base: w, Disp: qs + 32*j}, q)
		VPSRLW(U8(4), q, k1, q) // high nibbles (group 2j+1) in the top 256 bits
		VPANDD(m4, q, q)
		if five {
			// bit 2j of qh for the low half, 2j+1 for the high half → 16
			k2 := K()
			VPTESTMB(bitSelZ[j], qh, k2)
			VPADDB(m16, q, k2, q)
		}
		VPSHUFB(shufZ[j], sc, s)
		VPMADDUBSW(Mem{Base: x, Disp: 4 + 64*j}, q, p)
		VPDPWSSD(s, p, sumi)
	}
	hi := YMM()
	VEXTRACTI64X4(U8(1), sumi, hi)
	s8 := sumi.AsY()
	VPADDD(hi, s8, s8)
	VCVTDQ2PS(s8, s8)
	VFMADD231PS(d, s8, acc)
	ADDQ(U32(bb), w)
	ADDQ(U32(292), x)
	DECQ(nb)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	p := Load(Param("acc"), GP64())
	VMOVUPS(acc, Mem{Base: p})
	VMOVUPS(accm, Mem{Base: p, Disp: 32})
	VZEROUPPER()
	RET()
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

func rowsProlog(name string, R int) (w, nb, accp Register, xs []Register) {
	TEXT(name, NOSPLIT, fmt.Sprintf("func(w, x *byte, xstride, nb int, acc *[%d]float32)", 12*R))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s accumulates nb Q4_K blocks of one weight row against %d Q8_K rows", name, R),
		"x, x+xstride, ... into acc[12r:12r+12] (layout of dotQ4KAVX2's acc).")
	w, nb = Load(Param("w"), GP64()), Load(Param("nb"), GP64())
	accp = Load(Param("acc"), GP64())
	x0 := Load(Param("x"), GP64())
	stride := Load(Param("xstride"), GP64())
	xs = []Register{x0}
	for r := 1; r < R; r++ {
		xr := GP64()
		LEAQ(Mem{Base: xs[r-1], Index: stride, Scale: 1}, xr)
		xs = append(xs, xr)
	}
	return w, nb, accp, xs
}

func rowsAdvance(w, nb Register, xs []Register, loop string) {
	ADDQ(U32(144), w)
	for _, xr := range xs {
		ADDQ(U32(292), xr)
	}
	DECQ(nb)
	JMP(LabelRef(loop))
}

func q4kRowsAVX2(R int) {
	name := fmt.Sprintf("dotQ4KRows%dAVX2", R)
	w, nb, accp, xs := rowsProlog(name, R)
	m4 := YMM()
	VMOVDQU(m4Z, m4)
	loop, done := name+"_loop", name+"_done"
	Label(loop)
	TESTQ(nb, nb)
	JZ(LabelRef(done))
	ms := q4kScales(w, false)
	sc := YMM()
	VPERMQ(U8(0x44), ms, sc)
	sums := make([]VecVirtual, R)
	for r := range sums {
		sums[r] = YMM()
		VPXOR(sums[r], sums[r], sums[r])
	}
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
	rowsAdvance(w, nb, xs, loop)
	Label(done)
	VZEROUPPER()
	RET()
}

// q45kRowsAVX512 is the multi-row kernel of the avx512 tier for Q4_K (or,
// with five, Q5_K): R activation rows at x + r·xstride share each decoded
// weight block. Its float accumulators stay in registers, one zmm per row:
// lanes 0..7 the main lanes, 8..11 the min lanes (the negated mins are
// multiplied in, so one FMA serves both: fma(dmin, -m, acc) is exactly
// ggml's fnmadd), 12..15 zero. They are stored to acc[16r:16r+16] at the end.
func q45kRowsAVX512(R int, five bool) {
	typ, qs, bb := "Q4K", 16, 144
	if five {
		typ, qs, bb = "Q5K", 48, 176
	}
	name := fmt.Sprintf("dot%sRows%dAVX512", typ, R)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(w, x *byte, xstride, nb int, acc *[%d]float32)", 16*R))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s accumulates nb blocks of one weight row against %d Q8_K rows", name, R),
		"x, x+xstride, ... into acc[16r:16r+16] (8 lanes, 4 min lanes, 4 zeros).")
	w, nb := Load(Param("w"), GP64()), Load(Param("nb"), GP64())
	rowMem := rowAddressing(R)
	m4 := ZMM()
	VMOVDQU64(m4Z, m4)
	k1 := K()
	km := GP32()
	MOVL(U32(0xffff0000), km)
	KMOVD(km, k1)
	var m16, qh VecVirtual
	if five {
		m16, qh = ZMM(), ZMM()
		VMOVDQU64(m16Z, m16)
	}
	perm, ones := ZMM(), YMM()
	VMOVDQU64(dmPermZ, perm)
	VMOVDQU64(ones16Y, ones)
	accs := make([]VecVirtual, R)
	for r := range accs {
		accs[r] = ZMM()
		VPXORD(accs[r], accs[r], accs[r])
	}
	loop, done := name+"_loop", name+"_done"
	Label(loop)
	TESTQ(nb, nb)
	JZ(LabelRef(done))
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
		VBROADCASTI64X4(Mem{Base: w, Disp: 16}, qh)
	}
	sums := make([]VecVirtual, R)
	for r := range sums {
		sums[r] = ZMM()
		VPXORD(sums[r], sums[r], sums[r])
	}
	for j := range 4 {
		q, s := ZMM(), ZMM()
		VBROADCASTI64X4(Mem{Base: w, Disp: qs + 32*j}, q)
		VPSRLW(U8(4), q, k1, q)
		VPANDD(m4, q, q)
		if five {
			k2 := K()
			VPTESTMB(bitSelZ[j], qh, k2)
			VPADDB(m16, q, k2, q)
		}
		VPSHUFB(shufZ[j], sc, s)
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
	ADDQ(U32(bb), w)
	advanceRows(R)
	DECQ(nb)
	JMP(LabelRef(loop))
	Label(done)
	accp := Load(Param("acc"), GP64())
	for r := range R {
		VMOVUPS(accs[r], Mem{Base: accp, Disp: 64 * r})
	}
	VZEROUPPER()
	RET()
}

// q4kColsAVX512 is the decode kernel of the avx512 tier for Q4_K: C weight
// rows at w + c·wstride against one Q8_K row, so the activation block (its
// quants rearranged once per block, its bsum pairs negated once) is shared
// by the C rows, whose dependency chains are independent. Each row follows
// exactly the float operations of dotQ4KRows8AVX512 (one zmm accumulator:
// 8 lanes, 4 min lanes, 4 zeros), hence of the one-row model. The quants
// are loaded 64 bytes at a time: the low nibbles are sub-blocks [4i | 4i+2]
// and the high nibbles [4i+1 | 4i+3] (256-bit halves), matched by
// activation registers of the same layout; integer lane sums are exact, so
// the order of the sub-blocks within a lane does not matter.
func q4kColsAVX512(C int) {
	name := fmt.Sprintf("dotQ4KCols%dAVX512", C)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(w *byte, wstride int, x *byte, nb int, out *[%d]float32)", C))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s stores in out[c] the dots of nb Q4_K blocks of the %d weight rows", name, C),
		"w + c·wstride with one Q8_K row x, reduced in hsumQ4K's order.")
	w, ws := Load(Param("w"), GP64()), Load(Param("wstride"), GP64())
	x, nb := Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	ws3 := GP64()
	LEAQ(Mem{Base: ws, Index: ws, Scale: 2}, ws3)
	pf := colsPrefetchStart(w, ws)
	rowMem := func(c, disp int) Mem {
		switch c {
		case 0:
			return Mem{Base: w, Disp: disp}
		case 1:
			return Mem{Base: w, Index: ws, Scale: 1, Disp: disp}
		case 2:
			return Mem{Base: w, Index: ws, Scale: 2, Disp: disp}
		}
		return Mem{Base: w, Index: ws3, Scale: 1, Disp: disp}
	}
	m4 := ZMM()
	VMOVDQU64(m4Z, m4)
	perm, ones := ZMM(), YMM()
	VMOVDQU64(dmPermZ, perm)
	VMOVDQU64(ones16Y, ones)
	accs := make([]VecVirtual, C)
	for c := range accs {
		accs[c] = ZMM()
		VPXORD(accs[c], accs[c], accs[c])
	}
	loop, done := name+"_loop", name+"_done"
	Label(loop)
	TESTQ(nb, nb)
	JZ(LabelRef(done))
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
	ADDQ(U32(144), w)
	ADDQ(U32(292), x)
	DECQ(nb)
	JMP(LabelRef(loop))
	Label(done)
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
