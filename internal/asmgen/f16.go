package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// f16Dot generates the F16 dots: w holds n binary16 weights, x n float32
// (or, with half, n binary16) activations; n % 16 == 0. Each product is
// rounded to float32 as in the reference, then widened and summed in
// float64 over four accumulators of four lanes (order differs from the
// reference's sequential sum; see the tests for the tolerance).
func f16Dot(half bool) {
	name, xt, xs := "dotF16F32AVX2Asm", "*float32", 4
	if half {
		name, xt, xs = "dotF16F16AVX2Asm", "*byte", 2
	}
	kernel(name, fmt.Sprintf("func(w *byte, x %s, n int) float64", xt),
		fmt.Sprintf("%s returns Σ float64(float32(w[i]·x[i])) over n elements (n %% 16 == 0).", name))
	w, x, n := Load(Param("w"), GP64()), Load(Param("x"), GP64()), Load(Param("n"), GP64())
	acc := []VecVirtual{YMM(), YMM(), YMM(), YMM()}
	for _, a := range acc {
		VXORPD(a, a, a)
	}
	whileNonZero(name, n, func() {
		for k := range 2 {
			a, b := YMM(), YMM()
			VCVTPH2PS(Mem{Base: w, Disp: 16 * k}, a)
			if half {
				VCVTPH2PS(Mem{Base: x, Disp: 16 * k}, b)
				VMULPS(b, a, a)
			} else {
				VMULPS(Mem{Base: x, Disp: 32 * k}, a, a)
			}
			VCVTPS2PD(a.AsX(), b)
			VADDPD(b, acc[2*k], acc[2*k])
			VEXTRACTF128(U8(1), a, a.AsX())
			VCVTPS2PD(a.AsX(), b)
			VADDPD(b, acc[2*k+1], acc[2*k+1])
		}
		ADDQ(U32(32), w)
		ADDQ(U32(16*xs), x)
		SUBQ(U32(16), n)
	})
	lo, hi := sum4x2(acc, VADDPD, VEXTRACTF128)
	VUNPCKHPD(lo, lo, hi)
	VADDSD(hi, lo, lo)
	Store(lo, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// axpyF16AVX2 is attention's value accumulation over an f16 KV cache:
// o[i] = fma(w, v[i], o[i]), eight lanes at a time, two chains.
func axpyF16AVX2() {
	name := "axpyF16AVX2Asm"
	kernel(name, "func(w float32, v *byte, o *float32, n int)",
		name+" sets o[i] = fma(w, float32(v[i]), o[i]) for the n float16 values at v (n % 16 == 0).")
	wx := Load(Param("w"), XMM())
	v, o, n := Load(Param("v"), GP64()), Load(Param("o"), GP64()), Load(Param("n"), GP64())
	wv := YMM()
	VBROADCASTSS(wx, wv)
	whileNonZero(name, n, func() {
		for k := range 2 {
			t, a := YMM(), YMM()
			VCVTPH2PS(Mem{Base: v, Disp: 16 * k}, t)
			VMOVUPS(Mem{Base: o, Disp: 32 * k}, a)
			VFMADD231PS(t, wv, a)
			VMOVUPS(a, Mem{Base: o, Disp: 32 * k})
		}
		ADDQ(U32(32), v)
		ADDQ(U32(64), o)
		SUBQ(U32(16), n)
	})
	VZEROUPPER()
	RET()
}
