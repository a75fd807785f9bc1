package main

import (
	"flag"
	"fmt"
	"log"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The LayoutR16 kernels of F16 and BF16 matrices (see pkg/kernels/layout.go
// for the layout, dotR16FloatGeneric for the arithmetic they reproduce bit
// for bit). A column of a group is 32 bytes, 16 values: widened to float32
// (F16 by VCVTPH2PS, BF16 by a zero-extension to dwords and a shift left
// by 16), it is multiplied by each activation row's float for that column,
// broadcast from memory (AVX-512) or from a register (AVX2), and added with
// one fused multiply-add into the row's chain of even or of odd columns.
// The products are exact (the activations are rounded through the weights'
// format), so the only roundings are those of the two chains, as in the
// twin. Two chains per row hide the latency of the fused multiply-add for
// one activation row (decode) and cost nothing for more.
//
// AVX-512 takes 1, 2, 4 and 8 activation rows (8 rows: 16 chains in
// registers); AVX2 1 and 2 rows with both 8-row halves in registers, and
// 4 rows one half at a time, in two passes over the group (the second from
// cache).

// r16FloatPrefetchBlocks is how many blocks of 32 columns (1 KiB each) ahead
// the kernels prefetch.
var r16FloatPrefetchBlocks = flag.Int("r16floatprefetch", 4, "blocks of 32 columns ahead the F16/BF16 r16 kernels prefetch (0: none)")

// r16HalfBytes and r16HalfXBytes are a group block of these formats and
// the activation floats of one (pkg/kernels' r16HalfBlock, r16HalfXBlock).
const (
	r16HalfBytes  = 1024
	r16HalfXBytes = 128
)

// r16FloatAVX512 generates the F16 and BF16 r16 kernels for 1, 2, 4 and 8
// activation rows.
func r16FloatAVX512() {
	for _, typ := range []string{"F16", "BF16"} {
		var ks []string
		for _, R := range []int{1, 2, 4, 8} {
			ks = append(ks, r16FloatKernel(typ, R))
		}
		wrapR16("r16"+typ+"AVX512", typ, "r16HalfBlock", "r16HalfXBlock", ks)
	}
}

// r16FloatAVX2 generates the AVX2 F16 and BF16 r16 kernels for 1, 2 and 3
// activation rows (pkg/kernels' r16HalfAVX2 runs them: threes, and twos
// for the rest), each with both 8-row halves of the group in one pass:
// 2·2R chains, twelve of the sixteen registers at three rows. A 4-row
// kernel would not fit them and passes over the group once per half,
// broadcasting each activation float once per fused multiply-add (five
// loads per four multiply-adds with F16's VCVTPH2PS). On an AVX2-only AMD
// EPYC (Zen 3: two 256-bit loads and two multiply-adds a cycle) that one
// ran F16 at 67 GOP/s against the 2-row kernel's 80 (BenchmarkR16Kernel,
// best of six); three rows share each widening among six multiply-adds and
// keep twelve chains in flight, where the 2-row kernel's eight only just
// cover the multiply-add's latency.
func r16FloatAVX2() {
	for _, typ := range []string{"F16", "BF16"} {
		for _, R := range []int{1, 2, 3} {
			r16FloatAVX2Kernel(typ, R)
		}
	}
}

// r16Widen loads the F16 or BF16 values at m into the float32 lanes of v
// (16 with a ZMM, 8 with a YMM).
func r16Widen(typ string, m Mem, v VecVirtual) {
	if typ == "F16" {
		VCVTPH2PS(m, v)
		return
	}
	VPMOVZXWD(m, v)
	VPSLLD(U8(16), v, v)
}

// r16FloatPrefetch touches, for column k (even ones only), the cache line
// r16FloatPrefetchBlocks blocks ahead of w.
func r16FloatPrefetch(w Register, k int) {
	if *r16FloatPrefetchBlocks == 0 || k%2 != 0 {
		return
	}
	PREFETCHT0(Mem{Base: w, Disp: *r16FloatPrefetchBlocks*r16HalfBytes + 32*k})
}

func r16FloatKernel(typ string, R int) string {
	name := fmt.Sprintf("r16%sx%dAVX512Asm", typ, R)
	kernel(name, "func(w *byte, nb int, x *byte, xstride int, out *float32, ostride int)",
		fmt.Sprintf("%s sets out[r·ostride : r·ostride+16] to the dots of the 16 rows of a", name),
		fmt.Sprintf("LayoutR16 %s group (nb blocks of 32 columns at w) with the %d float32", typ, R),
		"activation rows x + r·xstride.")
	w, nb := Load(Param("w"), GP64()), Load(Param("nb"), GP64())
	x0, xst := Load(Param("x"), GP64()), Load(Param("xstride"), GP64())
	xm, x4 := stridedRows(x0, xst, R)
	xs := []Register{x0}
	if x4 != nil {
		xs = append(xs, x4)
	}
	chains := [2][]VecVirtual{zeroed(R, ZMM, VPXORD), zeroed(R, ZMM, VPXORD)} // even, odd columns
	whileNonZero(name, nb, func() {
		for k := range 32 {
			r16FloatPrefetch(w, k)
			v := ZMM()
			r16Widen(typ, Mem{Base: w, Disp: 32 * k}, v)
			for r := range R {
				VFMADD231PS_BCST(xm(r, 4*k), v, chains[k%2][r])
			}
		}
		ADDQ(U32(r16HalfBytes), w)
		for _, x := range xs {
			ADDQ(U32(r16HalfXBytes), x)
		}
		DECQ(nb)
	})
	o0, ost := Load(Param("out"), GP64()), Load(Param("ostride"), GP64())
	SHLQ(U8(2), ost)
	om, _ := stridedRows(o0, ost, R)
	for r := range R {
		VADDPS(chains[1][r], chains[0][r], chains[0][r])
		VMOVUPS(chains[0][r], om(r, 0))
	}
	VZEROUPPER()
	RET()
	return name
}

func r16FloatAVX2Kernel(typ string, R int) string {
	name := fmt.Sprintf("r16%sx%dAVX2Asm", typ, R)
	kernel(name, "func(w *byte, nb int, x *byte, xstride int, out *float32, ostride int)",
		fmt.Sprintf("%s sets out[r·ostride : r·ostride+16] to the dots of the 16 rows of a", name),
		fmt.Sprintf("LayoutR16 %s group (nb blocks of 32 columns at w) with the %d float32", typ, R),
		"activation rows x + r·xstride.")
	if R > 3 {
		log.Fatalf("%s: %d rows' chains do not fit in the 16 registers", name, R)
	}
	om := r16AVX2Out(R)
	w, nb := Load(Param("w"), GP64()), Load(Param("nb"), GP64())
	x0, xst := Load(Param("x"), GP64()), Load(Param("xstride"), GP64())
	xm, _ := stridedRows(x0, xst, R)
	// chains[h][e][r]: half h, even (e = 0) or odd columns, row r
	var chains [2][2][]VecVirtual
	for h := range chains {
		chains[h] = [2][]VecVirtual{zeroed(R, YMM, VXORPS), zeroed(R, YMM, VXORPS)}
	}
	whileNonZero(name, nb, func() {
		for k := range 32 {
			r16FloatPrefetch(w, k)
			var v [2]VecVirtual
			for h := range v {
				v[h] = YMM()
				r16Widen(typ, Mem{Base: w, Disp: 32*k + 16*h}, v[h])
			}
			for r := range R {
				xb := YMM()
				VBROADCASTSS(xm(r, 4*k), xb)
				for h := range v {
					VFMADD231PS(v[h], xb, chains[h][k%2][r])
				}
			}
		}
		ADDQ(U32(r16HalfBytes), w)
		ADDQ(U32(r16HalfXBytes), x0)
		DECQ(nb)
	})
	for h := range chains {
		for r := range R {
			e := chains[h][0][r]
			VADDPS(chains[h][1][r], e, e)
			VMOVUPS(e, om(r, 32*h))
		}
	}
	VZEROUPPER()
	RET()
	return name
}

// roundF16AVX2 generates the encoder of the F16 kernels' activation rows
// (roundR16 of F16): each float32 rounded to float16 and back with F16C's
// VCVTPS2PH (to nearest, ties to even, as F32ToF16) and VCVTPH2PS. A NaN
// becomes F32ToF16's quiet NaN of the same sign (0x7fc00000 | sign) instead
// of keeping its payload, so every input gives roundR16's bits.
func roundF16AVX2() {
	roundAVX2("F16", "float16", func() func(v, r VecVirtual) {
		sign, qnan := YMM(), YMM()
		VPCMPEQD(sign, sign, sign)
		VPSLLD(U8(23), sign, qnan)
		VPSRLD(U8(1), qnan, qnan) // 0x7fc00000
		VPSLLD(U8(31), sign, sign)
		return func(v, r VecVirtual) {
			h, nan, q := XMM(), YMM(), YMM()
			VCVTPS2PH(U8(0), v, h)
			VCVTPH2PS(h, r)
			VCMPPS(U8(3), v, v, nan) // unordered: v is a NaN
			VANDPS(sign, v, q)
			VORPS(qnan, q, q)
			VBLENDVPS(nan, q, r, r)
		}
	})
}

// roundBF16AVX2 generates roundF16AVX2's BF16 twin with integer
// instructions, F32ToBF16's steps per lane: (b + 0x7fff + (b>>16 & 1)) with
// the low half cleared, and a NaN (|b| > 0x7f800000) its high half with the
// quiet bit set.
func roundBF16AVX2() {
	roundAVX2("BF16", "bfloat16", func() func(b, t VecVirtual) {
		ones, bias, high, abs, inf, quiet := YMM(), YMM(), YMM(), YMM(), YMM(), YMM()
		VPCMPEQD(ones, ones, ones)
		VPSRLD(U8(17), ones, bias) // 0x7fff
		VPSLLD(U8(16), ones, high) // 0xffff0000
		VPSRLD(U8(1), ones, abs)   // 0x7fffffff
		VPSLLD(U8(23), ones, inf)
		VPSRLD(U8(1), inf, inf)     // 0x7fc00000
		VPSRLD(U8(31), ones, ones)  // 1
		VPSLLD(U8(22), ones, quiet) // 0x00400000
		VPSUBD(quiet, inf, inf)     // 0x7f800000
		return func(b, t VecVirtual) {
			nan := YMM()
			VPSRLD(U8(16), b, t)
			VPAND(ones, t, t)
			VPADDD(bias, t, t)
			VPADDD(b, t, t)
			VPAND(high, t, t)
			VPAND(abs, b, nan)
			VPCMPGTD(inf, nan, nan) // |b| > 0x7f800000: a NaN
			VPAND(high, b, b)
			VPOR(quiet, b, b)
			VPBLENDVB(nan, b, t, t)
		}
	})
}

// roundAVX2 generates round<typ>AVX2Asm(x, y, n): the n float32 at x (n %
// 8 == 0) rounded through the format, to y. setup emits the constants and
// returns the step that sets r to the rounding of the 8 floats in v.
func roundAVX2(typ, format string, setup func() func(v, r VecVirtual)) {
	name := "round" + typ + "AVX2Asm"
	kernel(name, "func(x *float32, y *byte, n int)",
		name+" sets the n float32 at y (n % 8 == 0) to those at x rounded",
		fmt.Sprintf("through %s, as roundR16(%s, ...) does.", format, typ))
	x, y, n := Load(Param("x"), GP64()), Load(Param("y"), GP64()), Load(Param("n"), GP64())
	step := setup()
	SHRQ(U8(3), n)
	whileNonZero(name, n, func() {
		v, r := YMM(), YMM()
		VMOVDQU(Mem{Base: x}, v)
		step(v, r)
		VMOVDQU(r, Mem{Base: y})
		ADDQ(U32(32), x)
		ADDQ(U32(32), y)
		DECQ(n)
	})
	VZEROUPPER()
	RET()
}
