package main

import (
	"flag"
	"fmt"
	"strings"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The LayoutR16 kernels of the 32-column formats Q4_0, Q4_1, Q5_0, Q5_1
// and Q8_0 (see pkg/kernels/layout.go for the layout, dotR16Generic for the
// arithmetic they reproduce). As in r16.go, lane l of every vector is weight row l of a
// group of 16 and VPDPBUSD adds the products of four columns of all 16 rows
// (unsigned quants) with one activation dword broadcast from memory (signed
// quants). Per block of 32 columns and activation row, the rows' integer
// sums start at the activation block's -o·Σx (broadcast: the quants'
// offset, folded in), take 8 VPDPBUSD and go into the row's float32
// accumulator with one conversion and one fused multiply-add by d·dx.
// Q5_0's and Q5_1's fifth bits are ORed into the nibbles first
// (r16HighBit); Q4_1's and Q5_1's sums start at 0 and their minimums add
// m·s (s the activation block's d·Σx) with one more fused multiply-add,
// broadcasting s from memory.
//
// A block is small (16 rows × 32 columns), so the float accumulators stay in
// registers for the whole call and are stored once at the end: with R ≤ 8
// rows that is at most 8 of them, 8 integer sums and the weights, in 32
// registers. With fewer than four rows, S = 4/R integer sums per row take
// turns by dword, so that the VPDPBUSD chains stay independent enough to
// fill the pipeline (the sums are exact: any grouping gives the same).

// r16LegacyChains is the number of integer sums per activation row that take
// turns in the kernels for one row; R rows take max(1, r16LegacyChains/R).
var r16LegacyChains = flag.Int("r16legacychains", 4, "integer sums per row of the one-row Q4_0/Q8_0 r16 kernel (R rows: this/R)")

// r16LegacyPrefetchBlocks is how many blocks of 32 columns ahead the kernels
// prefetch: 16 is the 512 columns the k-quant kernels run ahead.
var r16LegacyPrefetchBlocks = flag.Int("r16legacyprefetch", 16, "blocks ahead the Q4_0/Q8_0 r16 kernels prefetch (0: none)")

// q8R16Bytes is the size of an activation block of these kernels
// (pkg/kernels' q8R16Bytes): float32 d, int32 -o·Σx, 32 int8 quants.
const q8R16Bytes = 40

// r16LegacyTypes are the 32-column formats with LayoutR16 kernels.
var r16LegacyTypes = []string{"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}

// r16LegacyAVX512 generates the Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 r16
// kernels, for 1, 2, 4 and 8 activation rows.
func r16LegacyAVX512() {
	for _, typ := range r16LegacyTypes {
		var ks []string
		for _, R := range []int{1, 2, 4, 8} {
			ks = append(ks, r16LegacyKernel(typ, R))
		}
		wrapR16("r16"+typ+"AVX512", typ, "r16"+typ+"Block", "q8R16Bytes", ks)
	}
}

// r16LegacyShape returns the group block bytes of typ and its 64-byte
// chunks of quants (nibbles for all but Q8_0).
func r16LegacyShape(typ string) (gbb, chunks int) {
	switch typ {
	case "Q4_0":
		return 288, 4
	case "Q4_1":
		return 320, 4
	case "Q5_0":
		return 352, 4
	case "Q5_1":
		return 384, 4
	}
	return 544, 8
}

// r16LegacyParts returns where the minimums of typ's group block start
// (Q4_1, Q5_1; 0 for none) and whether it has fifth bits at 288 (Q5_0,
// Q5_1).
func r16LegacyParts(typ string) (minAt int, five bool) {
	switch typ {
	case "Q4_1":
		return 288, false
	case "Q5_0":
		return 0, true
	case "Q5_1":
		return 352, true
	}
	return 0, false
}

// r16LegacyKernel generates the r16 kernel of typ (Q4_0, Q4_1, Q5_0, Q5_1
// or Q8_0) for R activation rows.
func r16LegacyKernel(typ string, R int) string {
	gbb, chunks := r16LegacyShape(typ)
	q4 := chunks == 4 // nibbles
	minAt, five := r16LegacyParts(typ)
	withMin := minAt > 0
	name := fmt.Sprintf("r16%sx%dAVX512Asm", typ, R)
	kernel(name, "func(w *byte, nb int, x *byte, xstride int, out *float32, ostride int)",
		fmt.Sprintf("%s sets out[r·ostride : r·ostride+16] to the dots of the 16 rows of a", name),
		fmt.Sprintf("LayoutR16 %s group (nb blocks of 32 columns at w) with the %d activation", typ, R),
		"rows x + r·xstride (q8R16Bytes blocks).")
	w, nb := Load(Param("w"), GP64()), Load(Param("nb"), GP64())
	x0, xst := Load(Param("x"), GP64()), Load(Param("xstride"), GP64())
	xm, x4 := stridedRows(x0, xst, R)
	xs := []Register{x0}
	if x4 != nil {
		xs = append(xs, x4)
	}
	var m4, m16 VecVirtual
	if q4 {
		m4 = ZMM()
		VMOVDQU64(m4Z, m4)
	}
	if five {
		m16 = ZMM()
		VMOVDQU64(m16Z, m16)
	}
	outs := zeroed(R, ZMM, VPXORD)
	S := max(1, *r16LegacyChains/R)
	whileNonZero(name, nb, func() {
		accs := make([][]VecVirtual, R)
		for r := range R {
			accs[r] = make([]VecVirtual, S)
			for s := range S {
				a := ZMM()
				if s == 0 && !withMin {
					VPBROADCASTD(xm(r, 4), a) // -o·Σx
				} else {
					VPXORD(a, a, a)
				}
				accs[r][s] = a
			}
		}
		k := 0 // VPDPBUSD of the block so far, per row
		dots := func(v VecVirtual, dword int) {
			for r := range R {
				VPDPBUSD_BCST(xm(r, 8+4*dword), v, accs[r][k%S])
			}
			k++
		}
		var qh VecVirtual
		if five {
			qh = ZMM()
			VMOVDQU64(Mem{Base: w, Disp: 288}, qh)
		}
		for c := range chunks {
			r16LegacyPrefetch(w, c, chunks, gbb)
			m := Mem{Base: w, Disp: 32 + 64*c}
			if q4 {
				// Byte i of a row: column 4c+i low, 16+4c+i high.
				lo, hi := r16Nibbles(m, m4)
				if five {
					or := func(t, q VecVirtual) { VPTERNLOGD(U8(0xf8), m16, t, q) } // q |= t & m16
					r16HighBit(qh, 2*c, lo, ZMM, or)
					r16HighBit(qh, 2*c+1, hi, ZMM, or)
				}
				dots(lo, c)
				dots(hi, 4+c)
				continue
			}
			q := ZMM()
			VMOVDQU64(m, q)
			dots(q, c)
		}
		dv := ZMM()
		VCVTPH2PS(Mem{Base: w}, dv)
		var mv VecVirtual
		if withMin {
			mv = ZMM()
			VCVTPH2PS(Mem{Base: w, Disp: minAt}, mv)
		}
		for r := range R {
			a := accs[r][0]
			for _, b := range accs[r][1:] {
				VPADDD(b, a, a)
			}
			dd := ZMM()
			VMULPS_BCST(xm(r, 0), dv, dd)
			VCVTDQ2PS(a, a)
			VFMADD231PS(dd, a, outs[r])
			if withMin {
				VFMADD231PS_BCST(xm(r, 4), mv, outs[r]) // m·s
			}
		}
		ADDQ(U32(gbb), w)
		for _, x := range xs {
			ADDQ(U32(q8R16Bytes), x)
		}
		DECQ(nb)
	})
	o0, ost := Load(Param("out"), GP64()), Load(Param("ostride"), GP64())
	SHLQ(U8(2), ost)
	om, _ := stridedRows(o0, ost, R)
	for r := range R {
		VMOVUPS(outs[r], om(r, 0))
	}
	VZEROUPPER()
	RET()
	return name
}

// r16LegacyPrefetch touches chunk c's share (of chunks) of the cache lines
// of the group block as many columns ahead of w as the k-quant kernels
// prefetch (r16PrefetchBlocks super-blocks: 8 blocks of 32 each).
func r16LegacyPrefetch(w Register, c, chunks, gbb int) {
	if *r16PrefetchBlocks == 0 {
		return
	}
	lines := (gbb + 63) / 64
	for l := c * lines / chunks; l < (c+1)*lines/chunks; l++ {
		PREFETCHT0(Mem{Base: w, Disp: 8**r16PrefetchBlocks*gbb + 64*l})
	}
}

// quantQ8R16AVX512 generates the activation encoder of these kernels: nb
// blocks of 32 float32 to q8R16Bytes blocks, exactly as the reference
// (quantQ8R16) writes them for finite input: d = amax/127, id = 1/d (0 when
// d is 0), q = x·id rounded half away from zero (C's roundf: the truncation
// t of x·id, plus its sign where |x·id - t| ≥ 0.5, that difference being
// exact), d stored through float16 and back (round to nearest even), and
// -o·Σq, or with withS (Q4_1's and Q5_1's encoder, quantQ8R16SGeneric) s = d·Σq as
// float32 through float16, d before its rounding. Blocks with NaNs or
// infinities encode to garbage, as in the reference, but differently.
func quantQ8R16AVX512(withS bool) {
	x, y, nb, neg, label := r16EncoderProlog("AVX512", withS)
	absm, signm, one, half := ZMM(), ZMM(), ZMM(), ZMM()
	VPTERNLOGD(U8(0xff), absm, absm, absm)
	VPSLLD(U8(31), absm, signm)
	VPSRLD(U8(1), absm, absm)
	VBROADCASTSS(oneF, one)
	VBROADCASTSS(halfF, half)
	whileNonZero(label, nb, func() {
		// amax over the block, in lane 0
		a, b := ZMM(), ZMM()
		VANDPS(Mem{Base: x}, absm, a)
		VANDPS(Mem{Base: x, Disp: 64}, absm, b)
		VMAXPS(b, a, a)
		ay := YMM()
		VEXTRACTF32X8(U8(1), a, ay)
		VMAXPS(ay, a.AsY(), ay)
		ax := XMM()
		VEXTRACTF128(U8(1), ay, ax)
		VMAXPS(ax, ay.AsX(), ax)
		t := XMM()
		VPERMILPS(U8(0x4e), ax, t)
		VMAXPS(t, ax, ax)
		VPERMILPS(U8(0xb1), ax, t)
		VMAXPS(t, ax, ax)
		// d = amax/127; id = 1/d, or 0 where d is 0
		d, id, nz := XMM(), XMM(), XMM()
		VDIVSS(posF127, ax, d)
		VMOVSS(oneF, id)
		VDIVSS(d, id, id)
		VXORPS(nz, nz, nz)
		VCMPSS(U8(4), nz, d, nz) // NEQ_UQ: all ones where d != 0
		VANDPS(nz, id, id)
		idv := ZMM()
		VBROADCASTSS(id, idv)
		du := r16KeepD(d, withS)
		// d through float16
		VCVTPS2PH(U8(0), d, d)
		VCVTPH2PS(d, d)
		VMOVSS(d, Mem{Base: y})
		var qs [2]VecVirtual
		for h := range 2 {
			p, tr, f := ZMM(), ZMM(), ZMM()
			VMULPS(Mem{Base: x, Disp: 64 * h}, idv, p)
			VRNDSCALEPS(U8(0x0b), p, tr) // truncate, no precision exception
			VSUBPS(tr, p, f)
			VANDPS(absm, f, f)
			k := K()
			VCMPPS(U8(0x1d), half, f, k) // GE_OQ: |p - t| >= 0.5
			s := ZMM()
			VANDPS(signm, p, s)
			VORPS(one, s, s)
			VADDPS(s, tr, k, tr) // t ± 1 in the lanes of k
			VCVTTPS2DQ(tr, tr)
			VPMOVSDB(tr, Mem{Base: y, Disp: 8 + 16*h})
			qs[h] = tr
		}
		// -o·Σq
		sum := qs[0]
		VPADDD(qs[1], sum, sum)
		sy := YMM()
		VEXTRACTI64X4(U8(1), sum, sy)
		VPADDD(sy, sum.AsY(), sy)
		sx := XMM()
		VEXTRACTI128(U8(1), sy, sx)
		VPADDD(sx, sy.AsX(), sx)
		t2 := XMM()
		VPSHUFD(U8(0x4e), sx, t2)
		VPADDD(t2, sx, sx)
		VPSHUFD(U8(0xb1), sx, t2)
		VPADDD(t2, sx, sx)
		r16StoreSum(sx, neg, du, Mem{Base: y, Disp: 4})
		ADDQ(U32(128), x)
		ADDQ(U32(q8R16Bytes), y)
		DECQ(nb)
	})
	VZEROUPPER()
	RET()
}

// r16EncoderProlog declares the activation encoder of the tier's r16
// kernels (suffix AVX512 or AVX2): with withS Q4_1's and Q5_1's
// (quantQ8R16S…Asm, no neg), else that of Q4_0, Q5_0 and Q8_0; it returns the loaded
// parameters (neg nil with withS) and a label prefix for the loop.
func r16EncoderProlog(suffix string, withS bool) (x, y, nb, neg Register, label string) {
	name := "quantQ8R16" + suffix + "Asm"
	if withS {
		name = "quantQ8R16S" + suffix + "Asm"
		kernel(name, "func(x *float32, y *byte, nb int)",
			name+" encodes nb blocks of 32 float32 at x to the activation",
			"blocks of the LayoutR16 Q4_1/Q5_1 kernels at y, with s = d·Σq as Q8_1's.")
	} else {
		kernel(name, "func(x *float32, y *byte, nb int, neg int32)",
			name+" encodes nb blocks of 32 float32 at x to the activation",
			"blocks of the LayoutR16 Q4_0/Q5_0/Q8_0 kernels at y, with block sums times neg (-o).")
	}
	x, y = Load(Param("x"), GP64()), Load(Param("y"), GP64())
	nb = Load(Param("nb"), GP64())
	if !withS {
		neg = Load(Param("neg"), GP32())
	}
	label = "q8r16" // the AVX-512 encoder's, as before the AVX2 one
	if suffix != "AVX512" {
		label += strings.ToLower(suffix)
	}
	if withS {
		label += "s"
	}
	return x, y, nb, neg, label
}

// r16KeepD copies the unrounded scale d (lane 0) for Q4_1's s, or returns
// nil.
func r16KeepD(d VecVirtual, withS bool) VecVirtual {
	if !withS {
		return nil
	}
	du := XMM()
	VMOVAPS(d, du)
	return du
}

// r16StoreSum stores the block sum Σq in lane 0 of sx to m: times neg, or,
// with du (the unrounded d), as Q4_1's float32 s = d·Σq through float16.
func r16StoreSum(sx VecVirtual, neg Register, du VecVirtual, m Mem) {
	if du == nil {
		g := GP32()
		VMOVD(sx, g)
		IMULL(neg, g)
		MOVL(g, m)
		return
	}
	VCVTDQ2PS(sx, sx) // |Σq| ≤ 32·127: exact
	VMULSS(du, sx, sx)
	VCVTPS2PH(U8(0), sx, sx)
	VCVTPH2PS(sx, sx)
	VMOVSS(sx, m)
}
