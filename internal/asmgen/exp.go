package main

import (
	"fmt"
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The exponential kernels: softmax's e^(x-m) and SwiGLU's silu(g)·u, eight
// lanes at a time (sixteen for softmax's on the avx512vnni tier) with the
// algorithm of the pure-Go expGeneric (pkg/kernels/ops_generic.go): x =
// k·ln2 + r, |r| ≤ ln2/2, Cephes' degree-7 polynomial for e^r, 2^k put into
// the exponent. The polynomial and the reduction use fused multiply-adds,
// so lanes are not bit-identical to expGeneric but as close to e^x
// (TestExpKernels: within 2 ulp on [-87.3, 88]); the AVX-512 lanes are the
// AVX2 ones' bits.

// expConsts are expLanes' constants as operands of its width: the AVX2
// kernels keep the clamps in registers and read the rest as eight-lane
// vectors from memory (sixteen YMM registers would not hold them all next
// to the working values), the AVX-512 one broadcasts them all into
// registers (there are 32).
type expConsts struct {
	avx512                         bool
	vec                            func() VecVirtual
	lo, hi                         VecVirtual
	log2e, ln2hi, ln2lo, one, bias Op
	c                              [6]Op
}

var expMem struct {
	lo, hi, log2e, ln2hi, ln2lo, one, bias Mem
	c                                      [6]Mem
}

// expConstsData declares the constants in the data section (once).
func expConstsData() {
	vec := func(name string, bits uint32) Mem {
		m := GLOBL(name, RODATA|NOPTR)
		for i := range 8 {
			DATA(4*i, U32(bits))
		}
		return m
	}
	f := func(name string, v float32) Mem { return vec(name, math.Float32bits(v)) }
	m := &expMem
	m.lo = f("exp_lo", -87.3)
	m.hi = f("exp_hi", 88)
	m.log2e = f("exp_log2e", 1.44269504088896341)
	m.ln2hi = f("exp_ln2hi", 0.693359375)
	m.ln2lo = f("exp_ln2lo", -2.12194440e-4)
	m.one = f("exp_one", 1)
	m.bias = vec("exp_bias", 127)
	for i, v := range []float32{1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1} {
		m.c[i] = f(fmt.Sprintf("exp_c%d", i), v)
	}
}

// loadExpConsts is the AVX2 kernels' constants.
func loadExpConsts() *expConsts {
	m := &expMem
	k := &expConsts{vec: YMM, lo: YMM(), hi: YMM(), log2e: m.log2e, ln2hi: m.ln2hi, ln2lo: m.ln2lo, one: m.one, bias: m.bias}
	for i, c := range m.c {
		k.c[i] = c
	}
	VMOVUPS(m.lo, k.lo)
	VMOVUPS(m.hi, k.hi)
	return k
}

// loadExpConstsAVX512 is the AVX-512 kernel's, each broadcast from its
// first lane in memory; it needs no exponent bias (VSCALEFPS puts 2^k in).
func loadExpConstsAVX512() *expConsts {
	m := &expMem
	bcast := func(src Mem) VecVirtual {
		r := ZMM()
		VBROADCASTSS(src, r)
		return r
	}
	k := &expConsts{avx512: true, vec: ZMM, lo: bcast(m.lo), hi: bcast(m.hi),
		log2e: bcast(m.log2e), ln2hi: bcast(m.ln2hi), ln2lo: bcast(m.ln2lo), one: bcast(m.one)}
	for i, c := range m.c {
		k.c[i] = bcast(c)
	}
	return k
}

// expLanes returns e^x for the lanes of x: 0 below -87.3 (and for -Inf),
// e^88 above 88, NaN for NaN.
func expLanes(k *expConsts, x VecVirtual) VecVirtual {
	xc, t, r, p := k.vec(), k.vec(), k.vec(), k.vec()
	// Go order (src2, src1, dst): max/min return their src2 (here x) when
	// either is NaN, so NaN goes through.
	VMAXPS(x, k.lo, xc)
	VMINPS(xc, k.hi, xc)
	VMULPS(k.log2e, xc, t)
	if k.avx512 {
		VRNDSCALEPS(U8(0), t, t) // k, to nearest
	} else {
		VROUNDPS(U8(0), t, t)
	}
	VMOVAPS(xc, r)
	VFNMADD231PS(k.ln2hi, t, r) // r = x - k·ln2hi
	VFNMADD231PS(k.ln2lo, t, r) // r -= k·ln2lo
	VMOVUPS(k.c[0], p)
	for _, c := range k.c[1:] {
		VFMADD213PS(c, r, p) // p = p·r + c
	}
	r2 := k.vec()
	VMULPS(r, r, r2)
	VFMADD213PS(r, r2, p) // p = p·r² + r
	VADDPS(k.one, p, p)
	if k.avx512 {
		// p·2^k, rounded once as the AVX2 product by the power of two
		// is, and 0 where x < -87.3 (ordered: not for NaN).
		keep := K()
		VCMPPS(U8(0x15), k.lo, x, keep) // not x < -87.3, unordered
		VSCALEFPS_Z(t, p, keep, p)
		return p
	}
	ki := k.vec()
	VCVTPS2DQ(t, ki)
	VPADDD(k.bias, ki, ki)
	VPSLLD(U8(23), ki, ki)
	VMULPS(ki, p, p)
	under := k.vec()
	VCMPPS(U8(0x11), k.lo, x, under) // x < -87.3, ordered: false for NaN
	VANDNPS(p, under, p)
	return p
}

// expSubAVX2 is softmax's exponential: x[i] = e^(x[i]-m) for n % 8 == 0
// values, returning their float32 sum (eight lane sums added pairwise).
func expSubAVX2() {
	expSub("expSubAVX2Asm", 8, loadExpConsts)
}

// expSubAVX512 is expSubAVX2 sixteen lanes at a time: the same lanes, the
// sum in sixteen lanes, whose halves are added before expSubAVX2's
// pairwise sum of eight.
func expSubAVX512() {
	expSub("expSubAVX512Asm", 16, loadExpConstsAVX512)
}

// expSub is the frame of the expSub kernels, lanes float32 lanes at a time.
func expSub(name string, lanes int, consts func() *expConsts) {
	kernel(name, "func(x *float32, n int, m float32) float32",
		fmt.Sprintf("%s sets x[i] = e^(x[i]-m) for the n values at x (n %% %d == 0) and returns their sum,", name, lanes),
		fmt.Sprintf("accumulated in %d float32 lanes added pairwise at the end.", lanes))
	x, n := Load(Param("x"), GP64()), Load(Param("n"), GP64())
	mx := Load(Param("m"), XMM())
	k := consts()
	mv, acc := k.vec(), k.vec()
	VBROADCASTSS(mx, mv)
	VXORPS(acc, acc, acc)
	whileNonZero(name, n, func() {
		v := k.vec()
		VMOVUPS(Mem{Base: x}, v)
		VSUBPS(mv, v, v)
		e := expLanes(k, v)
		VMOVUPS(e, Mem{Base: x})
		VADDPS(e, acc, acc)
		ADDQ(U32(4*lanes), x)
		SUBQ(U32(lanes), n)
	})
	sum := acc
	if lanes == 16 {
		sum = YMM()
		VEXTRACTF32X8(U8(1), acc, sum)
		VADDPS(acc.AsY(), sum, sum)
	}
	Store(horizontal8(sum, VADDPS, VADDSS), ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// swigluAVX2 is the gated feed-forward's activation: dst[i] =
// gate[i]/(1+e^-gate[i])·up[i], as the pure-Go SwiGLU computes it.
func swigluAVX2() {
	name := "swigluAVX2Asm"
	kernel(name, "func(dst, gate, up *float32, n int)",
		name+" sets dst[i] = gate[i]/(1+e^-gate[i])·up[i] for n values (n % 8 == 0).")
	dst, gate, up, n := Load(Param("dst"), GP64()), Load(Param("gate"), GP64()), Load(Param("up"), GP64()), Load(Param("n"), GP64())
	k := loadExpConsts()
	zero := YMM()
	VXORPS(zero, zero, zero)
	whileNonZero(name, n, func() {
		g, ng := YMM(), YMM()
		VMOVUPS(Mem{Base: gate}, g)
		VSUBPS(g, zero, ng)
		e := expLanes(k, ng)
		VADDPS(expMem.one, e, e)
		VDIVPS(e, g, e)
		VMULPS(Mem{Base: up}, e, e)
		VMOVUPS(e, Mem{Base: dst})
		ADDQ(U32(32), dst)
		ADDQ(U32(32), gate)
		ADDQ(U32(32), up)
		SUBQ(U32(8), n)
	})
	VZEROUPPER()
	RET()
}

// maxAVX2 is softmax's maximum: four chains of eight lanes, combined at the
// end. A NaN may or may not win (softmax's result is NaN either way, from
// the exponential of the NaN itself).
func maxAVX2() {
	name := "maxAVX2Asm"
	kernel(name, "func(x *float32, n int) float32",
		name+" returns the largest of the n values at x (n % 32 == 0, n > 0).")
	x, n := Load(Param("x"), GP64()), Load(Param("n"), GP64())
	acc := []VecVirtual{YMM(), YMM(), YMM(), YMM()}
	for i, a := range acc {
		VMOVUPS(Mem{Base: x, Disp: 32 * i}, a)
	}
	Label(name + "_loop")
	ADDQ(U32(128), x)
	SUBQ(U32(32), n)
	JZ(LabelRef(name + "_done"))
	for i, a := range acc {
		VMAXPS(Mem{Base: x, Disp: 32 * i}, a, a)
	}
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VMAXPS(acc[1], acc[0], acc[0])
	VMAXPS(acc[3], acc[2], acc[2])
	VMAXPS(acc[2], acc[0], acc[0])
	Store(horizontal8(acc[0], VMAXPS, VMAXSS), ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// sum4x2 adds four YMM accumulators of 64-bit lanes with add (VADDPD or
// VPADDQ) pairwise, then the two halves of the sum (extract is VEXTRACTF128
// or VEXTRACTI128), and returns the XMM register holding the two lanes
// left and the scratch XMM register it used.
func sum4x2(acc []VecVirtual, add func(ops ...Op), extract func(i, y, mx Op)) (lo, hi Register) {
	add(acc[1], acc[0], acc[0])
	add(acc[3], acc[2], acc[2])
	add(acc[2], acc[0], acc[0])
	hi = XMM()
	extract(U8(1), acc[0], hi)
	lo = acc[0].AsX()
	add(hi, lo, lo)
	return lo, hi
}

// horizontal8 folds the eight float32 lanes of v with op (VADDPS/VMAXPS and
// its scalar form): halves, then pairs of pairs, then the last two. It
// returns the XMM register holding the result in lane 0.
func horizontal8(v VecVirtual, op, scalar func(ops ...Op)) Register {
	hi := XMM()
	VEXTRACTF128(U8(1), v, hi)
	lo := v.AsX()
	op(hi, lo, lo)
	VMOVHLPS(lo, hi, hi)
	op(hi, lo, lo)
	VMOVSHDUP(lo, hi)
	scalar(hi, lo, lo)
	return lo
}
