package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
)

// axpyF16AVX2 is attention's value accumulation over an f16 KV cache:
// o[i] = fma(w, v[i], o[i]), eight lanes at a time, two chains.
func axpyF16AVX2() {
	name := "axpyF16AVX2"
	TEXT(name, NOSPLIT, "func(w float32, v *byte, o *float32, n int)")
	Pragma("noescape")
	Doc(name + " sets o[i] = fma(w, float32(v[i]), o[i]) for the n float16 values at v (n % 16 == 0).")
	wx := Load(Param("w"), XMM())
	v, o, n := Load(Param("v"), GP64()), Load(Param("o"), GP64()), Load(Param("n"), GP64())
	wv := YMM()
	VBROADCASTSS(wx, wv)
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
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
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}
