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
		if avx512 {
			sums[c] = f32Reduce512(acc[c])
			continue
		}
		// a[v] holds lanes 8v..8v+7: l + l+16 is a[v] + a[v+2].
		a := acc[c]
		VADDPS(a[2], a[0], a[0])
		VADDPS(a[3], a[1], a[1])
		VADDPS(a[1], a[0], a[0])
		sums[c] = horizontal8(a[0], VADDPS, VADDSS)
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

// f32Reduce512 adds a row's 32 lanes, held in two ZMM registers, in
// f32Cols's order and returns the XMM register of the sum (lane 0):
// lanes l + l+16, l + l+8, then horizontal8's folds. Those are VEX
// instructions, which cannot name X16..X31: the accumulators, allocated
// first, are in Z0..Z15 (the assembler rejects the kernel otherwise).
func f32Reduce512(a []VecVirtual) Register {
	VADDPS(a[1], a[0], a[0])
	hi := YMM()
	VEXTRACTF32X8(U8(1), a[0], hi)
	y := a[0].AsY().(VecVirtual)
	VADDPS(hi, y, y)
	return horizontal8(y, VADDPS, VADDSS)
}

// f32Kernels generates the one-row and the decode kernels of both tiers.
func f32Kernels() {
	f32Cols(false, 1)
	f32Cols(false, 2)
	f32Cols(true, 1)
	f32Cols(true, 4)
	f32Tile(4, 2)
}

// f32Tile generates the AVX-512 prefill kernel of C weight rows against R
// activation rows (C·R ≤ 8, C ≤ 4, R ≤ 4): each weight vector is loaded
// once for the R activation rows and each activation vector once per
// column step, so a step of C·R fused multiply-adds takes C+R loads, where
// the decode kernel takes 1+C loads for C. Every (row, activation) pair
// has its 32 lanes, reduced and finished as in f32Cols.
func f32Tile(C, R int) string {
	name := fmt.Sprintf("f32Tile%dx%dAVX512Asm", C, R)
	kernel(name, "func(w *byte, wstride int, x *float32, xstride int, n int, out *float32, ostride int)",
		fmt.Sprintf("%s stores in out[r·ostride+c] the dot of the n float32 weights at", name),
		fmt.Sprintf("w + c·wstride with the n float32s at x + r·xstride (bytes), for c < %d, r < %d,", C, R),
		"in f32Cols's order.")
	w, ws := Load(Param("w"), GP64()), Load(Param("wstride"), GP64())
	x, xs := Load(Param("x"), GP64()), Load(Param("xstride"), GP64())
	n := Load(Param("n"), GP64())
	rowMem, _ := stridedRows(w, ws, C)
	xMem, _ := stridedRows(x, xs, R)
	acc := make([][][]VecVirtual, C) // acc[c][r][v]
	for c := range acc {
		acc[c] = make([][]VecVirtual, R)
		for r := range R {
			acc[c][r] = zeroed(2, ZMM, VXORPS)
		}
	}
	nb := GP64()
	MOVQ(n, nb)
	SHRQ(U8(5), nb)
	whileNonZero(name, nb, func() {
		for v := range 2 {
			xv := make([]VecVirtual, R)
			for r := range R {
				xv[r] = ZMM()
				VMOVUPS(xMem(r, 64*v), xv[r])
			}
			for c := range C {
				wv := ZMM()
				VMOVUPS(rowMem(c, 64*v), wv)
				for r := range R {
					VFMADD231PS(xv[r], wv, acc[c][r][v])
				}
			}
		}
		ADDQ(U32(128), w)
		ADDQ(U32(128), x)
		DECQ(nb)
	})
	sums := make([][]Register, C)
	for c := range C {
		sums[c] = make([]Register, R)
		for r := range R {
			sums[c][r] = f32Reduce512(acc[c][r])
		}
	}
	ANDQ(U32(31), n)
	whileNonZero(name+"_tail", n, func() {
		xv := make([]VecVirtual, R)
		for r := range R {
			xv[r] = XMM()
			VMOVSS(xMem(r, 0), xv[r])
		}
		for c := range C {
			t := XMM()
			VMOVSS(rowMem(c, 0), t)
			for r := range R {
				VFMADD231SS(xv[r], t, sums[c][r])
			}
		}
		ADDQ(U32(4), w)
		ADDQ(U32(4), x)
		DECQ(n)
	})
	out, os := Load(Param("out"), GP64()), Load(Param("ostride"), GP64())
	SHLQ(U8(2), os)
	oMem, _ := stridedRows(out, os, R)
	for c := range C {
		for r := range R {
			VMOVSS(sums[c][r], oMem(r, 4*c))
		}
	}
	VZEROUPPER()
	RET()
	return name
}
