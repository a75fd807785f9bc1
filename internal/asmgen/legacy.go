package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The kernels of the 32-element formats against Q8_0 activations: Q8_0 and
// Q4_0.

// legacyLoop is the shared frame of the 32-element kernels: per block,
// body returns the 8 int32 lane sums, which are scaled by f16(w)·f16(x)
// and accumulated with one FMA.
func legacyLoop(name, typ string, wBytes int, body func(w, x Register) VecVirtual) {
	kernel(name, "func(w, x *byte, nb int, acc *[8]float32)",
		fmt.Sprintf("%s accumulates nb blocks (%d weight bytes each) against Q8_0 into acc.", name, wBytes))
	w, x, nb := Load(Param("w"), GP64()), Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	acc := YMM()
	VXORPS(acc, acc, acc)
	whileNonZero(name, nb, func() {
		s := body(w, x)
		dw := f16Scalar(Mem{Base: w})
		dx := f16Scalar(Mem{Base: x})
		VMULSS(dx, dw, dw)
		dv := YMM()
		VBROADCASTSS(dw, dv)
		VCVTDQ2PS(s, s)
		VFMADD231PS(dv, s, acc)
		ADDQ(U32(wBytes), w)
		ADDQ(U32(34), x)
		DECQ(nb)
	})
	p := Load(Param("acc"), GP64())
	VMOVUPS(acc, Mem{Base: p})
	VZEROUPPER()
	RET()
	wrapDot(name, typ, wBytes, "q8_0Bytes", false, false)
}

// mulSumI8 returns the 8 int32 sums of 4 products of signed bytes qx·qy
// (ggml's mul_sum_i8_pairs: |qx| × sign(qy, qx); exact while qy ≠ -128).
func mulSumI8(qx VecVirtual, qy Op) VecVirtual {
	ax, sy := YMM(), YMM()
	VPABSB(qx, ax)
	if _, ok := qy.(Mem); ok {
		t := YMM()
		VMOVDQU(qy, t)
		qy = t
	}
	VPSIGNB(qx, qy, sy)
	VPMADDUBSW(sy, ax, ax)
	VPMADDWD(ones16Y, ax, ax)
	return ax
}

func q8_0AVX2() {
	legacyLoop("dotQ8_0AVX2Asm", "Q8_0", 34, func(w, x Register) VecVirtual {
		qx := YMM()
		VMOVDQU(Mem{Base: w, Disp: 2}, qx)
		return mulSumI8(qx, Mem{Base: x, Disp: 2})
	})
}

func q4_0AVX2() {
	legacyLoop("dotQ4_0AVX2Asm", "Q4_0", 18, func(w, x Register) VecVirtual {
		lo, hi := XMM(), XMM()
		VMOVDQU(Mem{Base: w, Disp: 2}, lo)
		VPSRLW(U8(4), lo, hi)
		q := YMM()
		VINSERTI128(U8(1), hi, lo.AsY(), q)
		VPAND(m4Z.Offset(0), q, q)
		VPSUBB(m8Y, q, q)
		return mulSumI8(q, Mem{Base: x, Disp: 2})
	})
}
