package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The Q6_K kernels: one row, rows and cols.

// q6k512 holds the constants of the avx512vnni Q6_K kernels.
type q6k512 struct{ m4, m30, m32, cntA, cntB VecVirtual }

func loadQ6K512() *q6k512 {
	c := &q6k512{ZMM(), ZMM(), ZMM(), ZMM(), ZMM()}
	VMOVDQU64(m4Z, c.m4)
	VMOVDQU64(m30Z, c.m30)
	VMOVDQU64(m32Z, c.m32)
	VMOVDQU64(cntAZ, c.cntA)
	VMOVDQU64(cntBZ, c.cntB)
	return c
}

// eachQuad unpacks the Q6_K block whose byte disp m(disp) addresses 64
// quants at a time: quad i = 2h+pair holds the low nibbles of
// ql[64h:64h+64] (pair 0: chunks 0, 1 of half h) or their high nibbles
// (pair 1: chunks 2, 3), the two high bits shifted into place per 256-bit
// half with variable word shifts. use gets each quad with its scales (sc,
// the block's 16 scales in both 128-bit lanes) widened to int16.
func (c *q6k512) eachQuad(m func(disp int) Mem, sc VecVirtual, use func(i int, q, sw VecVirtual)) {
	for h := range 2 {
		ql, qh := ZMM(), ZMM()
		VMOVDQU64(m(64*h), ql)
		VBROADCASTI64X4(m(128+32*h), qh)
		for pair := range 2 {
			q, t := ZMM(), ZMM()
			if pair == 0 {
				VPANDD(c.m4, ql, q)
				VPSLLVW(c.cntA, qh, t)
			} else {
				VPSRLW(U8(4), ql, q)
				VPANDD(c.m4, q, q)
				VPSRLVW(c.cntB, qh, t)
			}
			VPTERNLOGD(U8(0xf8), c.m30, t, q) // q |= t & m30
			sb, sw := YMM(), ZMM()
			VPSHUFB(shufQ6Y[2*h+pair], sc, sb)
			VPMOVSXBW(sb, sw)
			use(2*h+pair, q, sw)
		}
	}
}

// q6kColsAVX512 is the decode kernel of the avx512vnni tier for Q6_K: C weight
// rows at w + c·wstride against one Q8_K row. The activation quants and
// their products with the 32 offset (VPMADDUBSW with 32) are computed once
// per block and shared by the C rows; each row then follows exactly the
// operations of dotQ6KAVX512Asm, so the results are identical.
func q6kColsAVX512(C int) {
	name := "colsQ6KAVX512Asm"
	defer wrapCols(name, "Q6_K", C, 210)
	w, x, nb, rowMem, pf := colsProlog(name, C, "Q6_K", "hsum8")
	k := loadQ6K512()
	accs := zeroed(C, YMM, VXORPS)
	whileNonZero(name, nb, func() {
		colsPrefetchNext(pf, C*210)
		var xv, xc [4]VecVirtual
		for i := range 4 {
			xv[i], xc[i] = ZMM(), ZMM()
			VMOVDQU64(Mem{Base: x, Disp: 4 + 64*i}, xv[i])
			VPMADDUBSW(xv[i], k.m32, xc[i])
		}
		yd := XMM()
		VMOVSS(Mem{Base: x}, yd)
		for c := range C {
			sc := YMM()
			VBROADCASTI32X4(rowMem(c, 192), sc)
			sum := ZMM()
			VPXORD(sum, sum, sum)
			k.eachQuad(func(disp int) Mem { return rowMem(c, disp) }, sc, func(i int, q, sw VecVirtual) {
				p := ZMM()
				VPMADDUBSW(xv[i], q, p)
				VPSUBW(xc[i], p, p)
				VPDPWSSD(sw, p, sum)
			})
			hi := YMM()
			VEXTRACTI64X4(U8(1), sum, hi)
			s8 := sum.AsY()
			VPADDD(hi, s8, s8)
			VCVTDQ2PS(s8, s8)
			d := f16Scalar(rowMem(c, 208))
			t := YMM()
			VMULSS(yd, d, t.AsX()) // yd·d in lane 0, as the model: yd * f16
			VBROADCASTSS(t.AsX(), t)
			VFMADD231PS(t, s8, accs[c])
		}
		nextBlock(nb, w, 210, x)
	})
	outp := Load(Param("out"), GP64())
	for c := range C {
		a := accs[c]
		t := XMM()
		VEXTRACTF32X4(U8(1), a, t)
		VADDPS(t, a.AsX(), t)
		colsPairSums(t.AsY()) // the upper lanes are not read
		VMOVSS(t, Mem{Base: outp, Disp: 4 * c})
	}
	VZEROUPPER()
	RET()
}

// q6kAVX512 is the Q6_K kernel of the avx512vnni tier for R activation rows at
// x + r·xstride (R = 1 is the single-row kernel), 64 quants per zmm
// (eachQuad). acc[8r:8r+8] receives row r's 8 lanes.
func q6kAVX512(R int) {
	name := "rowsQ6KAVX512Asm"
	if R == 1 {
		name = "dotQ6KAVX512Asm"
		defer wrapDot(name, "Q6_K", 210, "q8KBytes", false, true)
	} else {
		defer wrapRows(name, "Q6_K", R, 210, 8, false)
	}
	w, nb := rowsProlog(name, "Q6_K", R, 8, "")
	rowMem := rowAddressing(R)
	k := loadQ6K512()
	accs := zeroed(R, YMM, VXORPS)
	whileNonZero(name, nb, func() {
		if R == 1 {
			prefetch(w, 210)
		}
		sc := YMM()
		VBROADCASTI128(Mem{Base: w, Disp: 192}, sc)
		sums := zeroed(R, ZMM, VPXORD)
		k.eachQuad(func(disp int) Mem { return Mem{Base: w, Disp: disp} }, sc, func(i int, q, sw VecVirtual) {
			for r := range R {
				q8 := rowMem(r, 4+64*i)
				p, c := ZMM(), ZMM()
				VPMADDUBSW(q8, q, p)
				VPMADDUBSW(q8, k.m32, c)
				VPSUBW(c, p, p)
				VPDPWSSD(sw, p, sums[r])
			}
		})
		d := f16Scalar(Mem{Base: w, Disp: 208})
		for r := range R {
			hi := YMM()
			VEXTRACTI64X4(U8(1), sums[r], hi)
			s8 := sums[r].AsY()
			VPADDD(hi, s8, s8)
			VCVTDQ2PS(s8, s8)
			yd := YMM()
			VBROADCASTSS(rowMem(r, 0), yd)
			VMULSS(yd.AsX(), d, yd.AsX()) // yd·d in lane 0, as the model: yd * f16
			VBROADCASTSS(yd.AsX(), yd)
			VFMADD231PS(yd, s8, accs[r])
		}
		nextBlock(nb, w, 210, rowRegs.x0, rowRegs.x4)
	})
	accp := Load(Param("acc"), GP64())
	for r := range R {
		VMOVUPS(accs[r], Mem{Base: accp, Disp: 32 * r})
	}
	VZEROUPPER()
	RET()
}

func q6kAVX2() {
	name := "dotQ6KAVX2Asm"
	kernel(name, "func(w, x *byte, nb int, acc *[8]float32)",
		name+" accumulates nb Q6_K × Q8_K blocks into acc (8 lanes).")
	defer wrapDot(name, "Q6_K", 210, "q8KBytes", false, false)
	w, x, nb := Load(Param("w"), GP64()), Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	acc := YMM()
	VXORPS(acc, acc, acc)
	m4, m2, m32 := YMM(), YMM(), YMM()
	VMOVDQU(m4Z, m4)
	VMOVDQU(m2Y, m2)
	VMOVDQU(m32Y, m32)
	whileNonZero("q6k2", nb, func() {
		scales := XMM()
		VMOVDQU(Mem{Base: w, Disp: 192}, scales)
		sumi := YMM()
		VPXOR(sumi, sumi, sumi)
		for h := range 2 {
			ql1, ql2, qh := YMM(), YMM(), YMM()
			VMOVDQU(Mem{Base: w, Disp: 64 * h}, ql1)
			VMOVDQU(Mem{Base: w, Disp: 64*h + 32}, ql2)
			VMOVDQU(Mem{Base: w, Disp: 128 + 32*h}, qh)
			for k := range 4 {
				q, t := YMM(), YMM()
				// high two bits: ((qh >> 2k) & 3) << 4
				if k == 0 {
					VPAND(m2, qh, t)
				} else {
					VPSRLW(U8(2*k), qh, t)
					VPAND(m2, t, t)
				}
				VPSLLW(U8(4), t, t)
				src := ql1
				if k%2 == 1 {
					src = ql2
				}
				if k < 2 {
					VPAND(m4, src, q)
				} else {
					VPSRLW(U8(4), src, q)
					VPAND(m4, q, q)
				}
				VPOR(t, q, q)
				q8 := Mem{Base: x, Disp: 4 + 128*h + 32*k}
				s32 := YMM()
				VPMADDUBSW(q8, m32, s32)
				VPMADDUBSW(q8, q, q)
				VPSUBW(s32, q, q)
				sc := XMM()
				VPSHUFB(shufQ6[4*h+k], scales, sc)
				scw := YMM()
				VPMOVSXBW(sc, scw)
				VPMADDWD(scw, q, q)
				VPADDD(q, sumi, sumi)
			}
		}
		yd := XMM()
		VBROADCASTSS(Mem{Base: x}, yd)
		d := f16Scalar(Mem{Base: w, Disp: 208})
		VMULPS(yd, d, d)
		dv := YMM()
		VBROADCASTSS(d, dv)
		VCVTDQ2PS(sumi, sumi)
		VFMADD231PS(dv, sumi, acc)
		nextBlock(nb, w, 210, x)
	})
	p := Load(Param("acc"), GP64())
	VMOVUPS(acc, Mem{Base: p})
	VZEROUPPER()
	RET()
}

// q6kRowsAVX2 is the AVX2 Q6_K kernel for R activation rows (float
// accumulators in memory, acc[8r:8r+8]: AVX2 has only 16 registers).
func q6kRowsAVX2(R int) {
	name := "rowsQ6KAVX2Asm"
	defer wrapRows(name, "Q6_K", R, 210, 8, false)
	w, nb := rowsProlog(name, "Q6_K", R, 8, "")
	xs := chainedRows(R)
	whileNonZero(name, nb, func() {
		sums := zeroed(R, YMM, vpxor)
		for h := range 2 {
			for k := range 4 {
				q, t := YMM(), YMM()
				VMOVDQU(Mem{Base: w, Disp: 128 + 32*h}, t)
				if k > 0 {
					VPSRLW(U8(2*k), t, t)
				}
				VPAND(m2Y, t, t)
				VPSLLW(U8(4), t, t)
				VMOVDQU(Mem{Base: w, Disp: 64*h + 32*(k%2)}, q)
				if k >= 2 {
					VPSRLW(U8(4), q, q)
				}
				VPAND(m4Z, q, q)
				VPOR(t, q, q)
				sc := XMM()
				VMOVDQU(Mem{Base: w, Disp: 192}, sc)
				VPSHUFB(shufQ6[4*h+k], sc, sc)
				scw := YMM()
				VPMOVSXBW(sc, scw)
				for r, xr := range xs {
					q8 := Mem{Base: xr, Disp: 4 + 128*h + 32*k}
					p, c := YMM(), YMM()
					VPMADDUBSW(q8, q, p)
					VMOVDQU(m32Y, c)
					VPMADDUBSW(q8, c, c)
					VPSUBW(c, p, p)
					VPMADDWD(scw, p, p)
					VPADDD(p, sums[r], sums[r])
				}
			}
		}
		d := f16Scalar(Mem{Base: w, Disp: 208})
		accp := Load(Param("acc"), GP64())
		for r, xr := range xs {
			yd := XMM()
			VMOVSS(Mem{Base: xr}, yd)
			VMULSS(yd, d, yd)
			dv := YMM()
			VBROADCASTSS(yd, dv)
			VCVTDQ2PS(sums[r], sums[r])
			a := YMM()
			VMOVUPS(Mem{Base: accp, Disp: 32 * r}, a)
			VFMADD231PS(dv, sums[r], a)
			VMOVUPS(a, Mem{Base: accp, Disp: 32 * r})
		}
		nextBlock(nb, w, 210, xs...)
	})
	VZEROUPPER()
	RET()
}
