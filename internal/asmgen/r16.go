package main

import (
	"flag"
	"fmt"
	"strings"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The LayoutR16 kernels (see pkg/kernels/layout.go for the layout and
// dotR16Generic for the arithmetic they reproduce). Lane l of every vector is
// weight row l of a group of 16; an activation dword (four columns) is
// broadcast to all lanes and VPDPBUSD adds its products with four columns of
// all 16 rows. Each sub-block's int32 sums are multiplied by the 16 rows'
// scales (VPMULLD) and added into one int32 sum per super-block; the mins
// (Q4_K, Q5_K) or the offset 32 (Q6_K) are folded in with VPDPWSSD against the
// activation's block sums; then one fused multiply-add per super-block moves
// the sum into the float32 outputs, which live in out (16 floats per
// activation row) and are zeroed first. Q5_K is Q4_K with its fifth bits
// ORed into the nibbles (r16HighBit).
//
// R activation rows share each unpacked weight vector. With fewer than 8
// rows, S = 8/R accumulators per row take turns by sub-block, so that the
// VPDPBUSD chains stay independent enough to fill the pipeline.

// r16Prolog declares the r16 kernel name for R activation rows against
// groups of typ, loads the parameters and zeroes the R output rows.
func r16Prolog(name, typ string, R int) (w, nb Register, xm, om func(r, disp int) Mem, xs []Register) {
	kernel(name, "func(w *byte, nb int, x *byte, xstride int, out *float32, ostride int)",
		fmt.Sprintf("%s sets out[r·ostride : r·ostride+16] to the dots of the 16 rows of a", name),
		fmt.Sprintf("LayoutR16 %s group (nb super-blocks at w) with the %d Q8_K rows x + r·xstride.", typ, R))
	w, nb = Load(Param("w"), GP64()), Load(Param("nb"), GP64())
	x0, xst := Load(Param("x"), GP64()), Load(Param("xstride"), GP64())
	xm, x4 := stridedRows(x0, xst, R)
	o0, ost := Load(Param("out"), GP64()), Load(Param("ostride"), GP64())
	SHLQ(U8(2), ost)
	om, _ = stridedRows(o0, ost, R)
	zero := ZMM()
	VPXORD(zero, zero, zero)
	for r := range R {
		VMOVUPS(zero, om(r, 0))
	}
	xs = []Register{x0}
	if x4 != nil {
		xs = append(xs, x4)
	}
	return w, nb, xm, om, xs
}

// r16Accs allocates the per-row sub-block accumulators: S = 8/R per row.
func r16Accs(R int) [][]VecVirtual {
	S := max(1, 8/R)
	accs := make([][]VecVirtual, R)
	for r := range accs {
		accs[r] = make([]VecVirtual, S)
		for s := range S {
			accs[r][s] = ZMM()
		}
	}
	return accs
}

// r16Nibbles loads the 64 bytes of a chunk at m and splits them into its
// low nibbles (columns 8c..8c+3 of the 16 rows) and high nibbles
// (8c+4..8c+7).
func r16Nibbles(m Mem, m4 VecVirtual) (lo, hi VecVirtual) {
	lo, hi = ZMM(), ZMM()
	VMOVDQU64(m, lo)
	VPSRLW(U8(4), lo, hi)
	VPANDD(m4, lo, lo)
	VPANDD(m4, hi, hi)
	return lo, hi
}

// r16Dots adds the products of the unpacked chunk c (lo: columns
// 8c..8c+3, hi: 8c+4..8c+7) with each activation row r to the row's
// accumulator of sub-block j, cleared first if clear.
func r16Dots(xm func(r, disp int) Mem, accs [][]VecVirtual, j, c int, lo, hi VecVirtual, clear bool) {
	for r, acc := range accs {
		a := acc[j%len(acc)]
		if clear {
			VPXORD(a, a, a)
		}
		VPDPBUSD_BCST(xm(r, 4+8*c), lo, a)
		VPDPBUSD_BCST(xm(r, 8+8*c), hi, a)
	}
}

// r16Scale adds each row's sums of sub-block j times its scales sc into
// the row's isum (or makes isum that on the first sub-block).
func r16Scale(sc VecVirtual, accs [][]VecVirtual, j int, isum []VecVirtual, first bool) {
	for r, acc := range accs {
		a := acc[j%len(acc)]
		if first {
			isum[r] = ZMM()
			VPMULLD(sc, a, isum[r])
			continue
		}
		t := ZMM()
		VPMULLD(sc, a, t)
		VPADDD(t, isum[r], isum[r])
	}
}

// r16PrefetchBlocks is how many super-blocks ahead the r16 kernels
// prefetch their weights. They stream from DRAM (a decode step reads every
// weight once; a prompt chunk's matrices do not stay in cache either), and
// with the arithmetic between the loads the hardware prefetcher alone keeps
// too few misses in flight. Two blocks ahead (BenchmarkMatVecDRAM, 2
// threads): one row 65% → 85–100% of a plain read's bandwidth, four rows
// 20 → 47 GB/s, eight rows 14 → 32 GB/s; prompt chunks (BenchmarkPrefill)
// 5–15% more GOP/s.
var r16PrefetchBlocks = flag.Int("r16prefetch", 2, "super-blocks ahead the r16 kernels prefetch (0: none)")

// r16Prefetch touches chunk c's share (of 32) of the cache lines of the
// super-block r16PrefetchBlocks ahead of w (gbb bytes each).
func r16Prefetch(w Register, c, gbb int) {
	if *r16PrefetchBlocks == 0 {
		return
	}
	lines := (gbb + 63) / 64
	for l := c * lines / 32; l < (c+1)*lines/32; l++ {
		PREFETCHT0(Mem{Base: w, Disp: *r16PrefetchBlocks*gbb + 64*l})
	}
}

// r16AVX512 generates the r16 kernels, for 1, 2, 4 and 8 activation rows.
func r16AVX512() {
	var q4k, q5k, q6k []string
	for _, R := range []int{1, 2, 4, 8} {
		q4k = append(q4k, q4kR16AVX512(R, false))
		q5k = append(q5k, q4kR16AVX512(R, true))
		q6k = append(q6k, q6kR16AVX512(R))
	}
	wrapR16("r16Q4KAVX512", "Q4_K", "r16Q4KBlock", "q8KBytes", q4k)
	wrapR16("r16Q5KAVX512", "Q5_K", "r16Q5KBlock", "q8KBytes", q5k)
	wrapR16("r16Q6KAVX512", "Q6_K", "r16Q6KBlock", "q8KBytes", q6k)
}

// q4kR16AVX512 generates the Q4_K kernel or, with five, the Q5_K one (its
// fifth bits ORed into the nibbles: r16HighBits).
func q4kR16AVX512(R int, five bool) string {
	typ, gbb := "Q4_K", 2368
	if five {
		typ, gbb = "Q5_K", 2880
	}
	name := fmt.Sprintf("r16%sx%dAVX512Asm", strings.ReplaceAll(typ, "_", ""), R)
	w, nb, xm, om, xs := r16Prolog(name, typ, R)
	m4, ones := ZMM(), YMM()
	VMOVDQU64(m4Z, m4)
	VMOVDQU64(ones16Y, ones)
	var m16 VecVirtual
	if five {
		m16 = ZMM()
		VMOVDQU64(m16Z, m16)
	}
	bs := AllocLocal(16 * R) // per row: its four (bsum32[2p], bsum32[2p+1]) pairs
	accs := r16Accs(R)
	whileNonZero(name, nb, func() {
		isum := make([]VecVirtual, R)
		for j := range 8 {
			sc := ZMM()
			VPMOVZXBD(Mem{Base: w, Disp: 64 + 16*j}, sc)
			var qh VecVirtual
			if five {
				qh = ZMM()
				VMOVDQU64(Mem{Base: w, Disp: 2368 + 64*j}, qh)
			}
			for t := range 4 {
				c := 4*j + t
				r16Prefetch(w, c, gbb)
				lo, hi := r16Nibbles(Mem{Base: w, Disp: 320 + 64*c}, m4)
				if five {
					or := func(t, q VecVirtual) { VPTERNLOGD(U8(0xf8), m16, t, q) } // q |= t & m16
					r16HighBit(qh, 2*t, lo, ZMM, or)
					r16HighBit(qh, 2*t+1, hi, ZMM, or)
				}
				r16Dots(xm, accs, j, c, lo, hi, t == 0)
			}
			r16Scale(sc, accs, j, isum, j == 0)
		}
		// mins: imin = Σ_j m_j·(bsums[2j] + bsums[2j+1])
		for r := range R {
			pw := YMM()
			VPMADDWD(xm(r, 260), ones, pw)
			pq := XMM()
			VPMOVDW(pw, pq)
			VMOVDQU32(pq, bs.Offset(16*r))
		}
		imin := make([]VecVirtual, R)
		for r := range R {
			imin[r] = accs[r][0]
			VPXORD(imin[r], imin[r], imin[r])
		}
		for p := range 4 {
			mn := ZMM()
			VPMOVZXBW(Mem{Base: w, Disp: 192 + 32*p}, mn)
			for r := range R {
				VPDPWSSD_BCST(bs.Offset(16*r+4*p), mn, imin[r])
			}
		}
		dv, dmv := ZMM(), ZMM()
		VCVTPH2PS(Mem{Base: w}, dv)
		VCVTPH2PS(Mem{Base: w, Disp: 32}, dmv)
		for r := range R {
			dd, dm, o := ZMM(), ZMM(), ZMM()
			VMULPS_BCST(xm(r, 0), dv, dd)
			VMULPS_BCST(xm(r, 0), dmv, dm)
			VCVTDQ2PS(isum[r], isum[r])
			VCVTDQ2PS(imin[r], imin[r])
			VMOVUPS(om(r, 0), o)
			VFMADD231PS(dd, isum[r], o)
			VFNMADD231PS(dm, imin[r], o)
			VMOVUPS(o, om(r, 0))
		}
		nextBlock(nb, w, gbb, xs...)
	})
	VZEROUPPER()
	RET()
	return name
}

// r16HighBit ORs bit b of each byte of the Q5_K fifth bits qh (see
// pkg/kernels/layout.go), moved to bit 4, into the nibbles q: or(t, q) sets
// q |= t & (16 in every byte). Word shifts suffice: the mask drops the bits
// that cross into the neighbouring byte.
func r16HighBit(qh VecVirtual, b int, q VecVirtual, alloc func() VecVirtual, or func(t, q VecVirtual)) {
	t := qh
	switch {
	case b < 4:
		t = alloc()
		VPSLLW(U8(4-b), qh, t)
	case b > 4:
		t = alloc()
		VPSRLW(U8(b-4), qh, t)
	}
	or(t, q)
}

func q6kR16AVX512(R int) string {
	name := fmt.Sprintf("r16Q6Kx%dAVX512Asm", R)
	w, nb, xm, om, xs := r16Prolog(name, "Q6_K", R)
	m4, m30 := ZMM(), ZMM()
	VMOVDQU64(m4Z, m4)
	VMOVDQU64(m30Z, m30)
	accs := r16Accs(R)
	whileNonZero(name, nb, func() {
		isum := zeroed(R, ZMM, VPXORD)
		for p := range 8 {
			// (sc[2p], sc[2p+1]) as int16 pairs; the offset term
			// -32·(sc[2p]·bsums[2p] + sc[2p+1]·bsums[2p+1]) goes straight
			// into isum.
			scp, nsc := ZMM(), ZMM()
			VPMOVSXBW(Mem{Base: w, Disp: 32 + 32*p}, scp)
			VPSLLW(U8(5), scp, nsc)
			zero := ZMM()
			VPXORD(zero, zero, zero)
			VPSUBW(nsc, zero, nsc)
			for r := range R {
				VPDPWSSD_BCST(xm(r, 260+4*p), nsc, isum[r])
			}
			for e := range 2 {
				j := 2*p + e
				sc := ZMM()
				if e == 0 {
					VPSLLD(U8(16), scp, sc)
					VPSRAD(U8(16), sc, sc)
				} else {
					VPSRAD(U8(16), scp, sc)
				}
				qh := ZMM()
				VMOVDQU64(Mem{Base: w, Disp: 2336 + 64*j}, qh)
				for half := range 2 {
					c := 2*j + half
					r16Prefetch(w, c, 3360)
					lo, hi := r16Nibbles(Mem{Base: w, Disp: 288 + 64*c}, m4)
					for i, q := range []VecVirtual{lo, hi} {
						s := 2*half + i // bits 2s, 2s+1 of qh, moved to 4, 5
						t := qh
						switch {
						case s < 2:
							t = ZMM()
							VPSLLW(U8(4-2*s), qh, t)
						case s == 3:
							t = ZMM()
							VPSRLW(U8(2), qh, t)
						}
						VPTERNLOGD(U8(0xf8), m30, t, q) // q |= t & m30
					}
					r16Dots(xm, accs, j, c, lo, hi, half == 0)
				}
				r16Scale(sc, accs, j, isum, false)
			}
		}
		dv := ZMM()
		VCVTPH2PS(Mem{Base: w}, dv)
		for r := range R {
			dd, o := ZMM(), ZMM()
			VMULPS_BCST(xm(r, 0), dv, dd)
			VCVTDQ2PS(isum[r], isum[r])
			VMOVUPS(om(r, 0), o)
			VFMADD231PS(dd, isum[r], o)
			VMOVUPS(o, om(r, 0))
		}
		nextBlock(nb, w, 3360, xs...)
	})
	VZEROUPPER()
	RET()
	return name
}
