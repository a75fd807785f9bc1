package main

import (
	"fmt"
	"strings"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The AVX2 tier of the LayoutR16 kernels: the same layout, the same
// arithmetic (dotR16Generic, bit for bit) as r16.go and r16legacy.go, on
// hosts without AVX-512 or VNNI, so that one packed file runs on both.
//
// A group's 16 rows are two 256-bit halves of 8 int32 lanes (rows 0-7 at
// byte 32h of each 64-byte chunk, h = 0, then rows 8-15). Each half is
// computed on its own, block by block: the activation dwords are broadcast
// (from L1) once per half, the weights are read once. VNNI's VPDPBUSD
// becomes VPMADDUBSW (unsigned weight bytes × signed activation bytes →
// int16 sums of adjacent pairs, saturating) and VPMADDWD (int16 pairs →
// int32). Saturation is what bounds the grouping, for every int8
// activation (-128 included):
//
//   - 4-bit quants (Q4_K, Q4_0, Q4_1; ≤ 15): a pair is at most 2·15·128 =
//     3840 in magnitude, so the int16 sums of 8 VPMADDUBSW (a Q4_K
//     sub-block of 32 columns, a Q4_0 block) stay below 32767 and are
//     added with VPADDW; one VPMADDWD then multiplies them by the sub-block
//     scale (Q4_K: the scale repeated in both words of a lane) or by 1
//     (Q4_0, Q4_1).
//   - 5-bit quants (Q5_K, Q5_0, Q5_1; ≤ 31): a pair is at most 7936, so 4
//     VPMADDUBSW (two chunks, half a Q5_K sub-block or a Q5_0/Q5_1 block)
//     go into each VPMADDWD by the scale (by 1 for Q5_0 and Q5_1).
//   - Q6_K's 6-bit quants (≤ 63): a pair is at most 16128, two chunks
//     (a sub-block of 16 columns) 32256; the sub-block's two int16 sums each
//     take one VPMADDWD by its scale.
//   - Q8_0's unsigned quants u = q+128 (≤ 255) would overflow a pair
//     (2·255·127), so they are split into nibbles, u = 16·hi + lo, each as
//     Q4_0's: the block's int16 sums of lo and of hi are multiplied by 1
//     and 16 with VPMADDWD. (ggml's sign trick, |q| × sign(x, q), would
//     need the activation never be -128, and three multiplier-port
//     instructions per product vector instead of two.)
//
// Every integer sum is thus exact and equals the reference's; the float
// steps are the reference's per lane (one conversion and one fused
// multiply-add by d·dx per block, two for Q4_K, Q5_K, Q4_1 and Q5_1), so the
// results are the reference twin's bit for bit, as the VNNI kernels'.
//
// 16 vector registers hold at most 4 activation rows (per row: an int16
// and an int32 sum, Q8_0 two int16 sums), so this tier's kernels take 1, 2
// and 4 rows; r16Run runs the 4-row one twice for 8. Q6_K's kernels keep one
// int32 sum per row, and take 8 rows too (its unpacking, a third of the
// work at 4 rows, is shared by twice as many: 9% more GOP/s). The float
// sums live in out (k-quants, and the 4-row 32-column kernels) or in
// registers (1 and 2 rows of Q4_0 and Q8_0).

var (
	r16ScDupY  Mem    // Q4_K: scale byte k of a broadcast qword to both words of dword k (k = 0..3 low lane, 4..7 high)
	r16ScPairY [2]Mem // Q6_K: word e of each dword (sc[2p], sc[2p+1]) to both its words
	r16W16Y    Mem    // 16 × int16(16)
)

// r16AVX2Consts declares the constants of these kernels.
func r16AVX2Consts() {
	r16ScDupY = GLOBL("r16scdup", RODATA|NOPTR)
	for i := range 32 {
		v := 0x80 // zero
		if i%2 == 0 {
			v = 4*(i/16) + i%16/4
		}
		DATA(i, U8(v))
	}
	for e := range 2 {
		r16ScPairY[e] = GLOBL(fmt.Sprintf("r16scpair_%d", e), RODATA|NOPTR)
		for i := range 32 {
			DATA(i, U8(4*(i%16/4)+2*e+i%2))
		}
	}
	r16W16Y = splat64("r16w16", 32, 0x0010001000100010)
}

// r16AVX2 generates the AVX2 r16 kernels of every LayoutR16 format, for 1, 2
// and 4 activation rows (Q6_K also 8).
func r16AVX2() {
	r16AVX2Consts()
	var q4k, q5k, q6k []string
	legacy := map[string][]string{}
	for _, R := range []int{1, 2, 4} {
		q4k = append(q4k, q4kR16AVX2(R, false))
		q5k = append(q5k, q4kR16AVX2(R, true))
		q6k = append(q6k, q6kR16AVX2(R))
		for _, typ := range r16LegacyTypes {
			legacy[typ] = append(legacy[typ], r16LegacyAVX2(typ, R))
		}
	}
	q6k = append(q6k, q6kR16AVX2(8))
	wrapR16("r16Q4KAVX2", "Q4_K", "r16Q4KBlock", "q8KBytes", q4k)
	wrapR16("r16Q5KAVX2", "Q5_K", "r16Q5KBlock", "q8KBytes", q5k)
	wrapR16("r16Q6KAVX2", "Q6_K", "r16Q6KBlock", "q8KBytes", q6k)
	for _, typ := range r16LegacyTypes {
		wrapR16("r16"+typ+"AVX2", typ, "r16"+typ+"Block", "q8R16Bytes", legacy[typ])
	}
	quantQ8R16AVX2(false)
	quantQ8R16AVX2(true)
}

// r16AVX2Prolog declares the AVX2 r16 kernel name for R activation rows of
// the kind xkind against groups of typ (nb blocks of what), loads the
// parameters and, if zeroOut, zeroes the R output rows.
func r16AVX2Prolog(name, typ, what, xkind string, R int, zeroOut bool) (w, nb Register, xm, om func(r, disp int) Mem, xs []Register) {
	kernel(name, "func(w *byte, nb int, x *byte, xstride int, out *float32, ostride int)",
		fmt.Sprintf("%s sets out[r·ostride : r·ostride+16] to the dots of the 16 rows of a", name),
		fmt.Sprintf("LayoutR16 %s group (nb %s at w) with the %d %s x + r·xstride.", typ, what, R, xkind))
	w, nb = Load(Param("w"), GP64()), Load(Param("nb"), GP64())
	x0, xst := Load(Param("x"), GP64()), Load(Param("xstride"), GP64())
	xm, x4 := stridedRows(x0, xst, R)
	xs = []Register{x0}
	if x4 != nil {
		xs = append(xs, x4)
	}
	if zeroOut {
		om = r16AVX2Out(R)
		zero := YMM()
		VPXOR(zero, zero, zero)
		for r := range R {
			VMOVUPS(zero, om(r, 0))
			VMOVUPS(zero, om(r, 32))
		}
	}
	return w, nb, xm, om, xs
}

// r16AVX2Out loads the out and ostride parameters and returns the
// addressing of output row r.
func r16AVX2Out(R int) func(r, disp int) Mem {
	o0, ost := Load(Param("out"), GP64()), Load(Param("ostride"), GP64())
	SHLQ(U8(2), ost)
	om, _ := stridedRows(o0, ost, R)
	return om
}

// r16AVX2Nibbles loads the 32 bytes at m (one half of a chunk) and splits
// them into their low and high nibbles.
func r16AVX2Nibbles(m Mem, m4 Op) (lo, hi VecVirtual) {
	lo, hi = YMM(), YMM()
	VMOVDQU(m, lo)
	VPSRLW(U8(4), lo, hi)
	VPAND(m4, lo, lo)
	VPAND(m4, hi, hi)
	return lo, hi
}

// r16AVX2MulAdd adds the int16 pair sums of the unsigned bytes q times the
// activation dword at x (broadcast) to *acc, or sets *acc to them if it is
// nil.
func r16AVX2MulAdd(x Mem, q VecVirtual, acc *VecVirtual) {
	xb := YMM()
	VPBROADCASTD(x, xb)
	if *acc == nil {
		*acc = YMM()
		VPMADDUBSW(xb, q, *acc)
		return
	}
	VPMADDUBSW(xb, q, xb)
	VPADDW(xb, *acc, *acc)
}

// r16AVX2Prefetch touches share i (of n) of the cache lines of the group
// block ahead blocks (gbb bytes each) past w.
func r16AVX2Prefetch(w Register, i, n, ahead, gbb int) {
	if ahead == 0 {
		return
	}
	lines := (gbb + 63) / 64
	for l := i * lines / n; l < (i+1)*lines/n; l++ {
		PREFETCHT0(Mem{Base: w, Disp: ahead*gbb + 64*l})
	}
}

// r16AVX2Accumulate adds d·dx·s (and, with m, less dm·dx·m) to the output
// half h of row r: s and m are int32 sums, d and dm the half's float32
// scales; dx is the activation row's scale at xm(r, 0).
func r16AVX2Accumulate(xm, om func(r, disp int) Mem, r, h int, d, s, dm, m VecVirtual) {
	dx, dd, o := YMM(), YMM(), YMM()
	VBROADCASTSS(xm(r, 0), dx)
	VMULPS(dx, d, dd)
	VCVTDQ2PS(s, s)
	VMOVUPS(om(r, 32*h), o)
	VFMADD231PS(dd, s, o)
	if dm != nil {
		VMULPS(dx, dm, dd)
		VCVTDQ2PS(m, m)
		VFNMADD231PS(dd, m, o)
	}
	VMOVUPS(o, om(r, 32*h))
}

// q4kR16AVX2 generates the Q4_K kernel or, with five, the Q5_K one. Q5_K's
// quants reach 31, a pair 2·31·128 = 7936: its int16 sums take 4
// VPMADDUBSW (two chunks) before their VPMADDWD by the scale, Q4_K's 8.
func q4kR16AVX2(R int, five bool) string {
	typ, gbb := "Q4_K", 2368
	if five {
		typ, gbb = "Q5_K", 2880
	}
	name := fmt.Sprintf("r16%sx%dAVX2Asm", strings.ReplaceAll(typ, "_", ""), R)
	w, nb, xm, om, xs := r16AVX2Prolog(name, typ, "super-blocks", "Q8_K rows", R, true)
	m4 := YMM()
	VMOVDQU(m4Z, m4)
	bs := AllocLocal(16 * R) // per row: bsum32[j] = bsums[2j] + bsums[2j+1], int16
	whileNonZero(name, nb, func() {
		for r := range R {
			p := YMM()
			VMOVDQU(xm(r, 260), p)
			VPMADDWD(ones16Y, p, p)
			hi := XMM()
			VEXTRACTI128(U8(1), p, hi)
			VPACKSSDW(hi, p.AsX(), hi) // |bsum32| ≤ 32·128: no saturation
			VMOVDQU(hi, bs.Offset(16*r))
		}
		if R == 1 && !five {
			q4kR16AVX2OneRow(w, xm, om, bs, m4, gbb)
			nextBlock(nb, w, gbb, xs...)
			return
		}
		for h := range 2 {
			isum := make([]VecVirtual, R)
			for j := range 8 {
				sc := YMM()
				VPBROADCASTQ(Mem{Base: w, Disp: 64 + 16*j + 8*h}, sc)
				VPSHUFB(r16ScDupY, sc, sc)
				var qh VecVirtual
				if five {
					qh = YMM()
					VMOVDQU(Mem{Base: w, Disp: 2368 + 64*j + 32*h}, qh)
				}
				acc := make([]VecVirtual, R)
				for t := range 4 {
					c := 4*j + t
					r16AVX2Prefetch(w, 32*h+c, 64, *r16PrefetchBlocks, gbb)
					lo, hi := r16AVX2Nibbles(Mem{Base: w, Disp: 320 + 64*c + 32*h}, m4)
					if five {
						or := func(t, q VecVirtual) {
							if t != qh {
								VPAND(m16Z, t, t)
							} else {
								t = YMM()
								VPAND(m16Z, qh, t)
							}
							VPOR(t, q, q)
						}
						r16HighBit(qh, 2*t, lo, YMM, or)
						r16HighBit(qh, 2*t+1, hi, YMM, or)
					}
					for r := range R {
						r16AVX2MulAdd(xm(r, 4+8*c), lo, &acc[r])
						r16AVX2MulAdd(xm(r, 8+8*c), hi, &acc[r])
					}
					if t != 3 && (!five || t != 1) {
						continue
					}
					for r := range R {
						if isum[r] == nil {
							isum[r] = acc[r]
							VPMADDWD(sc, acc[r], isum[r])
						} else {
							VPMADDWD(sc, acc[r], acc[r])
							VPADDD(acc[r], isum[r], isum[r])
						}
						acc[r] = nil
					}
				}
			}
			// mins: imin = Σ_p (m[2p], m[2p+1]) · (bsum32[2p], bsum32[2p+1])
			imin := make([]VecVirtual, R)
			for p := range 4 {
				mn := YMM()
				VPMOVZXBW(Mem{Base: w, Disp: 192 + 32*p + 16*h}, mn)
				for r := range R {
					b := YMM()
					VPBROADCASTD(bs.Offset(16*r+4*p), b)
					VPMADDWD(mn, b, b)
					if p == 0 {
						imin[r] = b
						continue
					}
					VPADDD(b, imin[r], imin[r])
				}
			}
			dv, dmv := YMM(), YMM()
			VCVTPH2PS(Mem{Base: w, Disp: 16 * h}, dv)
			VCVTPH2PS(Mem{Base: w, Disp: 32 + 16*h}, dmv)
			for r := range R {
				r16AVX2Accumulate(xm, om, r, h, dv, isum[r], dmv, imin[r])
			}
		}
		nextBlock(nb, w, gbb, xs...)
	})
	VZEROUPPER()
	RET()
	return name
}

// q4kR16AVX2OneRow is the body of q4kR16AVX2's one-row Q4_K kernel (decode),
// with the chunks in the outer loop and the halves inside: each activation
// dword is broadcast once for both halves, and the two halves' independent
// sums interleave (the other kernels broadcast it once per half, as their
// registers hold one half's sums for every row). 12% fewer ns per group in
// cache. The prefetches still go out in address order (share 2c+h at
// chunk-half 2c+h): issued as the multi-row kernels number them (32h+c,
// i.e. the two halves of the block ahead at once) the same loop read from
// DRAM slower than the old one in 5 of 6 alternating runs (by up to 20%).
func q4kR16AVX2OneRow(w Register, xm, om func(r, disp int) Mem, bs Mem, m4 VecVirtual, gbb int) {
	var isum [2]VecVirtual
	for j := range 8 {
		var sc, acc [2]VecVirtual
		for h := range 2 {
			sc[h] = YMM()
			VPBROADCASTQ(Mem{Base: w, Disp: 64 + 16*j + 8*h}, sc[h])
			VPSHUFB(r16ScDupY, sc[h], sc[h])
		}
		for t := range 4 {
			c := 4*j + t
			xlo, xhi := YMM(), YMM()
			VPBROADCASTD(xm(0, 4+8*c), xlo)
			VPBROADCASTD(xm(0, 8+8*c), xhi)
			for h := range 2 {
				r16AVX2Prefetch(w, 2*c+h, 64, *r16PrefetchBlocks, gbb)
				lo, hi := r16AVX2Nibbles(Mem{Base: w, Disp: 320 + 64*c + 32*h}, m4)
				p := YMM()
				if acc[h] == nil {
					acc[h] = YMM()
					VPMADDUBSW(xlo, lo, acc[h])
				} else {
					VPMADDUBSW(xlo, lo, p)
					VPADDW(p, acc[h], acc[h])
				}
				VPMADDUBSW(xhi, hi, p)
				VPADDW(p, acc[h], acc[h])
			}
		}
		for h := range 2 {
			if isum[h] == nil {
				isum[h] = acc[h]
				VPMADDWD(sc[h], acc[h], isum[h])
			} else {
				VPMADDWD(sc[h], acc[h], acc[h])
				VPADDD(acc[h], isum[h], isum[h])
			}
		}
	}
	for h := range 2 {
		var imin VecVirtual
		for p := range 4 {
			mn, b := YMM(), YMM()
			VPMOVZXBW(Mem{Base: w, Disp: 192 + 32*p + 16*h}, mn)
			VPBROADCASTD(bs.Offset(4*p), b)
			VPMADDWD(mn, b, b)
			if p == 0 {
				imin = b
				continue
			}
			VPADDD(b, imin, imin)
		}
		dv, dmv := YMM(), YMM()
		VCVTPH2PS(Mem{Base: w, Disp: 16 * h}, dv)
		VCVTPH2PS(Mem{Base: w, Disp: 32 + 16*h}, dmv)
		r16AVX2Accumulate(xm, om, 0, h, dv, isum[h], dmv, imin)
	}
}

func q6kR16AVX2(R int) string {
	name := fmt.Sprintf("r16Q6Kx%dAVX2Asm", R)
	w, nb, xm, om, xs := r16AVX2Prolog(name, "Q6_K", "super-blocks", "Q8_K rows", R, true)
	var m4 Op = m4Z // 8 rows: one register short
	if R < 8 {
		r := YMM()
		VMOVDQU(m4Z, r)
		m4 = r
	}
	whileNonZero(name, nb, func() {
		for h := range 2 {
			isum := zeroed(R, YMM, vpxor)
			for p := range 8 {
				// (sc[2p], sc[2p+1]) as int16 pairs; the offset term
				// -32·(sc[2p]·bsums[2p] + sc[2p+1]·bsums[2p+1]) goes straight
				// into isum.
				scp, t := YMM(), YMM()
				VPMOVSXBW(Mem{Base: w, Disp: 32 + 32*p + 16*h}, scp)
				VPSLLW(U8(5), scp, t)
				for r := range R {
					b := YMM()
					VPBROADCASTD(xm(r, 260+4*p), b)
					VPMADDWD(t, b, b)
					VPSUBD(b, isum[r], isum[r])
				}
				for e := range 2 {
					j := 2*p + e
					sc, qh := YMM(), YMM()
					VPSHUFB(r16ScPairY[e], scp, sc)
					VMOVDQU(Mem{Base: w, Disp: 2336 + 64*j + 32*h}, qh)
					for half := range 2 {
						c := 2*j + half
						r16AVX2Prefetch(w, 32*h+c, 64, *r16PrefetchBlocks, 3360)
						lo, hi := r16AVX2Nibbles(Mem{Base: w, Disp: 288 + 64*c + 32*h}, m4)
						for i, q := range []VecVirtual{lo, hi} {
							s := 2*half + i // bits 2s, 2s+1 of qh, moved to 4, 5
							b := YMM()
							switch {
							case s < 2:
								VPSLLW(U8(4-2*s), qh, b)
								VPAND(m30Z, b, b)
							case s == 2:
								VPAND(m30Z, qh, b)
							default:
								VPSRLW(U8(2), qh, b)
								VPAND(m30Z, b, b)
							}
							VPOR(b, q, q)
						}
						for r := range R {
							var a VecVirtual
							r16AVX2MulAdd(xm(r, 4+8*c), lo, &a)
							r16AVX2MulAdd(xm(r, 8+8*c), hi, &a)
							VPMADDWD(sc, a, a)
							VPADDD(a, isum[r], isum[r])
						}
					}
				}
			}
			dv := YMM()
			VCVTPH2PS(Mem{Base: w, Disp: 16 * h}, dv)
			for r := range R {
				r16AVX2Accumulate(xm, om, r, h, dv, isum[r], nil, nil)
			}
		}
		nextBlock(nb, w, 3360, xs...)
	})
	VZEROUPPER()
	RET()
	return name
}

// r16LegacyAVX2 generates the AVX2 r16 kernel of typ (Q4_0, Q4_1, Q5_0,
// Q5_1 or Q8_0) for R activation rows. Q5_0's and Q5_1's int16 sums are
// two, of chunks 0-1 and 2-3 (lo16 and hi16, each by 1), Q8_0's of the low
// and high nibbles (by 1 and 16). Q4_0's and Q4_1's are formed for both
// halves in one pass (r16AVX2Halves4); the others' registers do not hold
// both halves' sums (Q8_0's, which would for two rows, gained nothing).
func r16LegacyAVX2(typ string, R int) string {
	gbb, chunks := r16LegacyShape(typ)
	q4 := chunks == 4 // nibbles
	minAt, five := r16LegacyParts(typ)
	withMin := minAt > 0
	name := fmt.Sprintf("r16%sx%dAVX2Asm", typ, R)
	inRegs := R <= 2 // the float sums: in registers, else in out
	w, nb, xm, om, xs := r16AVX2Prolog(name, typ, "blocks of 32 columns", "activation rows (q8R16Bytes blocks)", R, !inRegs)
	m4 := YMM()
	VMOVDQU(m4Z, m4)
	var outs [][2]VecVirtual
	if inRegs {
		outs = make([][2]VecVirtual, R)
		for r := range outs {
			for h := range 2 {
				outs[r][h] = YMM()
				VXORPS(outs[r][h], outs[r][h], outs[r][h])
			}
		}
	}
	whileNonZero(name, nb, func() {
		var both [][2]VecVirtual // Q4_0, Q4_1: both halves' int16 sums in one pass
		if q4 && !five {
			both = r16AVX2Halves4(w, xm, m4, chunks, gbb, R)
		}
		for h := range 2 {
			lo16, hi16 := make([]VecVirtual, R), make([]VecVirtual, R) // int16 sums
			var qh VecVirtual
			if both != nil {
				for r := range R {
					lo16[r] = both[r][h]
				}
			}
			if five {
				qh = YMM()
				VMOVDQU(Mem{Base: w, Disp: 288 + 32*h}, qh)
			}
			perHalf := chunks
			if both != nil {
				perHalf = 0 // formed above
			}
			for c := range perHalf {
				r16AVX2Prefetch(w, chunks*h+c, 2*chunks, 8**r16PrefetchBlocks, gbb)
				lo, hi := r16AVX2Nibbles(Mem{Base: w, Disp: 32 + 64*c + 32*h}, m4)
				if five {
					or := func(t, q VecVirtual) {
						if t != qh {
							VPAND(m16Z, t, t)
						} else {
							t = YMM()
							VPAND(m16Z, qh, t)
						}
						VPOR(t, q, q)
					}
					r16HighBit(qh, 2*c, lo, YMM, or)
					r16HighBit(qh, 2*c+1, hi, YMM, or)
				}
				for r := range R {
					if q4 {
						// Byte i of a row: column 4c+i low, 16+4c+i high.
						acc := &lo16[r]
						if five && c >= 2 {
							acc = &hi16[r]
						}
						r16AVX2MulAdd(xm(r, 8+4*c), lo, acc)
						r16AVX2MulAdd(xm(r, 8+16+4*c), hi, acc)
						continue
					}
					// Column 4c+i: u = 16·hi + lo.
					xb := YMM()
					VPBROADCASTD(xm(r, 8+4*c), xb)
					for _, v := range []struct {
						q   VecVirtual
						acc *VecVirtual
					}{{lo, &lo16[r]}, {hi, &hi16[r]}} {
						if *v.acc == nil {
							*v.acc = YMM()
							VPMADDUBSW(xb, v.q, *v.acc)
							continue
						}
						p := YMM()
						VPMADDUBSW(xb, v.q, p)
						VPADDW(p, *v.acc, *v.acc)
					}
				}
			}
			dv := YMM()
			VCVTPH2PS(Mem{Base: w, Disp: 16 * h}, dv)
			var mv VecVirtual
			if withMin {
				mv = YMM()
				VCVTPH2PS(Mem{Base: w, Disp: minAt + 16*h}, mv)
			}
			for r := range R {
				s := lo16[r]
				VPMADDWD(ones16Y, s, s)
				switch {
				case five:
					VPMADDWD(ones16Y, hi16[r], hi16[r])
					VPADDD(hi16[r], s, s)
				case !q4:
					VPMADDWD(r16W16Y, hi16[r], hi16[r])
					VPADDD(hi16[r], s, s)
				}
				if !withMin {
					st := YMM()
					VPBROADCASTD(xm(r, 4), st) // -o·Σx
					VPADDD(st, s, s)
				}
				if !inRegs && !withMin {
					r16AVX2Accumulate(xm, om, r, h, dv, s, nil, nil)
					continue
				}
				o := outs2(outs, r, h, inRegs, om)
				dd := YMM()
				VBROADCASTSS(xm(r, 0), dd)
				VMULPS(dd, dv, dd)
				VCVTDQ2PS(s, s)
				VFMADD231PS(dd, s, o)
				if withMin {
					sb := YMM()
					VBROADCASTSS(xm(r, 4), sb)
					VFMADD231PS(mv, sb, o) // m·s
				}
				if !inRegs {
					VMOVUPS(o, om(r, 32*h))
				}
			}
		}
		ADDQ(U32(gbb), w)
		for _, x := range xs {
			ADDQ(U32(q8R16Bytes), x)
		}
		DECQ(nb)
	})
	if inRegs {
		om = r16AVX2Out(R)
		for r := range R {
			VMOVUPS(outs[r][0], om(r, 0))
			VMOVUPS(outs[r][1], om(r, 32))
		}
	}
	VZEROUPPER()
	RET()
	return name
}

// outs2 returns the float sums of half h of row r: a register (inRegs) or
// one loaded from out, which the caller stores back.
func outs2(outs [][2]VecVirtual, r, h int, inRegs bool, om func(r, disp int) Mem) VecVirtual {
	if inRegs {
		return outs[r][h]
	}
	o := YMM()
	VMOVUPS(om(r, 32*h), o)
	return o
}

// quantQ8R16AVX2 generates the AVX2 activation encoder of the Q4_0, Q5_0
// and Q8_0 kernels or, with withS, of the Q4_1 and Q5_1 ones, quantQ8R16AVX512's
// steps on four 8-float vectors per block (see there for the rounding and
// s): the same bytes as the reference for finite input.
// (BenchmarkQuantize/Q8_0_r16: 2.3 µs for 4096 floats, the Go encoder 22 µs,
// 5.4 ns a float; the AVX2 kernels take ~13 ns per input float of a
// 2048-row matrix, so the Go encoder would add 40% to them.)
func quantQ8R16AVX2(withS bool) {
	x, y, nb, neg, label := r16EncoderProlog("AVX2", withS)
	absm, signm, one, half, perm := YMM(), YMM(), YMM(), YMM(), YMM()
	VPCMPEQD(absm, absm, absm)
	VPSLLD(U8(31), absm, signm)
	VPSRLD(U8(1), absm, absm)
	VBROADCASTSS(oneF, one)
	VBROADCASTSS(halfF, half)
	VMOVDQU(packPermY, perm)
	whileNonZero(label, nb, func() {
		// amax over the block, in lane 0
		a := YMM()
		VANDPS(Mem{Base: x}, absm, a)
		for i := 1; i < 4; i++ {
			t := YMM()
			VANDPS(Mem{Base: x, Disp: 32 * i}, absm, t)
			VMAXPS(t, a, a)
		}
		ax := XMM()
		VEXTRACTF128(U8(1), a, ax)
		VMAXPS(ax, a.AsX(), ax)
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
		idv := YMM()
		VBROADCASTSS(id, idv)
		du := r16KeepD(d, withS)
		// d through float16
		VCVTPS2PH(U8(0), d, d)
		VCVTPH2PS(d, d)
		VMOVSS(d, Mem{Base: y})
		var qs [4]VecVirtual
		for h := range 4 {
			p, tr, f := YMM(), YMM(), YMM()
			VMULPS(Mem{Base: x, Disp: 32 * h}, idv, p)
			VROUNDPS(U8(0x0b), p, tr) // truncate, no precision exception
			VSUBPS(tr, p, f)
			VANDPS(absm, f, f)
			VCMPPS(U8(0x1d), half, f, f) // GE_OQ: |p - t| >= 0.5
			s := YMM()
			VANDPS(signm, p, s)
			VORPS(one, s, s)
			VANDPS(f, s, s)
			VADDPS(s, tr, tr) // t ± 1 where rounding away from zero
			VCVTTPS2DQ(tr, tr)
			qs[h] = tr
		}
		// -o·Σq
		s0, s1 := YMM(), YMM()
		VPADDD(qs[1], qs[0], s0)
		VPADDD(qs[3], qs[2], s1)
		VPADDD(s1, s0, s0)
		sx := XMM()
		VEXTRACTI128(U8(1), s0, sx)
		VPADDD(sx, s0.AsX(), sx)
		t2 := XMM()
		VPSHUFD(U8(0x4e), sx, t2)
		VPADDD(t2, sx, sx)
		VPSHUFD(U8(0xb1), sx, t2)
		VPADDD(t2, sx, sx)
		r16StoreSum(sx, neg, du, Mem{Base: y, Disp: 4})
		// the quants, |q| ≤ 127: the packs do not saturate
		VPACKSSDW(qs[1], qs[0], qs[0])
		VPACKSSDW(qs[3], qs[2], qs[2])
		VPACKSSWB(qs[2], qs[0], qs[0])
		VPERMD(qs[0], perm, qs[0])
		VMOVDQU(qs[0], Mem{Base: y, Disp: 8})
		ADDQ(U32(128), x)
		ADDQ(U32(q8R16Bytes), y)
		DECQ(nb)
	})
	VZEROUPPER()
	RET()
}

// r16AVX2Halves4 is the chunk loop of r16LegacyAVX2's 4-bit kernels (Q4_0,
// Q4_1) for one group block, with the two halves of the group inside the
// chunk loop: each activation dword is broadcast once for all 16 rows
// instead of once per half (the one-row Q4_K kernel's order). It returns
// the int16 sums of row r's half h, the ones the per-half loop forms, added
// in the same order. Registers: two sums per row, the two halves' raw
// weights and one nibble of each, the mask, the broadcast and a product:
// 2R + 7 ≤ 16 for R ≤ 4. On an AVX2-only AMD EPYC (Zen 3) this took the
// Q4_0 4-row kernel from 173 to 189–192 GOP/s (BenchmarkR16Kernel, medians
// of ten alternating rounds) and the 1B Q4_0 prefill from 130 to 149 tok/s.
func r16AVX2Halves4(w Register, xm func(r, disp int) Mem, m4 VecVirtual, chunks, gbb, R int) [][2]VecVirtual {
	acc := make([][2]VecVirtual, R)
	for c := range chunks {
		r16AVX2Prefetch(w, c, chunks, 8**r16PrefetchBlocks, gbb)
		var raw, q [2]VecVirtual
		for h := range 2 {
			raw[h] = YMM()
			VMOVDQU(Mem{Base: w, Disp: 32 + 64*c + 32*h}, raw[h])
		}
		// Byte i of a row: column 4c+i low nibble, 16+4c+i high.
		for part, disp := range []int{8 + 4*c, 8 + 16 + 4*c} {
			for h := range 2 {
				q[h] = YMM()
				if part == 0 {
					VPAND(m4, raw[h], q[h])
				} else {
					VPSRLW(U8(4), raw[h], q[h])
					VPAND(m4, q[h], q[h])
				}
			}
			for r := range R {
				xb := YMM()
				VPBROADCASTD(xm(r, disp), xb)
				for h := range 2 {
					if acc[r][h] == nil {
						acc[r][h] = YMM()
						VPMADDUBSW(xb, q[h], acc[r][h])
						continue
					}
					p := xb
					if h == 0 {
						p = YMM()
					}
					VPMADDUBSW(xb, q[h], p)
					VPADDW(p, acc[r][h], acc[r][h])
				}
			}
		}
	}
	return acc
}
