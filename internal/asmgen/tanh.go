package main

import (
	"fmt"
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
)

// Attention's score scaling and soft-capping (Gemma-2), eight lanes at a
// time. The tanh is the rational approximation of the pure-Go
// tanhRational (pkg/kernels/ops_generic.go) — Eigen's float tanh: clamp to
// [-9, 9], an odd degree-13 numerator over an even degree-6 denominator,
// the quotient clamped to [-1, 1] —
// evaluated with the same multiplies and adds in the same order and no
// fused multiply-add, so every lane is bit for bit the Go twin's.

// tanhAlpha and tanhBeta are the numerator's coefficients α13, α11, …, α1 and the
// denominator's β6, β4, β2, β0, as in tanhRational.
var (
	tanhAlpha = []float32{-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
		5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03}
	tanhBeta = []float32{1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03}
)

// scaleAVX2 is Scale: x[i] *= s, eight lanes at a time.
func scaleAVX2() {
	name := "scaleAVX2Asm"
	kernel(name, "func(x *float32, n int, s float32)",
		name+" sets x[i] = x[i]·s for the n values at x (n % 8 == 0).")
	x, n := Load(Param("x"), GP64()), Load(Param("n"), GP64())
	sv := YMM()
	VBROADCASTSS(Load(Param("s"), XMM()), sv)
	whileNonZero(name, n, func() {
		v := YMM()
		VMULPS(Mem{Base: x}, sv, v)
		VMOVUPS(v, Mem{Base: x})
		ADDQ(U32(32), x)
		SUBQ(U32(8), n)
	})
	VZEROUPPER()
	RET()
}

// scaleTanhAVX2 is ScaleTanh: x[i] = c·tanh(x[i]·s), tanh as tanhRational.
func scaleTanhAVX2() {
	vec := func(name string, v float32) Mem {
		m := GLOBL(name, RODATA|NOPTR)
		for i := range 8 {
			DATA(4*i, U32(math.Float32bits(v)))
		}
		return m
	}
	lo, hi := vec("tanh_lo", -9), vec("tanh_hi", 9)
	alpha := make([]Mem, len(tanhAlpha))
	for i, a := range tanhAlpha {
		alpha[i] = vec(fmt.Sprintf("tanh_a%d", 13-2*i), a)
	}
	beta := make([]Mem, len(tanhBeta))
	for i, b := range tanhBeta {
		beta[i] = vec(fmt.Sprintf("tanh_b%d", 6-2*i), b)
	}
	name := "scaleTanhAVX2Asm"
	kernel(name, "func(x *float32, n int, s float32, c float32)",
		name+" sets x[i] = c·tanh(x[i]·s) for the n values at x (n % 8 == 0), tanh as tanhRational:",
		"the same operations in the same order, no fused multiply-add.")
	x, n := Load(Param("x"), GP64()), Load(Param("n"), GP64())
	sv, cv, lov, hiv := YMM(), YMM(), YMM(), YMM()
	VBROADCASTSS(Load(Param("s"), XMM()), sv)
	VBROADCASTSS(Load(Param("c"), XMM()), cv)
	VMOVUPS(lo, lov)
	VMOVUPS(hi, hiv)
	onev, monev := YMM(), YMM()
	VMOVUPS(vec("tanh_one", 1), onev)
	VMOVUPS(vec("tanh_mone", -1), monev)
	whileNonZero(name, n, func() {
		v, x2, p, q := YMM(), YMM(), YMM(), YMM()
		VMULPS(Mem{Base: x}, sv, v)
		// Go order (src2, src1, dst): min and max return their src2 (v)
		// when either is NaN, so NaN goes through as in the Go twin.
		VMINPS(v, hiv, v)
		VMAXPS(v, lov, v)
		VMULPS(v, v, x2)
		// p = (((α13·x² + α11)·x² + α9)·x² + … + α1)·x
		VMULPS(alpha[0], x2, p)
		for i, a := range alpha[1:] {
			if i > 0 {
				VMULPS(x2, p, p)
			}
			VADDPS(a, p, p)
		}
		VMULPS(v, p, p)
		// q = ((β6·x² + β4)·x² + β2)·x² + β0
		VMULPS(beta[0], x2, q)
		for i, b := range beta[1:] {
			if i > 0 {
				VMULPS(x2, q, q)
			}
			VADDPS(b, q, q)
		}
		VDIVPS(q, p, p) // p/q
		VMINPS(p, onev, p)
		VMAXPS(p, monev, p)
		VMULPS(cv, p, p)
		VMOVUPS(p, Mem{Base: x})
		ADDQ(U32(32), x)
		SUBQ(U32(8), n)
	})
	VZEROUPPER()
	RET()
}
