package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The ternary kernels (TQ1_0, TQ2_0) against Q8_K activations: in ggml's
// layout one row, rows (prefill) and cols (decode), for both tiers; in
// LayoutR16 (at the end of the file) for avx512vnni.
//
// The weights stay integers: a block is unpacked in registers into eight
// vectors of 32 trits t ∈ {0, 1, 2} (t = w+1), vector j holding elements
// 32j..32j+31 in byte order, so that it meets the activation bytes
// x.qs[32j:32j+32] as they lie. Σ t·x is then an unsigned × signed byte
// product (VPMADDUBSW into int16 on avx2, VPDPBUSD into int32 on avx512vnni)
// and Σ (t-1)·x = Σ t·x − Σ x, Σ x coming from the Q8_K block's bsums. The
// eight int32 lanes of a block are those of ggml's AVX2 kernels: lane l
// collects the products of bytes 4l..4l+3 of every vector (elements e with
// e%32/4 == l) minus bsums[2l] + bsums[2l+1]; one FMA per lane scales them
// by yd·d into the float accumulators. The integers are exact: an int16
// lane of the avx2 sum adds 16 products |t·x| ≤ 381 (t = 3, which TQ2_0
// never stores but a raw byte may hold, included) and subtracts 32 or
// fewer activations, far from 2¹⁵; VPMADDUBSW's pair sums (≤ 762) never
// saturate.
//
// The avx512vnni tier unpacks into zmm vectors of 64 trits (elements
// 64j..64j+63, tq1Wide and tq2Wide) and replaces the int16 chain
// (VPMADDUBSW, VPADDW, VPMADDWD) with one VPDPBUSD per vector and
// activation row; dword lanes l and 8+l of its sums hold the same elements
// (e%32/4 == l), so one fold gives the eight lanes above. On the host the
// project measures on, zmm operations run at full width: against ymm
// vectors (the avx2 unpacking with VPDPBUSD), the one-token TQ1_0 kernel
// went from 26 to 37 GOP/s per thread (medians of 6 alternating runs under
// load 7-8, 4096² in cache).

// ternOps are the instructions whose encoding differs between the tiers:
// the avx512vnni kernels may get registers Y16..Y31, which only EVEX forms
// take.
type ternOps struct {
	evex   bool
	and    func(a, b, c Op)
	insert func(i, a, b, c Op) // VINSERTI128: 128-bit lane i of c = a, the rest b
	zero   VecVirtual          // zero (TQ1_0's averages): a zmm on avx512vnni
}

func newTernOps(evex bool) *ternOps {
	o := &ternOps{evex: evex}
	if evex {
		o.and = func(a, b, c Op) { VPANDD(a, b, c) }
		o.insert = func(i, a, b, c Op) { VINSERTI32X4(i, a, b, c) }
	} else {
		o.and = func(a, b, c Op) { VPAND(a, b, c) }
		o.insert = func(i, a, b, c Op) { VINSERTI128(i, a, b, c) }
	}
	return o
}

// load moves the ymm (xmm: the xmm) at m into a new register.
func (o *ternOps) load(m Mem, xmm bool) VecVirtual {
	v := YMM()
	if xmm {
		v = XMM()
	}
	if o.evex {
		VMOVDQU64(m, v)
	} else {
		VMOVDQU(m, v)
	}
	return v
}

// like is a new register of v's size.
func like(v Register) VecVirtual {
	switch v.Size() {
	case 16:
		return XMM()
	case 64:
		return ZMM()
	}
	return YMM()
}

// times3 and times9 multiply bytes by 3 and 9 modulo 256 (x86 has no byte
// multiply: 9v = (v<<3 with the bits shifted across bytes masked off) + v).
func (o *ternOps) times3(v Register) VecVirtual {
	t := like(v)
	VPADDB(v, v, t)
	VPADDB(v, t, t)
	return t
}

func (o *ternOps) times9(v Register) VecVirtual {
	t := like(v)
	VPSLLW(U8(3), v, t)
	o.and(mF8Z, t, t)
	VPADDB(v, t, t)
	return t
}

// trit returns the top trit of each byte b of v, ⌊3b/256⌋, computed in
// bytes as ⌈(s + ⌈s/2⌉)/2⌉ >> 6 with s = b ∸ 1 (two rounding averages; equal
// to ⌊3b/256⌋ for all 256 byte values, checked exhaustively in
// pkg/kernels' tests of the twin model).
func (o *ternOps) trit(v VecVirtual) VecVirtual {
	t, u := like(v), like(v)
	zero, m3 := o.zero.AsY(), Op(m2Y)
	if v.Size() == 64 {
		zero, m3 = o.zero, m3Z
	}
	VPSUBUSB(ones8Z, v, t)
	VPAVGB(zero, t, u)
	VPAVGB(u, t, t)
	VPSRLW(U8(6), t, t)
	o.and(m3, t, t)
	return t
}

// trit64 is trit times 64: the top two bits of the same average, masked
// in place (one operation fewer; the kernel divides its exact sums by 64).
func (o *ternOps) trit64(v VecVirtual) VecVirtual {
	t, u := ZMM(), ZMM()
	VPSUBUSB(ones8Z, v, t)
	VPAVGB(o.zero, t, u)
	VPAVGB(u, t, t)
	VPANDD(mC0Z, t, t)
	return t
}

// tq1High returns the 16 bytes of a TQ1_0 block's qh (4 bytes at m) times
// 3^k: byte 4k+i is qh[i]·3^k mod 256, whose top trit is element 240+4k+i.
func (o *ternOps) tq1High(m Mem) VecVirtual {
	b := XMM()
	VPBROADCASTD(m, b)
	w := YMM()
	VPMOVZXBW(b, w)
	VPMULLW(tq1HMulY, w, w)
	o.and(lowBytesY, w, w)
	hi := XMM()
	if o.evex {
		VEXTRACTI32X4(U8(1), w, hi)
	} else {
		VEXTRACTI128(U8(1), w, hi)
	}
	VPACKUSWB(hi, w.AsX(), b)
	return b
}

// tq2Unpack calls use(j, t) for the eight trit vectors of the TQ2_0 block
// whose byte disp m(disp) addresses, in order: vector 4h+k is bits 2k..2k+1
// of the bytes of qs[32h:32h+32].
func (o *ternOps) tq2Unpack(m func(disp int) Mem, use func(j int, t VecVirtual)) {
	for h := range 2 {
		q := o.load(m(32*h), false)
		for k := range 4 {
			t := YMM()
			if k == 0 {
				o.and(m2Y, q, t)
			} else {
				VPSRLW(U8(2*k), q, t)
				o.and(m2Y, t, t)
			}
			use(4*h+k, t)
		}
	}
}

// tq1Unpack calls use(j, t) for the eight trit vectors of the TQ1_0 block
// whose byte disp m(disp) addresses, in order. With q = qs[0:32],
// r = qs[32:48] and h the qh bytes of tq1High, vector j < 5 holds the top
// trits of q·3^j; vector 5 those of [r, 3r], vector 6 of [9r, 27r],
// vector 7 of [81r, h] (the halves are 16 bytes each).
func (o *ternOps) tq1Unpack(m func(disp int) Mem, use func(j int, t VecVirtual)) {
	q := o.load(m(0), false)
	use(0, o.trit(q))
	q3 := o.times3(q)
	use(1, o.trit(q3))
	q9 := o.times9(q)
	use(2, o.trit(q9))
	use(3, o.trit(o.times9(q3)))
	use(4, o.trit(o.times9(q9)))
	r := o.load(m(32), true)
	rr := YMM()
	o.insert(U8(1), o.times3(r), r.AsY(), rr)
	use(5, o.trit(rr))
	r9 := o.times9(rr)
	use(6, o.trit(r9))
	hr := YMM()
	o.insert(U8(1), o.tq1High(m(48)), o.times9(r9.AsX()).AsY(), hr)
	use(7, o.trit(hr))
}

// The ternary kernels' constants.
var (
	ones8Z    Mem // 64 × 1
	m3Z       Mem // 64 × 3
	mF8Z      Mem // 64 × 0xf8
	cnt46Z    Mem // TQ2_0 avx512vnni: word shift counts 4 (low 256 bits), 6 (high)
	mC0Z      Mem // 64 × 0xc0
	neg64Z    Mem // 32 × int16(-64)
	lowBytesY Mem // 16 × uint16(0x00ff)
	tq1HMulY  Mem // 16 × uint16: 1 ×4, 3 ×4, 9 ×4, 27 ×4
)

func ternConsts() {
	ones8Z = splat64("ones8", 64, 0x0101010101010101)
	m3Z = splat64("m3z", 64, 0x0303030303030303)
	mF8Z = splat64("mf8", 64, 0xf8f8f8f8f8f8f8f8)
	mC0Z = splat64("mc0", 64, 0xc0c0c0c0c0c0c0c0)
	neg64Z = splat64("neg64", 64, 0xffc0ffc0ffc0ffc0)
	cnt46Z = GLOBL("cnt46", RODATA|NOPTR)
	for i := 0; i < 64; i += 2 {
		DATA(i, U16(4+2*(i/32)))
	}
	lowBytesY = splat64("lowbytes", 32, 0x00ff00ff00ff00ff)
	tq1HMulY = GLOBL("tq1hmul", RODATA|NOPTR)
	for i := range 16 {
		DATA(2*i, U16([4]int{1, 3, 9, 27}[i/4]))
	}
}

// tq2Wide is tq2Unpack in zmm vectors of 64 trits (avx512vnni): vector
// 2h+p holds vectors 4h+2p and 4h+2p+1 of tq2Unpack, i.e. elements
// 64(2h+p)..64(2h+p)+63, from qs[32h:32h+32] in both halves shifted by
// 4p (low) and 4p+2 (high).
func (o *ternOps) tq2Wide(m func(disp int) Mem, use func(j int, t VecVirtual)) {
	for h := range 2 {
		q := ZMM()
		VBROADCASTI64X4(m(32*h), q)
		for p, cnt := range []Mem{cntBZ, cnt46Z} {
			t := ZMM()
			VPSRLVW(cnt, q, t)
			VPANDD(m3Z, t, t)
			use(2*h+p, t)
		}
	}
}

// tq1Wide is tq1Unpack in zmm vectors of 64 trits (avx512vnni): the top
// trits of [q, 3q], [9q, 27q], [81q, r, 3r] and [9r, 27r, 81r, h].
func (o *ternOps) tq1Wide(m func(disp int) Mem, use func(j int, t VecVirtual)) {
	q := o.load(m(0), false)
	a := ZMM()
	VINSERTI64X4(U8(1), o.times3(q), q.AsZ(), a)
	use(0, o.trit(a))
	b := o.times9(a)
	use(1, o.trit(b))
	c := o.times9(b)
	r := o.load(m(32), true)
	rr := YMM()
	o.insert(U8(1), o.times3(r), r.AsY(), rr)
	VINSERTI64X4(U8(1), rr, c, c)
	use(2, o.trit(c))
	r9 := o.times9(rr)
	hr := YMM()
	o.insert(U8(1), o.tq1High(m(48)), o.times9(r9.AsX()).AsY(), hr)
	e := ZMM()
	VINSERTI64X4(U8(1), hr, r9.AsZ(), e)
	use(3, o.trit(e))
}

// ternType is the geometry of a ternary format.
type ternType struct {
	name   string // as pkg/kernels spells it
	short  string // in kernel names
	bb     int    // block bytes
	dOff   int    // offset of the f16 scale
	unpack func(o *ternOps, m func(disp int) Mem, use func(j int, t VecVirtual))
	wide   func(o *ternOps, m func(disp int) Mem, use func(j int, t VecVirtual)) // avx512vnni
}

// unpacker returns the unpacking of tt for a tier and the width of its
// vectors in bytes.
func (tt ternType) unpacker(evex bool) (func(o *ternOps, m func(disp int) Mem, use func(j int, t VecVirtual)), int) {
	if evex {
		return tt.wide, 64
	}
	return tt.unpack, 32
}

var (
	tq1 = ternType{"TQ1_0", "TQ1_0", 54, 52, (*ternOps).tq1Unpack, (*ternOps).tq1Wide}
	tq2 = ternType{"TQ2_0", "TQ2_0", 66, 64, (*ternOps).tq2Unpack, (*ternOps).tq2Wide}
)

// ternKernels emits every ternary kernel: for each format, the one-row and
// rows kernels (R activation rows: 4 on avx2, whose float accumulators live
// in memory for want of registers, 8 on avx512vnni) and the cols kernels
// (4 weight rows).
func ternKernels() {
	ternConsts()
	for _, tt := range []ternType{tq1, tq2} {
		for _, evex := range []bool{false, true} {
			ternRows(tt, evex, 1)
			ternRows(tt, evex, map[bool]int{false: 4, true: 8}[evex])
			ternCols(tt, evex, 4)
		}
	}
	r16TQ2AVX512()
	r16TQ1AVX512()
}

// tierName is the kernels' name suffix of a tier.
func tierName(evex bool) string {
	if evex {
		return "AVX512"
	}
	return "AVX2"
}

// ternAcc is the per-tier integer part of a ternary kernel: accumulate adds
// Σ t·x of one trit vector and 32 activation bytes to a row's sum, finish
// turns the sum into the block's eight float32 lanes given the bsums.
type ternAcc struct {
	o    *ternOps
	ones VecVirtual // 16 × int16(1), avx512vnni only (VPMADDWD takes its memory operand first)
}

func newTernAcc(evex bool) *ternAcc {
	a := &ternAcc{o: newTernOps(evex)}
	xor := vpxor
	if evex {
		xor = func(ops ...Op) { VPXORD(ops[0], ops[1], ops[2]) }
		a.ones = YMM()
		VMOVDQU64(ones16Y, a.ones)
		a.o.zero = zeroed(1, ZMM, xor)[0]
		return a
	}
	a.o.zero = zeroed(1, YMM, xor)[0]
	return a
}

func (a *ternAcc) newSums(n int) []VecVirtual {
	if a.o.evex {
		return zeroed(n, ZMM, func(ops ...Op) { VPXORD(ops[0], ops[1], ops[2]) })
	}
	return zeroed(n, YMM, vpxor)
}

func (a *ternAcc) accumulate(t VecVirtual, x Mem, sum VecVirtual) {
	if a.o.evex {
		VPDPBUSD(x, t, sum)
		return
	}
	p := YMM()
	VPMADDUBSW(x, t, p)
	VPADDW(p, sum, sum)
}

// finish returns the ymm of the float32 lanes of the block: the int16 sums
// less bsums, pairwise added (avx2), or the int32 zmm sums folded to eight
// lanes (lane l + lane 8+l: both hold elements with e%32/4 == l) less the
// pair sums of the bsums (avx512vnni); bs addresses the bsums.
func (a *ternAcc) finish(sum VecVirtual, bs Mem) Register {
	s := sum.AsY()
	if a.o.evex {
		a.fold(sum)
		b := YMM()
		VPMADDWD(bs, a.ones, b)
		VPSUBD(b, s, s)
	} else {
		VPSUBW(bs, s, s)
		VPMADDWD(ones16Y, s, s)
	}
	VCVTDQ2PS(s, s)
	return s
}

// fold adds the upper eight int32 lanes of the zmm sum to the lower eight.
func (a *ternAcc) fold(sum VecVirtual) {
	hi := YMM()
	VEXTRACTI64X4(U8(1), sum, hi)
	VPADDD(hi, sum.AsY(), sum.AsY())
}

// ternRows is the kernel of tt for R activation rows at x + r·xstride
// (R = 1: the one-row kernel); acc[8r:8r+8] receives row r's lanes.
func ternRows(tt ternType, evex bool, R int) {
	name := fmt.Sprintf("rows%s%sAsm", tt.short, tierName(evex))
	if R == 1 {
		name = fmt.Sprintf("dot%s%sAsm", tt.short, tierName(evex))
		defer wrapDot(name, tt.name, tt.bb, "q8KBytes", false, true)
	} else {
		defer wrapRows(name, tt.name, R, tt.bb, 8, false)
	}
	w, nb := rowsProlog(name, tt.name, R, 8, "")
	var rowMem func(r, disp int) Mem
	var xregs []Register
	if evex {
		rowMem = rowAddressing(R)
		xregs = []Register{rowRegs.x0, rowRegs.x4}
	} else {
		xregs = chainedRows(R)
		rowMem = func(r, disp int) Mem { return Mem{Base: xregs[r], Disp: disp} }
	}
	a := newTernAcc(evex)
	inRegs := evex || R == 1 // avx2 has too few registers for R > 1
	var accs []VecVirtual
	if inRegs {
		accs = zeroed(R, YMM, VXORPS)
	}
	whileNonZero(name, nb, func() {
		if R == 1 {
			prefetch(w, tt.bb)
		}
		sums := a.newSums(R)
		unpack, width := tt.unpacker(evex)
		unpack(a.o, func(disp int) Mem { return Mem{Base: w, Disp: disp} }, func(j int, t VecVirtual) {
			for r := range R {
				a.accumulate(t, rowMem(r, 4+width*j), sums[r])
			}
		})
		d := f16Scalar(Mem{Base: w, Disp: tt.dOff})
		var accp Register
		if !inRegs {
			accp = Load(Param("acc"), GP64())
		}
		for r := range R {
			s := a.finish(sums[r], rowMem(r, 260))
			yd := XMM()
			VMULSS(rowMem(r, 0), d, yd) // yd·d, as the model: yd * f16
			dv := YMM()
			VBROADCASTSS(yd, dv)
			if inRegs {
				VFMADD231PS(dv, s, accs[r])
				continue
			}
			acc := YMM()
			VMOVUPS(Mem{Base: accp, Disp: 32 * r}, acc)
			VFMADD231PS(dv, s, acc)
			VMOVUPS(acc, Mem{Base: accp, Disp: 32 * r})
		}
		nextBlock(nb, w, tt.bb, xregs...)
	})
	if inRegs {
		accp := Load(Param("acc"), GP64())
		for r := range R {
			VMOVUPS(accs[r], Mem{Base: accp, Disp: 32 * r})
		}
	}
	VZEROUPPER()
	RET()
}

// ternCols is the decode kernel of tt: C weight rows at w + c·wstride
// against one Q8_K row, each row following exactly the operations of the
// one-row kernel, so the results are identical. The avx512vnni form keeps
// the block's activations and bsum pairs in registers for the C rows.
func ternCols(tt ternType, evex bool, C int) {
	name := fmt.Sprintf("cols%s%sAsm", tt.short, tierName(evex))
	defer wrapCols(name, tt.name, C, tt.bb)
	w, x, nb, rowMem, pf := colsProlog(name, C, tt.name, "hsum8")
	a := newTernAcc(evex)
	accs := zeroed(C, YMM, VXORPS)
	whileNonZero(name, nb, func() {
		colsPrefetchNext(pf, C*tt.bb)
		xm := func(j int) Op { return Mem{Base: x, Disp: 4 + 32*j} }
		unpack, _ := tt.unpacker(evex)
		var bp VecVirtual
		if evex {
			var xv [4]VecVirtual
			for j := range xv {
				xv[j] = ZMM()
				VMOVDQU64(Mem{Base: x, Disp: 4 + 64*j}, xv[j])
			}
			xm = func(j int) Op { return xv[j] }
			bp = YMM()
			VPMADDWD(Mem{Base: x, Disp: 260}, a.ones, bp)
		}
		for c := range C {
			sum := a.newSums(1)[0]
			unpack(a.o, func(disp int) Mem { return rowMem(c, disp) }, func(j int, t VecVirtual) {
				if evex {
					VPDPBUSD(xm(j), t, sum)
				} else {
					a.accumulate(t, xm(j).(Mem), sum)
				}
			})
			s := sum.AsY()
			if evex {
				a.fold(sum)
				VPSUBD(bp, s, s)
				VCVTDQ2PS(s, s)
			} else {
				a.finish(sum, Mem{Base: x, Disp: 260})
			}
			d := f16Scalar(rowMem(c, tt.dOff))
			yd := XMM()
			VMULSS(Mem{Base: x}, d, yd)
			dv := YMM()
			VBROADCASTSS(yd, dv)
			VFMADD231PS(dv, s, accs[c])
		}
		nextBlock(nb, w, tt.bb, x)
	})
	outp := Load(Param("out"), GP64())
	for c := range C {
		acc := accs[c]
		t := XMM()
		if evex {
			VEXTRACTF32X4(U8(1), acc, t)
		} else {
			VEXTRACTF128(U8(1), acc, t)
		}
		VADDPS(t, acc.AsX(), t)
		colsPairSums(t.AsY()) // the upper lanes are not read
		VMOVSS(t, Mem{Base: outp, Disp: 4 * c})
	}
	VZEROUPPER()
	RET()
}

// r16TQ2AVX512 generates the LayoutR16 TQ2_0 kernels (pkg/kernels/
// quant_ternary_r16.go has the layout and the twin, dotR16TQ2Generic), for
// 1, 2, 4 and 8 activation rows (Q8_K). As in r16legacy.go, lane l of every
// vector is weight row l of a group of 16, and VPDPBUSD adds the products of
// four columns of all 16 rows (the trits t = w+1, unsigned) with one
// activation dword broadcast from memory. A 64-byte set of the group block
// holds 16 columns of the 16 rows, two bits each: shifts by 0, 2, 4, 6 and
// a mask give the four vectors of four columns. Per super-block and
// activation row, the rows' integer sums start at -Σx (eight VPDPWSSD of the
// bsums, broadcast by pairs, with -1 words), take 64 VPDPBUSD and go into
// the row's float32 accumulator with one conversion and one fused
// multiply-add by d·dx: the per-block float work that the ggml-layout
// kernels do per row is done here once per 16 rows.
func r16TQ2AVX512() {
	var names []string
	for _, R := range []int{1, 2, 4, 8} {
		names = append(names, r16TQ2Kernel(R))
	}
	wrapR16("r16TQ2_0AVX512", "TQ2_0", "r16TQ2Block", "q8KBytes", names)
}

// r16TQ1AVX512 generates the LayoutR16 TQ1_0 kernels: those of TQ2_0 with
// 13 sets of 64 bytes whose bytes each hold five trits (the last set four)
// of four columns, unpacked as tq1Unpack does: q·3^k modulo 256 (times3,
// times9), then the top trit of each byte.
func r16TQ1AVX512() {
	var names []string
	for _, R := range []int{1, 2, 4, 8} {
		names = append(names, r16TernKernel(true, R))
	}
	wrapR16("r16TQ1_0AVX512", "TQ1_0", "r16TQ1Block", "q8KBytes", names)
}

// The sizes of the LayoutR16 ternary group blocks (16 × 66, 16 × 54).
const (
	r16TQ2Block = 16 * 66
	r16TQ1Block = 16 * 54
)

func r16TQ2Kernel(R int) string { return r16TernKernel(false, R) }

// r16TernKernel is the LayoutR16 kernel of TQ1_0 (tq1) or TQ2_0 for R rows.
func r16TernKernel(tq1 bool, R int) string {
	gbb, typ := r16TQ2Block, "TQ2_0"
	if tq1 {
		gbb, typ = r16TQ1Block, "TQ1_0"
	}
	name := fmt.Sprintf("r16%sx%dAVX512Asm", typ, R)
	kernel(name, "func(w *byte, nb int, x *byte, xstride int, out *float32, ostride int)",
		fmt.Sprintf("%s sets out[r·ostride : r·ostride+16] to the dots of the 16 rows of a", name),
		fmt.Sprintf("LayoutR16 %s group (nb super-blocks at w) with the %d Q8_K activation", typ, R),
		"rows x + r·xstride.")
	w, nb := Load(Param("w"), GP64()), Load(Param("nb"), GP64())
	x0, xst := Load(Param("x"), GP64()), Load(Param("xstride"), GP64())
	xm, x4 := stridedRows(x0, xst, R)
	xs := []Register{x0}
	if x4 != nil {
		xs = append(xs, x4)
	}
	m3, neg := ZMM(), ZMM()
	VMOVDQU64(m3Z, m3)
	VPTERNLOGD(U8(0xff), neg, neg, neg) // -1 in every word
	if tq1 {
		// TQ1_0 sums 64·t·x (trit64) from -64·Σx, divided by 64 at the
		// end: exact, |64·Σx| < 2²² and each row's sum of 256 products
		// 64·t·x stays below 2²³.
		VMOVDQU64(neg64Z, neg)
	}
	o := newTernOps(true)
	if tq1 {
		o.zero = zeroed(1, ZMM, func(ops ...Op) { VPXORD(ops[0], ops[1], ops[2]) })[0]
	}
	sets := 16
	if tq1 {
		sets = 13
	}
	outs := zeroed(R, ZMM, VPXORD)
	S := max(1, 4/R) // integer sums per row, taking turns (see r16legacy.go)
	lines := (gbb + 63) / 64
	whileNonZero(name, nb, func() {
		accs := make([][]VecVirtual, R)
		for r := range R {
			accs[r] = zeroed(S, ZMM, VPXORD)
			for i := range 8 { // -Σx: bsums 2i and 2i+1 per dword
				VPDPWSSD_BCST(xm(r, 260+4*i), neg, accs[r][i%S])
			}
		}
		k := 0
		dots := func(t VecVirtual, col int) {
			for r := range R {
				VPDPBUSD_BCST(xm(r, 4+col), t, accs[r][k%S])
			}
			k++
		}
		for s := range sets {
			if *r16PrefetchBlocks > 0 {
				for l := s * lines / sets; l < (s+1)*lines/sets; l++ {
					PREFETCHT0(Mem{Base: w, Disp: *r16PrefetchBlocks*gbb + 64*l})
				}
			}
			q := ZMM()
			VMOVDQU64(Mem{Base: w, Disp: 32 + 64*s}, q)
			if tq1 {
				// trit k of set s: columns 20s+4k.. (the last set: 240+4k..)
				col := func(k int) int { return min(20*s, 240) + 4*k }
				dots(o.trit64(q), col(0))
				q3 := o.times3(q)
				dots(o.trit64(q3), col(1))
				q9 := o.times9(q)
				dots(o.trit64(q9), col(2))
				dots(o.trit64(o.times9(q3)), col(3))
				if s < 12 {
					dots(o.trit64(o.times9(q9)), col(4))
				}
				continue
			}
			for m := range 4 {
				t := ZMM()
				if m == 0 {
					VPANDD(m3, q, t)
				} else {
					VPSRLW(U8(2*m), q, t)
					VPANDD(m3, t, t)
				}
				dots(t, 16*s+4*m)
			}
		}
		dv := ZMM()
		VCVTPH2PS(Mem{Base: w}, dv)
		for r := range R {
			a := accs[r][0]
			for _, b := range accs[r][1:] {
				VPADDD(b, a, a)
			}
			dd := ZMM()
			VMULPS_BCST(xm(r, 0), dv, dd)
			if tq1 {
				VPSRAD(U8(6), a, a)
			}
			VCVTDQ2PS(a, a)
			VFMADD231PS(dd, a, outs[r])
		}
		ADDQ(U32(gbb), w)
		for _, x := range xs {
			ADDQ(U32(q8KBytes), x)
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
