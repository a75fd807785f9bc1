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

// dotsF16AVX2 is attention's scores over an f16 KV cache: n dot products
// of the float32 vector q (hd values, hd % 8 == 0) with the f16 rows at k,
// k+stride, ..., each a float32 sum of fused multiply-adds over eight lanes,
// the lanes added pairwise at the end.
func dotsF16AVX2() {
	name := "dotsF16AVX2"
	TEXT(name, NOSPLIT, "func(k *byte, stride int, q *float32, hd int, n int, out *float32)")
	Pragma("noescape")
	Doc(name+" sets out[i] to the dot of q[:hd] with the hd float16 values at k + i·stride,",
		"for i < n (hd % 8 == 0), in float32 with fused multiply-adds over eight lanes.")
	k, stride, q := Load(Param("k"), GP64()), Load(Param("stride"), GP64()), Load(Param("q"), GP64())
	hd, n, out := Load(Param("hd"), GP64()), Load(Param("n"), GP64()), Load(Param("out"), GP64())
	Label(name + "_row")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	acc := YMM()
	VXORPS(acc, acc, acc)
	j, kp, qp := GP64(), GP64(), GP64()
	MOVQ(hd, j)
	MOVQ(k, kp)
	MOVQ(q, qp)
	Label(name + "_col")
	t := YMM()
	VCVTPH2PS(Mem{Base: kp}, t)
	VFMADD231PS(Mem{Base: qp}, t, acc)
	ADDQ(U32(16), kp)
	ADDQ(U32(32), qp)
	SUBQ(U32(8), j)
	JNZ(LabelRef(name + "_col"))
	hi := XMM()
	VEXTRACTF128(U8(1), acc, hi)
	lo := acc.AsX()
	VADDPS(hi, lo, lo)
	VMOVHLPS(lo, hi, hi)
	VADDPS(hi, lo, lo)
	VMOVSHDUP(lo, hi)
	VADDSS(hi, lo, lo)
	VMOVSS(lo, Mem{Base: out})
	ADDQ(stride, k)
	ADDQ(U32(4), out)
	DECQ(n)
	JMP(LabelRef(name + "_row"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}
