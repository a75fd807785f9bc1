package main

import (
	"fmt"
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
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

// tanhVec is the 32-byte datum name: eight lanes of v, which the AVX2
// kernel reads whole and the AVX-512 one broadcasts from its first lane.
// Both tiers share one copy, declared where the AVX2 kernel first asks.
func tanhVec(name string, v float32) Mem {
	if m, ok := tanhData[name]; ok {
		return m
	}
	m := GLOBL(name, RODATA|NOPTR)
	for i := range 8 {
		DATA(4*i, U32(math.Float32bits(v)))
	}
	tanhData[name] = m
	return m
}

var tanhData = map[string]Mem{}

// scaleTanhAVX2 is ScaleTanh: x[i] = c·tanh(x[i]·s), tanh as tanhRational,
// eight lanes at a time, the constants read from memory.
func scaleTanhAVX2() {
	scaleTanh("scaleTanhAVX2Asm", 8, YMM, XMM, func(m Mem) Op { return m })
}

// scaleTanhAVX512 is scaleTanhAVX2 sixteen lanes at a time, the constants
// broadcast once into registers (there are 32).
func scaleTanhAVX512() {
	scaleTanh("scaleTanhAVX512Asm", 16, ZMM, XMM, func(m Mem) Op {
		r := ZMM()
		VBROADCASTSS(m, r)
		return r
	})
}

// scaleTanh is the frame of the ScaleTanh kernels: lanes float32 lanes in a
// vector of vec, the constants as operand gives them.
func scaleTanh(name string, lanes int, vec, scalar func() VecVirtual, operand func(Mem) Op) {
	lo, hi := tanhVec("tanh_lo", -9), tanhVec("tanh_hi", 9)
	alpha := make([]Mem, len(tanhAlpha))
	for i, a := range tanhAlpha {
		alpha[i] = tanhVec(fmt.Sprintf("tanh_a%d", 13-2*i), a)
	}
	beta := make([]Mem, len(tanhBeta))
	for i, b := range tanhBeta {
		beta[i] = tanhVec(fmt.Sprintf("tanh_b%d", 6-2*i), b)
	}
	kernel(name, "func(x *float32, n int, s float32, c float32)",
		fmt.Sprintf("%s sets x[i] = c·tanh(x[i]·s) for the n values at x (n %% %d == 0), tanh as tanhRational:", name, lanes),
		"the same operations in the same order, no fused multiply-add.")
	x, n := Load(Param("x"), GP64()), Load(Param("n"), GP64())
	sv, cv, lov, hiv := vec(), vec(), vec(), vec()
	VBROADCASTSS(Load(Param("s"), scalar()), sv)
	VBROADCASTSS(Load(Param("c"), scalar()), cv)
	onev, monev := vec(), vec()
	if lanes == 8 {
		VMOVUPS(lo, lov)
		VMOVUPS(hi, hiv)
		VMOVUPS(tanhVec("tanh_one", 1), onev)
		VMOVUPS(tanhVec("tanh_mone", -1), monev)
	} else {
		VBROADCASTSS(lo, lov)
		VBROADCASTSS(hi, hiv)
		VBROADCASTSS(tanhVec("tanh_one", 1), onev)
		VBROADCASTSS(tanhVec("tanh_mone", -1), monev)
	}
	av := make([]Op, len(alpha))
	for i, a := range alpha {
		av[i] = operand(a)
	}
	bv := make([]Op, len(beta))
	for i, b := range beta {
		bv[i] = operand(b)
	}
	whileNonZero(name, n, func() {
		v, x2, p, q := vec(), vec(), vec(), vec()
		VMULPS(Mem{Base: x}, sv, v)
		// Go order (src2, src1, dst): min and max return their src2 (v)
		// when either is NaN, so NaN goes through as in the Go twin.
		VMINPS(v, hiv, v)
		VMAXPS(v, lov, v)
		VMULPS(v, v, x2)
		// horner sets r = (c0·x² + c1)·x² + … + c_last.
		horner := func(cs []Op, r VecVirtual) {
			VMULPS(cs[0], x2, r)
			for i, c := range cs[1:] {
				if i > 0 {
					VMULPS(x2, r, r)
				}
				VADDPS(c, r, r)
			}
		}
		// p = (((α13·x² + α11)·x² + α9)·x² + … + α1)·x
		horner(av, p)
		VMULPS(v, p, p)
		// q = ((β6·x² + β4)·x² + β2)·x² + β0
		horner(bv, q)
		VDIVPS(q, p, p) // p/q
		VMINPS(p, onev, p)
		VMAXPS(p, monev, p)
		VMULPS(cv, p, p)
		VMOVUPS(p, Mem{Base: x})
		ADDQ(U32(4*lanes), x)
		SUBQ(U32(lanes), n)
	})
	VZEROUPPER()
	RET()
}
