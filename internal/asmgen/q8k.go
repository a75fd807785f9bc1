package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// quantQ8KAVX2 encodes nb blocks of 256 float32 to Q8_K exactly as the
// reference (quantQ8K) does for finite input: d = 1/iscale with iscale =
// -127/m, m the first element of largest magnitude; q = round-to-nearest-
// even(iscale·x) (the reference's nearestInt; |iscale·x| ≤ 127 so its clamp
// never acts); bsums the sums of 16 quants. Blocks with NaNs or infinities
// encode to garbage, as in the reference, but differently.
func quantQ8KAVX2() {
	kernel("quantQ8KAVX2Asm", "func(x *float32, y *byte, nb int)",
		"quantQ8KAVX2Asm encodes nb blocks of 256 float32 at x to Q8_K at y.")
	x, y, nb := Load(Param("x"), GP64()), Load(Param("y"), GP64()), Load(Param("nb"), GP64())
	absm, perm := YMM(), YMM()
	VPCMPEQD(absm, absm, absm)
	VPSRLD(U8(1), absm, absm)
	VMOVDQU(packPermY, perm)
	whileNonZero("q8k", nb, func() {
		// amax over the block
		mx := []VecVirtual{YMM(), YMM(), YMM(), YMM()}
		for i, r := range mx {
			VANDPS(Mem{Base: x, Disp: 32 * i}, absm, r)
		}
		for c := 4; c < 32; c++ {
			t := YMM()
			VANDPS(Mem{Base: x, Disp: 32 * c}, absm, t)
			VMAXPS(t, mx[c%4], mx[c%4])
		}
		VMAXPS(mx[1], mx[0], mx[0])
		VMAXPS(mx[3], mx[2], mx[2])
		VMAXPS(mx[2], mx[0], mx[0])
		am := mx[0]
		t := YMM()
		VPERM2F128(U8(1), am, am, t)
		VMAXPS(t, am, am)
		VPERMILPS(U8(0x4e), am, t)
		VMAXPS(t, am, am)
		VPERMILPS(U8(0xb1), am, t)
		VMAXPS(t, am, am) // amax in every lane
		zero := YMM()
		VXORPS(zero, zero, zero)
		VUCOMISS(zero.AsX(), am.AsX())
		JNE(LabelRef("q8k_nonzero"))
		// all zero: clear the block
		for off := 0; off < 288; off += 32 {
			VMOVDQU(zero, Mem{Base: y, Disp: off})
		}
		MOVL(U32(0), Mem{Base: y, Disp: 288})
		JMP(LabelRef("q8k_next"))
		Label("q8k_nonzero")
		// first index with |x| == amax
		i, mask := GP64(), GP32()
		XORQ(i, i)
		Label("q8k_find")
		t2 := YMM()
		VANDPS(Mem{Base: x, Index: i, Scale: 4}, absm, t2)
		VCMPPS(U8(0), am, t2, t2) // EQ_OQ
		VMOVMSKPS(t2, mask)
		TESTL(mask, mask)
		JNZ(LabelRef("q8k_found"))
		ADDQ(U8(8), i)
		CMPQ(i, U32(256))
		JB(LabelRef("q8k_find"))
		XORQ(i, i) // only with NaNs in the block: no element equals amax
		JMP(LabelRef("q8k_scale"))
		Label("q8k_found")
		BSFL(mask, mask)
		ADDQ(mask.As64(), i)
		Label("q8k_scale")
		// iscale = -127/m; d = 1/iscale
		is := XMM()
		m := XMM()
		VMOVSS(Mem{Base: x, Index: i, Scale: 4}, m)
		VMOVSS(negF127, is)
		VDIVSS(m, is, is)
		d := XMM()
		VMOVSS(oneF, d)
		VDIVSS(is, d, d)
		VMOVSS(d, Mem{Base: y})
		isv := YMM()
		VBROADCASTSS(is, isv)
		// Group sums: per chunk c the lane-wise sums of groups 2c, 2c+1 are
		// folded with VPHADDD as they come (few live registers: AVX2 has 16).
		var h [2]VecVirtual
		var halves [2]VecVirtual
		var quads [2]VecVirtual
		for c := range 8 { // 32 quants per step
			q := make([]VecVirtual, 4)
			for k := range 4 {
				q[k] = YMM()
				VMULPS(Mem{Base: x, Disp: 128*c + 32*k}, isv, q[k])
				VCVTPS2DQ(q[k], q[k])
			}
			g0, g1 := YMM(), YMM()
			VPADDD(q[1], q[0], g0)
			VPADDD(q[3], q[2], g1)
			VPHADDD(g1, g0, g0) // [g0 01, g0 23, g1 01, g1 23 | .. 45, 67 ..]
			h[c%2] = g0
			if c%2 == 1 {
				VPHADDD(h[1], h[0], h[0]) // 4 groups, per-lane partial sums
				quads[c/2%2] = h[0]
				if c%4 == 3 {
					lo, hi := YMM(), YMM()
					VPERM2I128(U8(0x20), quads[1], quads[0], lo)
					VPERM2I128(U8(0x31), quads[1], quads[0], hi)
					VPADDD(hi, lo, lo)
					halves[c/4] = lo
				}
			}
			VPACKSSDW(q[1], q[0], q[0])
			VPACKSSDW(q[3], q[2], q[2])
			VPACKSSWB(q[2], q[0], q[0])
			VPERMD(q[0], perm, q[0])
			VMOVDQU(q[0], Mem{Base: y, Disp: 4 + 32*c})
		}
		VPACKSSDW(halves[1], halves[0], halves[0])
		VPERMQ(U8(0xd8), halves[0], halves[0])
		VMOVDQU(halves[0], Mem{Base: y, Disp: 260})
		Label("q8k_next")
		ADDQ(U32(1024), x)
		ADDQ(U32(292), y)
		DECQ(nb)
	})
	VZEROUPPER()
	RET()
}
