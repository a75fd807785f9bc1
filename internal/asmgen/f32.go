package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The dots of F32 weight rows (pkg/kernels' f32 kernels; dotF32LanesModel in
// pkg/kernels/f32_test.go is the twin they reproduce bit for bit). A row's
// first n&^31 columns go to 32 float32 lanes, column i into lane i mod 32
// with one fused multiply-add; the lanes are then added pairwise (lane l
// and l+16, then l+8, l+4, l+2, l+1), and the last n mod 32 columns are
// fused into that sum one by one. AVX-512 holds a row's lanes in two ZMM
// registers, AVX2 in four YMM, so both tiers give the same bits.
//
// One kernel takes C weight rows at w + c·wstride against one activation
// row (decode; C = 1 is the one-row dot): each activation vector is loaded
// once for the C rows, whose 2C (4C) chains run side by side. The AVX2
// tier has room for two rows' chains in its sixteen registers, AVX-512 for
// four and more.

// f32Cols generates the F32 kernel of C weight rows (C ≤ 4) for the AVX2 or
// the AVX-512 tier and returns its name.
func f32Cols(avx512 bool, C int) string {
	tier, vw, alloc := "AVX2", 8, YMM
	if avx512 {
		tier, vw, alloc = "AVX512", 16, ZMM
	}
	name := fmt.Sprintf("f32Cols%d%sAsm", C, tier)
	kernel(name, fmt.Sprintf("func(w *byte, wstride int, x *float32, n int, out *[%d]float32)", C),
		fmt.Sprintf("%s stores in out[c] the dot of the n float32 weights at w + c·wstride", name),
		"with the n float32s at x, for c < "+fmt.Sprint(C)+": 32 lanes of fused multiply-adds, added",
		"pairwise, then the last n mod 32 columns fused in one by one.")
	w, ws := Load(Param("w"), GP64()), Load(Param("wstride"), GP64())
	x, n := Load(Param("x"), GP64()), Load(Param("n"), GP64())
	rowMem, _ := stridedRows(w, ws, C)
	// The next C rows (the next call's, in MatMul) are prefetched a block
	// per block, so that they are in cache when it starts.
	var pf Register
	if *colsPrefetch {
		pf = GP64()
		switch C {
		case 1, 2, 4:
			LEAQ(Mem{Base: w, Index: ws, Scale: uint8(C)}, pf)
		default:
			panic("f32Cols: C must be 1, 2 or 4")
		}
	}
	nv := 32 / vw // vectors per 32-column block
	acc := make([][]VecVirtual, C)
	for c := range acc {
		acc[c] = zeroed(nv, alloc, VXORPS)
	}
	nb := GP64()
	MOVQ(n, nb)
	SHRQ(U8(5), nb)
	whileNonZero(name, nb, func() {
		colsPrefetchNext(pf, 128*C)
		for v := range nv {
			xv := alloc()
			VMOVUPS(Mem{Base: x, Disp: 4 * vw * v}, xv)
			for c := range C {
				VFMADD231PS(rowMem(c, 4*vw*v), xv, acc[c][v])
			}
		}
		ADDQ(U32(128), w)
		ADDQ(U32(128), x)
		DECQ(nb)
	})
	sums := make([]Register, C)
	for c := range C {
		a := acc[c]
		if avx512 {
			// lanes l + l+16, then l + l+8
			VADDPS(a[1], a[0], a[0])
			hi := YMM()
			VEXTRACTF32X8(U8(1), a[0], hi)
			VADDPS(hi, a[0].AsY(), a[0].AsY())
		} else {
			// a[v] holds lanes 8v..8v+7: l + l+16 is a[v] + a[v+2].
			VADDPS(a[2], a[0], a[0])
			VADDPS(a[3], a[1], a[1])
			VADDPS(a[1], a[0], a[0])
		}
		// l + l+4, l + l+2, l + l+1 (EVEX forms on the AVX-512 tier: its
		// registers may be X16..X31)
		lo, hi := a[0].AsX(), XMM()
		if avx512 {
			VEXTRACTF32X4(U8(1), a[0].AsY(), hi)
		} else {
			VEXTRACTF128(U8(1), a[0], hi)
		}
		VADDPS(hi, lo, lo)
		VMOVHLPS(lo, hi, hi)
		VADDPS(hi, lo, lo)
		VMOVSHDUP(lo, hi)
		VADDSS(hi, lo, lo)
		sums[c] = lo
	}
	ANDQ(U32(31), n)
	whileNonZero(name+"_tail", n, func() {
		for c := range C {
			t := XMM()
			VMOVSS(rowMem(c, 0), t)
			VFMADD231SS(Mem{Base: x}, t, sums[c])
		}
		ADDQ(U32(4), w)
		ADDQ(U32(4), x)
		DECQ(n)
	})
	out := Load(Param("out"), GP64())
	for c := range C {
		VMOVSS(sums[c], Mem{Base: out, Disp: 4 * c})
	}
	VZEROUPPER()
	RET()
	return name
}

// f32Kernels generates the one-row and the decode kernels of both tiers.
func f32Kernels() {
	f32Cols(false, 1)
	f32Cols(false, 2)
	f32Cols(true, 1)
	f32Cols(true, 4)
}
