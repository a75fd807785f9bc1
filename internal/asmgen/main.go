// Command asmgen generates corelm's amd64 kernels (pkg/kernels/dot_amd64.s and
// its Go stubs) with avo. It lives in its own module so that the main module
// does not depend on avo; run it through `go generate ./pkg/kernels`.
//
// Every kernel reproduces, exactly, the integer sums and the float operation
// order of the Go models in pkg/kernels/dot_x86order.go (ggml's AVX2 order:
// eight float32 lanes, lane l holding the 4-element products l of each
// 32-byte chunk, one FMA per lane per block). The kernels leave their float
// accumulators in acc; the horizontal sum is done in Go, once per row, so it
// is shared by every tier — except in the decode (cols) kernels, which
// reduce in assembly in the same order (hsum8, hsumQ4K).
//
// Two tiers: "avx2" (AVX2+FMA+F16C) and "avx512" (AVX-512 F/BW/VL + VNNI; it
// reuses the avx2 kernels where it has no variant of its own).
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"regexp"
	"strings"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

func main() {
	flag.Parse() // before the kernels are built: some read flags
	ConstraintExpr("amd64,!purego")
	consts()
	q45kAVX2(false)
	q45kAVX512(false)
	q45kAVX2(true)
	q45kAVX512(true)
	q4kRowsAVX2(4)
	q45kRowsAVX512(8, false)
	q45kRowsAVX512(8, true)
	q4kColsAVX512(4)
	q6kColsAVX512(4)
	for _, R := range []int{1, 2, 4, 8} {
		q4kR16AVX512(R)
		q6kR16AVX512(R)
	}
	q6kAVX2()
	q6kRowsAVX2(4)
	q6kAVX512(1)
	q6kAVX512(8)
	q8_0AVX2()
	q4_0AVX2()
	quantQ8KAVX2()
	f16Dot(false)
	f16Dot(true)
	axpyF16AVX2()
	dotsF16AVX2()
	axpysF16AVX2()
	sumBytesAVX2()
	expConstsData()
	expSubAVX2()
	maxAVX2()
	swigluAVX2()
	Generate()
	checkAVX2Registers()
}

// checkAVX2Registers fails the generation if a kernel of the avx2 tier uses
// vector registers 16..31: avo allocates from all 32, and an instruction
// with an EVEX form would then assemble silently and fault on AVX2-only CPUs.
func checkAVX2Registers() {
	out := flag.Lookup("out").Value.String()
	b, err := os.ReadFile(out)
	if err != nil {
		log.Fatal(err)
	}
	high := regexp.MustCompile(`\b[XYZ](1[6-9]|2[0-9]|3[01])\b`)
	fn := ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "TEXT ") {
			fn = line
		}
		if strings.Contains(fn, "AVX2(") && high.MatchString(line) {
			log.Fatalf("%s: avx2 kernel uses an AVX-512-only register: %s", fn, strings.TrimSpace(line))
		}
	}
}

var (
	m4Z       Mem    // 64 × 0x0f
	m2Y       Mem    // 32 × 0x03
	m32Y      Mem    // 32 × 32
	ones16Y   Mem    // 16 × int16(1)
	packPermY Mem    // dword order undoing VPACKSS*'s lane interleave
	negF127   Mem    // float32 -127
	oneF      Mem    // float32 1
	m8Y       Mem    // 32 × 8
	m16Z      Mem    // 64 × 16
	m30Z      Mem    // 64 × 0x30
	m32Z      Mem    // 64 × 32
	cntAZ     Mem    // Q6_K: word shift counts 4 (low 256 bits), 2 (high)
	cntBZ     Mem    // Q6_K: word shift counts 0 (low 256 bits), 2 (high)
	shufQ6Y   [4]Mem // Q6_K avx512: bytes g ×8, g+1 ×8 | g+2 ×8, g+3 ×8 for g = 4i
	dmPermZ   Mem    // dword indices 0 ×8, 1 ×4, 2 ×4
	scShufP   Mem    // Q4_K scale unpack: bytes 0..3, 8..11, 4..7, 8..11
	scShufQ   Mem    // Q4_K scale unpack: zero, 0..3, zero, 4..7
	scShift   Mem    // Q4_K scale unpack: dword shifts 0, 0, 0, 4
	scMask    Mem    // Q4_K scale unpack: bytes 63 ×4, 15 ×4, 63 ×4, 15 ×4
	bitSelZ   [4]Mem // Q5_K avx512: bytes 1<<2j (low 256 bits), 1<<(2j+1) (high)
	shufK4    [8]Mem // Q4_K: int16 scale k broadcast within each 128-bit lane (32 B)
	shufZ     [4]Mem // Q4_K avx512: scale 2j in the low 256 bits, 2j+1 in the high (64 B)
	shufQ6    [8]Mem // Q6_K: bytes 2c ×8 then 2c+1 ×8 (16 B)
	shufPair  [4]Mem // Q4_K cols: int16 scale a in the low 256 bits, b in the high, (a, b) = (0,2), (1,3), (4,6), (5,7)
)

func consts() {
	m4Z = GLOBL("m4", RODATA|NOPTR)
	for i := 0; i < 64; i += 8 {
		DATA(i, U64(0x0f0f0f0f0f0f0f0f))
	}
	m2Y = GLOBL("m2", RODATA|NOPTR)
	for i := 0; i < 32; i += 8 {
		DATA(i, U64(0x0303030303030303))
	}
	m32Y = GLOBL("m32", RODATA|NOPTR)
	for i := 0; i < 32; i += 8 {
		DATA(i, U64(0x2020202020202020))
	}
	m8Y = GLOBL("m8", RODATA|NOPTR)
	for i := 0; i < 32; i += 8 {
		DATA(i, U64(0x0808080808080808))
	}
	m16Z = GLOBL("m16", RODATA|NOPTR)
	for i := 0; i < 64; i += 8 {
		DATA(i, U64(0x1010101010101010))
	}
	for j := range 4 {
		bitSelZ[j] = GLOBL(fmt.Sprintf("bitsel_%d", j), RODATA|NOPTR)
		for i := range 64 {
			DATA(i, U8(1<<(2*j+i/32)))
		}
	}
	dmPermZ = GLOBL("dmperm", RODATA|NOPTR)
	for i := range 16 {
		DATA(4*i, U32(min(i/8+i/12, 2)))
	}
	m30Z = GLOBL("m30", RODATA|NOPTR)
	for i := range 64 {
		DATA(i, U8(0x30))
	}
	m32Z = GLOBL("m32z", RODATA|NOPTR)
	for i := range 64 {
		DATA(i, U8(32))
	}
	cntAZ = GLOBL("cnta", RODATA|NOPTR)
	for i := 0; i < 64; i += 2 {
		DATA(i, U16(4-2*(i/32)))
	}
	cntBZ = GLOBL("cntb", RODATA|NOPTR)
	for i := 0; i < 64; i += 2 {
		DATA(i, U16(2*(i/32)))
	}
	for i := range 4 {
		shufQ6Y[i] = GLOBL(fmt.Sprintf("shufq6y_%d", i), RODATA|NOPTR)
		for j := range 32 {
			DATA(j, U8(4*i+j/8))
		}
	}
	packPermY = GLOBL("packperm", RODATA|NOPTR)
	for i, v := range []uint32{0, 4, 1, 5, 2, 6, 3, 7} {
		DATA(4*i, U32(v))
	}
	negF127 = GLOBL("negf127", RODATA|NOPTR)
	DATA(0, F32(-127))
	oneF = GLOBL("onef", RODATA|NOPTR)
	DATA(0, F32(1))
	scShufP = GLOBL("scshufp", RODATA|NOPTR)
	for i, v := range []int{0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11} {
		DATA(i, U8(v))
	}
	scShufQ = GLOBL("scshufq", RODATA|NOPTR)
	for i, v := range []int{0x80, 0x80, 0x80, 0x80, 0, 1, 2, 3, 0x80, 0x80, 0x80, 0x80, 4, 5, 6, 7} {
		DATA(i, U8(v))
	}
	scShift = GLOBL("scshift", RODATA|NOPTR)
	for i, v := range []uint32{0, 0, 0, 4} {
		DATA(4*i, U32(v))
	}
	scMask = GLOBL("scmask", RODATA|NOPTR)
	for i, v := range []uint32{0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f} {
		DATA(4*i, U32(v))
	}
	ones16Y = GLOBL("ones16", RODATA|NOPTR)
	for i := 0; i < 32; i += 8 {
		DATA(i, U64(0x0001000100010001))
	}
	for k := range 8 {
		shufK4[k] = GLOBL(fmt.Sprintf("shufk4_%d", k), RODATA|NOPTR)
		for i := 0; i < 32; i += 2 {
			DATA(i, U8(2*k))
			DATA(i+1, U8(2*k+1))
		}
	}
	for j := range 4 {
		shufZ[j] = GLOBL(fmt.Sprintf("shufz_%d", j), RODATA|NOPTR)
		for i := 0; i < 64; i += 2 {
			k := 2 * j
			if i >= 32 {
				k++
			}
			DATA(i, U8(2*k))
			DATA(i+1, U8(2*k+1))
		}
	}
	for i, ab := range [4][2]int{{0, 2}, {1, 3}, {4, 6}, {5, 7}} {
		shufPair[i] = GLOBL(fmt.Sprintf("shufpair_%d", i), RODATA|NOPTR)
		for b := 0; b < 64; b += 2 {
			k := ab[b/32]
			DATA(b, U8(2*k))
			DATA(b+1, U8(2*k+1))
		}
	}
	for c := range 8 {
		shufQ6[c] = GLOBL(fmt.Sprintf("shufq6_%d", c), RODATA|NOPTR)
		for i := range 16 {
			DATA(i, U8(2*c+i/8))
		}
	}
}

// q4kScales unpacks the 12 packed scale bytes at w+4 of a Q4_K/Q5_K block
// (ggml's get_scale_min_k4) into an xmm, scales 0..7 in bytes 0..7 and mins
// 0..7 in bytes 8..15, and widens them to int16 in a ymm (scales low, mins
// high). With b the bytes at w+4:
//
//	sc0..3 = b0..3 & 63          sc4..7 = b8..11 & 15 | b0..3>>6<<4
//	mn0..3 = b4..7 & 63          mn4..7 = b8..11>>4   | b4..7>>6<<4
//
// computed as (P >> [0,0,0,4]) & [63,15,63,15] | (Q>>2) & 0x30 per dword
// with P = b[0..3, 8..11, 4..7, 8..11] and Q = [0, b0..3, 0, b4..7].
// evex selects EVEX-encodable instructions, for kernels whose registers may
// be X16..X31.
func q4kScales(w Register, evex bool) VecVirtual {
	return q4kScalesAt(Mem{Base: w, Disp: 4}, evex)
}

// q4kScalesAt is q4kScales with the address of the 12 scale bytes.
func q4kScalesAt(m Mem, evex bool) VecVirtual {
	b, p, q := XMM(), XMM(), XMM()
	and := func(a, b, c Op) { VPAND(a, b, c) }
	or := func(a, b, c Op) { VPOR(a, b, c) }
	if evex {
		and = func(a, b, c Op) { VPANDD(a, b, c) }
		or = func(a, b, c Op) { VPORD(a, b, c) }
		VMOVDQU64(m, b) // 12 scale bytes and 4 quant bytes
	} else {
		VMOVDQU(m, b)
	}
	VPSHUFB(scShufP, b, p)
	VPSHUFB(scShufQ, b, q)
	VPSRLVD(scShift, p, p)
	and(scMask, p, p)
	VPSRLW(U8(2), q, q)
	and(m30Z, q, q)
	or(q, p, p)
	y := YMM()
	VPMOVZXBW(p, y)
	return y
}

// q4kMins computes, into accm (4 float32 lanes), accm -= dmin·m where
// m[k] = mins[2k]·(b[4k]+b[4k+1]) + mins[2k+1]·(b[4k+2]+b[4k+3]) from the
// Q8_K block's bsums (at x+260).
func q4kMins(mins, dmin VecVirtual, x Register, accm Op) {
	q := XMM()
	VMOVDQU(Mem{Base: x, Disp: 260}, q)
	VPHADDW(Mem{Base: x, Disp: 276}, q, q)
	VPMADDWD(q, mins, q)
	VCVTDQ2PS(q, q)
	VFNMADD231PS(dmin, q, accm)
}

// blockScales returns ymm d (broadcast) and xmm dmin (broadcast) for a
// k-quant block: d = yd·f16(w+0), dmin = yd·f16(w+2).
func blockScales(w, x Register) (d, dmin VecVirtual) {
	t := XMM()
	VMOVD(Mem{Base: w}, t)
	VCVTPH2PS(t, t)
	yd := XMM()
	VBROADCASTSS(Mem{Base: x}, yd)
	VMULPS(yd, t, t)
	d = YMM()
	VBROADCASTSS(t, d)
	dmin = XMM()
	VSHUFPS(U8(0x55), t, t, dmin)
	return d, dmin
}

// q45kAVX2 is the Q4_K kernel or, with five, the Q5_K one: the same block
// but for the fifth bits (qh at +16, nibbles at +48, 176-byte blocks).
func q45kAVX2(five bool) {
	name, qs, bb := "dotQ4KAVX2", 16, 144
	if five {
		name, qs, bb = "dotQ5KAVX2", 48, 176
	}
	TEXT(name, NOSPLIT, "func(w, x *byte, nb int, acc *[12]float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s accumulates nb %s × Q8_K blocks into acc (8 lanes, 4 min lanes).", name, map[bool]string{false: "Q4_K", true: "Q5_K"}[five]))
	w, x, nb := Load(Param("w"), GP64()), Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	acc, accm := YMM(), XMM()
	VXORPS(acc, acc, acc)
	VXORPS(accm, accm, accm)
	m4 := YMM()
	VMOVDQU(m4Z, m4)
	var m16, qh VecVirtual
	if five {
		m16, qh = YMM(), YMM()
		VMOVDQU(m16Z, m16)
	}
	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))
	prefetch(w, bb)
	ms := q4kScales(w, false)
	mins := XMM()
	VEXTRACTI128(U8(1), ms, mins)
	sc := YMM()
	VPERMQ(U8(0x44), ms, sc)
	d, dmin := blockScales(w, x)
	q4kMins(mins, dmin, x, accm)
	if five {
		VMOVDQU(Mem{Base: w, Disp: 16}, qh)
	}
	sumi := YMM()
	VPXOR(sumi, sumi, sumi)
	for j := range 4 {
		lo, hi, sl, sh := YMM(), YMM(), YMM(), YMM()
		VMOVDQU(Mem{Base: w, Disp: qs + 32*j}, hi)
		VPAND(m4, hi, lo)
		VPSRLW(U8(4), hi, hi)
		VPAND(m4, hi, hi)
		if five {
			fifthBit(qh, 2*j, m16, lo)
			fifthBit(qh, 2*j+1, m16, hi)
		}
		VPSHUFB(shufK4[2*j], sc, sl)
		VPSHUFB(shufK4[2*j+1], sc, sh)
		VPMADDUBSW(Mem{Base: x, Disp: 4 + 64*j}, lo, lo)
		VPMADDWD(sl, lo, lo)
		VPMADDUBSW(Mem{Base: x, Disp: 4 + 64*j + 32}, hi, hi)
		VPMADDWD(sh, hi, hi)
		VPADDD(lo, sumi, sumi)
		VPADDD(hi, sumi, sumi)
	}
	VCVTDQ2PS(sumi, sumi)
	VFMADD231PS(d, sumi, acc)
	ADDQ(U32(bb), w)
	ADDQ(U32(292), x)
	DECQ(nb)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	p := Load(Param("acc"), GP64())
	VMOVUPS(acc, Mem{Base: p})
	VMOVUPS(accm, Mem{Base: p, Disp: 32})
	VZEROUPPER()
	RET()
}

// whileNonZero emits the loop `for n != 0 { body }` with the labels
// label_loop and label_done; body must bring n down to 0.
func whileNonZero(label string, n Register, body func()) {
	Label(label + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(label + "_done"))
	body()
	JMP(LabelRef(label + "_loop"))
	Label(label + "_done")
}

// prefetchDist is how far ahead of the current weight block (bytes) the
// single-row kernels prefetch: the weights of a decode step stream from
// DRAM once, and one core alone does not keep enough misses in flight.
var prefetchDist = flag.Int("prefetch", 1024, "weight prefetch distance in bytes (0: none)")

// prefetch touches the cache lines of the block prefetchDist ahead.
func prefetch(w Register, blockBytes int) {
	if *prefetchDist == 0 {
		return
	}
	for off := 0; off < blockBytes; off += 64 {
		PREFETCHT0(Mem{Base: w, Disp: *prefetchDist + off})
	}
}

// fifthBit ORs bit k of each qh byte, moved to bit 4, into q.
func fifthBit(qh VecVirtual, k int, m16, q VecVirtual) {
	t := YMM()
	switch {
	case k < 4:
		VPSLLW(U8(4-k), qh, t)
	case k > 4:
		VPSRLW(U8(k-4), qh, t)
	default:
		VMOVDQA(qh, t)
	}
	VPAND(m16, t, t)
	VPOR(t, q, q)
}

func q45kAVX512(five bool) {
	name, qs, bb := "dotQ4KAVX512", 16, 144
	if five {
		name, qs, bb = "dotQ5KAVX512", 48, 176
	}
	TEXT(name, NOSPLIT, "func(w, x *byte, nb int, acc *[12]float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the AVX2 kernel with 512-bit integer work and VPDPWSSD.", name))
	w, x, nb := Load(Param("w"), GP64()), Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	acc, accm := YMM(), XMM()
	VXORPS(acc, acc, acc)
	VXORPS(accm, accm, accm)
	m4 := ZMM()
	VMOVDQU64(m4Z, m4)
	k1 := K()
	km := GP32()
	MOVL(U32(0xffff0000), km)
	KMOVD(km, k1)
	var m16, qh VecVirtual
	if five {
		m16, qh = ZMM(), ZMM()
		VMOVDQU64(m16Z, m16)
	}
	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))
	prefetch(w, bb)
	ms := q4kScales(w, true)
	mins := XMM()
	VEXTRACTI32X4(U8(1), ms, mins)
	sc := ZMM()
	VSHUFI32X4(U8(0), ms.AsZ(), ms.AsZ(), sc)
	d, dmin := blockScales(w, x)
	q4kMins(mins, dmin, x, accm)
	if five {
		VBROADCASTI64X4(Mem{Base: w, Disp: 16}, qh)
	}
	sumi := ZMM()
	VPXORD(sumi, sumi, sumi)
	for j := range 4 {
		q, s, p := ZMM(), ZMM(), ZMM()
		VBROADCASTI64X4(Mem{Base: w, Disp: qs + 32*j}, q)
		VPSRLW(U8(4), q, k1, q) // high nibbles (group 2j+1) in the top 256 bits
		VPANDD(m4, q, q)
		if five {
			// bit 2j of qh for the low half, 2j+1 for the high half → 16
			k2 := K()
			VPTESTMB(bitSelZ[j], qh, k2)
			VPADDB(m16, q, k2, q)
		}
		VPSHUFB(shufZ[j], sc, s)
		VPMADDUBSW(Mem{Base: x, Disp: 4 + 64*j}, q, p)
		VPDPWSSD(s, p, sumi)
	}
	hi := YMM()
	VEXTRACTI64X4(U8(1), sumi, hi)
	s8 := sumi.AsY()
	VPADDD(hi, s8, s8)
	VCVTDQ2PS(s8, s8)
	VFMADD231PS(d, s8, acc)
	ADDQ(U32(bb), w)
	ADDQ(U32(292), x)
	DECQ(nb)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	p := Load(Param("acc"), GP64())
	VMOVUPS(acc, Mem{Base: p})
	VMOVUPS(accm, Mem{Base: p, Disp: 32})
	VZEROUPPER()
	RET()
}

// rowsFloat folds one block's integer lane sums of activation row r into
// acc[r] (8 lanes at acc+48r, 4 min lanes at acc+48r+32).
func rowsFloat(r int, sumi VecVirtual, mins, dm VecVirtual, xr, accp Register) {
	yd, t := XMM(), XMM()
	VBROADCASTSS(Mem{Base: xr}, yd)
	VMULPS(yd, dm, t)
	d := YMM()
	VBROADCASTSS(t, d)
	dmin := XMM()
	VSHUFPS(U8(0x55), t, t, dmin)
	VCVTDQ2PS(sumi, sumi)
	a := YMM()
	VMOVUPS(Mem{Base: accp, Disp: 48 * r}, a)
	VFMADD231PS(d, sumi, a)
	VMOVUPS(a, Mem{Base: accp, Disp: 48 * r})
	am := XMM()
	VMOVUPS(Mem{Base: accp, Disp: 48*r + 32}, am)
	q4kMins(mins, dmin, xr, am)
	VMOVUPS(am, Mem{Base: accp, Disp: 48*r + 32})
}

func rowsProlog(name string, R int) (w, nb, accp Register, xs []Register) {
	TEXT(name, NOSPLIT, fmt.Sprintf("func(w, x *byte, xstride, nb int, acc *[%d]float32)", 12*R))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s accumulates nb Q4_K blocks of one weight row against %d Q8_K rows", name, R),
		"x, x+xstride, ... into acc[12r:12r+12] (layout of dotQ4KAVX2's acc).")
	w, nb = Load(Param("w"), GP64()), Load(Param("nb"), GP64())
	accp = Load(Param("acc"), GP64())
	x0 := Load(Param("x"), GP64())
	stride := Load(Param("xstride"), GP64())
	xs = []Register{x0}
	for r := 1; r < R; r++ {
		xr := GP64()
		LEAQ(Mem{Base: xs[r-1], Index: stride, Scale: 1}, xr)
		xs = append(xs, xr)
	}
	return w, nb, accp, xs
}

func rowsAdvance(w, nb Register, xs []Register, loop string) {
	ADDQ(U32(144), w)
	for _, xr := range xs {
		ADDQ(U32(292), xr)
	}
	DECQ(nb)
	JMP(LabelRef(loop))
}

func q4kRowsAVX2(R int) {
	name := fmt.Sprintf("dotQ4KRows%dAVX2", R)
	w, nb, accp, xs := rowsProlog(name, R)
	m4 := YMM()
	VMOVDQU(m4Z, m4)
	loop, done := name+"_loop", name+"_done"
	Label(loop)
	TESTQ(nb, nb)
	JZ(LabelRef(done))
	ms := q4kScales(w, false)
	sc := YMM()
	VPERMQ(U8(0x44), ms, sc)
	sums := make([]VecVirtual, R)
	for r := range sums {
		sums[r] = YMM()
		VPXOR(sums[r], sums[r], sums[r])
	}
	for j := range 4 {
		lo, hi, sl, sh := YMM(), YMM(), YMM(), YMM()
		VMOVDQU(Mem{Base: w, Disp: 16 + 32*j}, hi)
		VPAND(m4, hi, lo)
		VPSRLW(U8(4), hi, hi)
		VPAND(m4, hi, hi)
		VPSHUFB(shufK4[2*j], sc, sl)
		VPSHUFB(shufK4[2*j+1], sc, sh)
		for r, xr := range xs {
			p := YMM()
			VPMADDUBSW(Mem{Base: xr, Disp: 4 + 64*j}, lo, p)
			VPMADDWD(sl, p, p)
			VPADDD(p, sums[r], sums[r])
			VPMADDUBSW(Mem{Base: xr, Disp: 4 + 64*j + 32}, hi, p)
			VPMADDWD(sh, p, p)
			VPADDD(p, sums[r], sums[r])
		}
	}
	mins := XMM()
	VEXTRACTI128(U8(1), ms, mins)
	dm := XMM()
	VMOVD(Mem{Base: w}, dm)
	VCVTPH2PS(dm, dm)
	for r, xr := range xs {
		rowsFloat(r, sums[r], mins, dm, xr, accp)
	}
	rowsAdvance(w, nb, xs, loop)
	Label(done)
	VZEROUPPER()
	RET()
}

// rowRegs are the activation row pointers of the avx512 rows kernels: x0
// and, past four rows, x4 = x0 + 4·xstride; other rows are addressed with
// the stride and 3·stride as index registers, so eight rows take four
// general registers.
var rowRegs struct{ x0, x4 Register }

// rowAddressing loads the x and xstride parameters and returns the
// addressing function: byte disp of activation row r's current block.
func rowAddressing(R int) func(r, disp int) Mem {
	x0, stride := Load(Param("x"), GP64()), Load(Param("xstride"), GP64())
	addr, x4 := stridedRows(x0, stride, R)
	rowRegs.x0, rowRegs.x4 = x0, x4
	return addr
}

// advanceRows moves the activation row pointers to the next Q8_K block.
func advanceRows(R int) {
	ADDQ(U32(292), rowRegs.x0)
	if R > 4 {
		ADDQ(U32(292), rowRegs.x4)
	}
}

// q45kRowsAVX512 is the multi-row kernel of the avx512 tier for Q4_K (or,
// with five, Q5_K): R activation rows at x + r·xstride share each decoded
// weight block. Its float accumulators stay in registers, one zmm per row:
// lanes 0..7 the main lanes, 8..11 the min lanes (the negated mins are
// multiplied in, so one FMA serves both: fma(dmin, -m, acc) is exactly
// ggml's fnmadd), 12..15 zero. They are stored to acc[16r:16r+16] at the end.
func q45kRowsAVX512(R int, five bool) {
	typ, qs, bb := "Q4K", 16, 144
	if five {
		typ, qs, bb = "Q5K", 48, 176
	}
	name := fmt.Sprintf("dot%sRows%dAVX512", typ, R)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(w, x *byte, xstride, nb int, acc *[%d]float32)", 16*R))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s accumulates nb blocks of one weight row against %d Q8_K rows", name, R),
		"x, x+xstride, ... into acc[16r:16r+16] (8 lanes, 4 min lanes, 4 zeros).")
	w, nb := Load(Param("w"), GP64()), Load(Param("nb"), GP64())
	rowMem := rowAddressing(R)
	m4 := ZMM()
	VMOVDQU64(m4Z, m4)
	k1 := K()
	km := GP32()
	MOVL(U32(0xffff0000), km)
	KMOVD(km, k1)
	var m16, qh VecVirtual
	if five {
		m16, qh = ZMM(), ZMM()
		VMOVDQU64(m16Z, m16)
	}
	perm, ones := ZMM(), YMM()
	VMOVDQU64(dmPermZ, perm)
	VMOVDQU64(ones16Y, ones)
	accs := make([]VecVirtual, R)
	for r := range accs {
		accs[r] = ZMM()
		VPXORD(accs[r], accs[r], accs[r])
	}
	loop, done := name+"_loop", name+"_done"
	Label(loop)
	TESTQ(nb, nb)
	JZ(LabelRef(done))
	ms := q4kScales(w, true)
	sc := ZMM()
	VSHUFI32X4(U8(0), ms.AsZ(), ms.AsZ(), sc)
	nm := XMM()
	VEXTRACTI32X4(U8(1), ms, nm)
	zero := XMM()
	VPXORD(zero, zero, zero)
	VPSUBW(nm, zero, nm)
	// dmv = [d ×8, dmin ×4, 0 ×4] (VMOVD zero-fills lanes 2, 3)
	dm := XMM()
	VMOVD(Mem{Base: w}, dm)
	VCVTPH2PS(dm, dm)
	dmv := ZMM()
	VPERMPS(dm.AsZ(), perm, dmv)
	if five {
		VBROADCASTI64X4(Mem{Base: w, Disp: 16}, qh)
	}
	sums := make([]VecVirtual, R)
	for r := range sums {
		sums[r] = ZMM()
		VPXORD(sums[r], sums[r], sums[r])
	}
	for j := range 4 {
		q, s := ZMM(), ZMM()
		VBROADCASTI64X4(Mem{Base: w, Disp: qs + 32*j}, q)
		VPSRLW(U8(4), q, k1, q)
		VPANDD(m4, q, q)
		if five {
			k2 := K()
			VPTESTMB(bitSelZ[j], qh, k2)
			VPADDB(m16, q, k2, q)
		}
		VPSHUFB(shufZ[j], sc, s)
		for r := range R {
			p := ZMM()
			VPMADDUBSW(rowMem(r, 4+64*j), q, p)
			VPDPWSSD(s, p, sums[r])
		}
	}
	for r := range R {
		hi := YMM()
		VEXTRACTI64X4(U8(1), sums[r], hi)
		s8 := sums[r].AsY()
		VPADDD(hi, s8, s8) // zeroes lanes 8..15 of sums[r]
		// b[2g]+b[2g+1] as int32, narrowed back to int16 (|·| ≤ 4064)
		pw := YMM()
		VPMADDWD(rowMem(r, 260), ones, pw)
		mq := XMM()
		VPMOVDW(pw, mq)
		VPMADDWD(nm, mq, mq)
		z := sums[r]
		VINSERTI32X4(U8(2), mq, z, z)
		VCVTDQ2PS(z, z)
		yd := ZMM()
		VBROADCASTSS(rowMem(r, 0), yd)
		VMULPS(yd, dmv, yd)
		VFMADD231PS(yd, z, accs[r])
	}
	ADDQ(U32(bb), w)
	advanceRows(R)
	DECQ(nb)
	JMP(LabelRef(loop))
	Label(done)
	accp := Load(Param("acc"), GP64())
	for r := range R {
		VMOVUPS(accs[r], Mem{Base: accp, Disp: 64 * r})
	}
	VZEROUPPER()
	RET()
}

// colsPrefetch sets whether the cols kernels prefetch the next group of
// weight rows: each block iteration touches the next C·blockBytes bytes
// of the C rows that follow (contiguous in MatMul), so the following call's
// rows are in cache by the time it starts. Prefetching each row ahead
// instead lands in the next row of the same group and loses to the
// hardware prefetcher; with four interleaved streams per core the latter
// alone does not keep DRAM busy.
var colsPrefetch = flag.Bool("colsprefetch", true, "prefetch the next row group in the cols kernels")

// colsPrefetchStart returns the register of the next group's address,
// w + 4·wstride (nil without prefetching).
func colsPrefetchStart(w, ws Register) Register {
	if !*colsPrefetch {
		return nil
	}
	pf := GP64()
	LEAQ(Mem{Base: w, Index: ws, Scale: 4}, pf)
	return pf
}

// colsPrefetchNext touches the next n bytes at pf and advances it.
func colsPrefetchNext(pf Register, n int) {
	if pf == nil {
		return
	}
	for off := 0; off < n; off += 64 {
		PREFETCHT0(Mem{Base: pf, Disp: off})
	}
	ADDQ(U32(n), pf)
}

// q4kColsAVX512 is the decode kernel of the avx512 tier for Q4_K: C weight
// rows at w + c·wstride against one Q8_K row, so the activation block (its
// quants rearranged once per block, its bsum pairs negated once) is shared
// by the C rows, whose dependency chains are independent. Each row follows
// exactly the float operations of dotQ4KRows8AVX512 (one zmm accumulator:
// 8 lanes, 4 min lanes, 4 zeros), hence of the one-row model. The quants
// are loaded 64 bytes at a time: the low nibbles are sub-blocks [4i | 4i+2]
// and the high nibbles [4i+1 | 4i+3] (256-bit halves), matched by
// activation registers of the same layout; integer lane sums are exact, so
// the order of the sub-blocks within a lane does not matter.
func q4kColsAVX512(C int) {
	name := fmt.Sprintf("dotQ4KCols%dAVX512", C)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(w *byte, wstride int, x *byte, nb int, out *[%d]float32)", C))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s stores in out[c] the dots of nb Q4_K blocks of the %d weight rows", name, C),
		"w + c·wstride with one Q8_K row x, reduced in hsumQ4K's order.")
	w, ws := Load(Param("w"), GP64()), Load(Param("wstride"), GP64())
	x, nb := Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	ws3 := GP64()
	LEAQ(Mem{Base: ws, Index: ws, Scale: 2}, ws3)
	pf := colsPrefetchStart(w, ws)
	rowMem := func(c, disp int) Mem {
		switch c {
		case 0:
			return Mem{Base: w, Disp: disp}
		case 1:
			return Mem{Base: w, Index: ws, Scale: 1, Disp: disp}
		case 2:
			return Mem{Base: w, Index: ws, Scale: 2, Disp: disp}
		}
		return Mem{Base: w, Index: ws3, Scale: 1, Disp: disp}
	}
	m4 := ZMM()
	VMOVDQU64(m4Z, m4)
	perm, ones := ZMM(), YMM()
	VMOVDQU64(dmPermZ, perm)
	VMOVDQU64(ones16Y, ones)
	accs := make([]VecVirtual, C)
	for c := range accs {
		accs[c] = ZMM()
		VPXORD(accs[c], accs[c], accs[c])
	}
	loop, done := name+"_loop", name+"_done"
	Label(loop)
	TESTQ(nb, nb)
	JZ(LabelRef(done))
	colsPrefetchNext(pf, C*144)
	var xv [4]VecVirtual
	for i := range 2 {
		for h := range 2 {
			s := 4*i + h
			v := ZMM()
			VMOVDQU64(Mem{Base: x, Disp: 4 + 32*s}, v.AsY())
			VINSERTI64X4(U8(1), Mem{Base: x, Disp: 4 + 32*(s+2)}, v, v)
			xv[2*i+h] = v
		}
	}
	// -(b[2g]+b[2g+1]) as int16
	pw := YMM()
	VPMADDWD(Mem{Base: x, Disp: 260}, ones, pw)
	nmq, zero := XMM(), XMM()
	VPMOVDW(pw, nmq)
	VPXORD(zero, zero, zero)
	VPSUBW(nmq, zero, nmq)
	yd := ZMM()
	VBROADCASTSS(Mem{Base: x}, yd)
	for c := range C {
		ms := q4kScalesAt(rowMem(c, 4), true)
		sc := ZMM()
		VSHUFI32X4(U8(0), ms.AsZ(), ms.AsZ(), sc)
		mins := XMM()
		VEXTRACTI32X4(U8(1), ms, mins)
		dm := XMM()
		VMOVD(rowMem(c, 0), dm)
		VCVTPH2PS(dm, dm)
		dmv := ZMM()
		VPERMPS(dm.AsZ(), perm, dmv)
		VMULPS(yd, dmv, dmv) // [yd·d ×8, yd·dmin ×4, 0 ×4]
		sum := ZMM()
		VPXORD(sum, sum, sum)
		for i := range 2 {
			q, lo := ZMM(), ZMM()
			VMOVDQU64(rowMem(c, 16+64*i), q)
			VPANDD(m4, q, lo)
			VPSRLW(U8(4), q, q)
			VPANDD(m4, q, q)
			for h, v := range []VecVirtual{lo, q} {
				s, p := ZMM(), ZMM()
				VPSHUFB(shufPair[2*i+h], sc, s)
				VPMADDUBSW(xv[2*i+h], v, p)
				VPDPWSSD(s, p, sum)
			}
		}
		hi := YMM()
		VEXTRACTI64X4(U8(1), sum, hi)
		s8 := sum.AsY()
		VPADDD(hi, s8, s8) // zeroes lanes 8..15 of sum
		mm := XMM()
		VPMADDWD(nmq, mins, mm)
		VINSERTI32X4(U8(2), mm, sum, sum)
		VCVTDQ2PS(sum, sum)
		VFMADD231PS(dmv, sum, accs[c])
	}
	ADDQ(U32(144), w)
	ADDQ(U32(292), x)
	DECQ(nb)
	JMP(LabelRef(loop))
	Label(done)
	outp := Load(Param("out"), GP64())
	for c := range C {
		// hsumQ4K: t = a[0:4]+a[4:8], then [t | m] pairwise as hsum8
		// and the min lanes do, then the two sums added.
		a := accs[c]
		t, m := XMM(), XMM()
		VEXTRACTF32X4(U8(1), a, t)
		VADDPS(t, a.AsX(), t)
		VEXTRACTF32X4(U8(2), a, m)
		tm := YMM()
		VINSERTF32X4(U8(1), m, t.AsY(), tm)
		colsPairSums(tm)
		hi := XMM()
		VEXTRACTF32X4(U8(1), tm, hi)
		VADDSS(hi, tm.AsX(), hi)
		VMOVSS(hi, Mem{Base: outp, Disp: 4 * c})
	}
	VZEROUPPER()
	RET()
}

// colsPairSums replaces lane 0 of each 128-bit lane [v0, v1, v2, v3] of v
// with (v0+v2) + (v1+v3).
func colsPairSums(v Register) {
	s := YMM()
	VPERMILPS(U8(0x4e), v, s)
	VADDPS(s, v, v)
	VMOVSHDUP(v, s)
	VADDPS(s, v, v)
}

// q6kColsAVX512 is the decode kernel of the avx512 tier for Q6_K: C weight
// rows at w + c·wstride against one Q8_K row. The activation quants and
// their products with the 32 offset (VPMADDUBSW with 32) are computed once
// per block and shared by the C rows; each row then follows exactly the
// operations of dotQ6KAVX512, so the results are identical.
func q6kColsAVX512(C int) {
	name := fmt.Sprintf("dotQ6KCols%dAVX512", C)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(w *byte, wstride int, x *byte, nb int, out *[%d]float32)", C))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s stores in out[c] the dots of nb Q6_K blocks of the %d weight rows", name, C),
		"w + c·wstride with one Q8_K row x, reduced in hsum8's order.")
	w, ws := Load(Param("w"), GP64()), Load(Param("wstride"), GP64())
	x, nb := Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	ws3 := GP64()
	LEAQ(Mem{Base: ws, Index: ws, Scale: 2}, ws3)
	pf := colsPrefetchStart(w, ws)
	rowMem := func(c, disp int) Mem {
		switch c {
		case 0:
			return Mem{Base: w, Disp: disp}
		case 1:
			return Mem{Base: w, Index: ws, Scale: 1, Disp: disp}
		case 2:
			return Mem{Base: w, Index: ws, Scale: 2, Disp: disp}
		}
		return Mem{Base: w, Index: ws3, Scale: 1, Disp: disp}
	}
	m4, m30, m32, cntA, cntB := ZMM(), ZMM(), ZMM(), ZMM(), ZMM()
	VMOVDQU64(m4Z, m4)
	VMOVDQU64(m30Z, m30)
	VMOVDQU64(m32Z, m32)
	VMOVDQU64(cntAZ, cntA)
	VMOVDQU64(cntBZ, cntB)
	accs := make([]VecVirtual, C)
	for c := range accs {
		accs[c] = YMM()
		VXORPS(accs[c], accs[c], accs[c])
	}
	loop, done := name+"_loop", name+"_done"
	Label(loop)
	TESTQ(nb, nb)
	JZ(LabelRef(done))
	colsPrefetchNext(pf, C*210)
	var xv, xc [4]VecVirtual
	for i := range 4 {
		xv[i], xc[i] = ZMM(), ZMM()
		VMOVDQU64(Mem{Base: x, Disp: 4 + 64*i}, xv[i])
		VPMADDUBSW(xv[i], m32, xc[i])
	}
	yd := XMM()
	VMOVSS(Mem{Base: x}, yd)
	for c := range C {
		sc := YMM()
		VBROADCASTI32X4(rowMem(c, 192), sc)
		sum := ZMM()
		VPXORD(sum, sum, sum)
		for h := range 2 {
			ql, qh := ZMM(), ZMM()
			VMOVDQU64(rowMem(c, 64*h), ql)
			VBROADCASTI64X4(rowMem(c, 128+32*h), qh)
			for pair := range 2 {
				q, t := ZMM(), ZMM()
				if pair == 0 {
					VPANDD(m4, ql, q)
					VPSLLVW(cntA, qh, t)
				} else {
					VPSRLW(U8(4), ql, q)
					VPANDD(m4, q, q)
					VPSRLVW(cntB, qh, t)
				}
				VPTERNLOGD(U8(0xf8), m30, t, q) // q |= t & m30
				sb, sw := YMM(), ZMM()
				VPSHUFB(shufQ6Y[2*h+pair], sc, sb)
				VPMOVSXBW(sb, sw)
				p := ZMM()
				VPMADDUBSW(xv[2*h+pair], q, p)
				VPSUBW(xc[2*h+pair], p, p)
				VPDPWSSD(sw, p, sum)
			}
		}
		hi := YMM()
		VEXTRACTI64X4(U8(1), sum, hi)
		s8 := sum.AsY()
		VPADDD(hi, s8, s8)
		VCVTDQ2PS(s8, s8)
		d := f16Scalar(rowMem(c, 208))
		t := YMM()
		VMULSS(yd, d, t.AsX()) // yd·d in lane 0, as the model: yd * f16
		VBROADCASTSS(t.AsX(), t)
		VFMADD231PS(t, s8, accs[c])
	}
	ADDQ(U32(210), w)
	ADDQ(U32(292), x)
	DECQ(nb)
	JMP(LabelRef(loop))
	Label(done)
	outp := Load(Param("out"), GP64())
	for c := range C {
		a := accs[c]
		t := XMM()
		VEXTRACTF32X4(U8(1), a, t)
		VADDPS(t, a.AsX(), t)
		colsPairSums(t.AsY()) // the upper lanes are not read
		VMOVSS(t, Mem{Base: outp, Disp: 4 * c})
	}
	VZEROUPPER()
	RET()
}

// q6kAVX512 is the Q6_K kernel of the avx512 tier for R activation rows at
// x + r·xstride (R = 1 is the single-row kernel). A zmm holds 64 quants: the
// low nibbles of ql[64h:64h+64] (chunks 0, 1 of half h) or their high
// nibbles (chunks 2, 3), the two high bits shifted into place per 256-bit
// half with variable word shifts. acc[8r:8r+8] receives row r's 8 lanes.
func q6kAVX512(R int) {
	name := fmt.Sprintf("dotQ6KRows%dAVX512", R)
	if R == 1 {
		name = "dotQ6KAVX512"
	}
	TEXT(name, NOSPLIT, fmt.Sprintf("func(w, x *byte, xstride, nb int, acc *[%d]float32)", 8*R))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s accumulates nb Q6_K blocks of one weight row against %d Q8_K rows", name, R),
		"x, x+xstride, ... into acc[8r:8r+8].")
	w, nb := Load(Param("w"), GP64()), Load(Param("nb"), GP64())
	rowMem := rowAddressing(R)
	m4, m30, m32, cntA, cntB := ZMM(), ZMM(), ZMM(), ZMM(), ZMM()
	VMOVDQU64(m4Z, m4)
	VMOVDQU64(m30Z, m30)
	VMOVDQU64(m32Z, m32)
	VMOVDQU64(cntAZ, cntA)
	VMOVDQU64(cntBZ, cntB)
	accs := make([]VecVirtual, R)
	for r := range accs {
		accs[r] = YMM()
		VXORPS(accs[r], accs[r], accs[r])
	}
	loop, done := name+"_loop", name+"_done"
	Label(loop)
	TESTQ(nb, nb)
	JZ(LabelRef(done))
	if R == 1 {
		prefetch(w, 210)
	}
	sc := YMM()
	VBROADCASTI128(Mem{Base: w, Disp: 192}, sc)
	sums := make([]VecVirtual, R)
	for r := range sums {
		sums[r] = ZMM()
		VPXORD(sums[r], sums[r], sums[r])
	}
	for h := range 2 {
		ql, qh := ZMM(), ZMM()
		VMOVDQU64(Mem{Base: w, Disp: 64 * h}, ql)
		VBROADCASTI64X4(Mem{Base: w, Disp: 128 + 32*h}, qh)
		for pair := range 2 {
			q, t := ZMM(), ZMM()
			if pair == 0 {
				VPANDD(m4, ql, q)
				VPSLLVW(cntA, qh, t)
			} else {
				VPSRLW(U8(4), ql, q)
				VPANDD(m4, q, q)
				VPSRLVW(cntB, qh, t)
			}
			VPTERNLOGD(U8(0xf8), m30, t, q) // q |= t & m30
			sb, sw := YMM(), ZMM()
			VPSHUFB(shufQ6Y[2*h+pair], sc, sb)
			VPMOVSXBW(sb, sw)
			for r := range R {
				q8 := rowMem(r, 4+128*h+64*pair)
				p, c := ZMM(), ZMM()
				VPMADDUBSW(q8, q, p)
				VPMADDUBSW(q8, m32, c)
				VPSUBW(c, p, p)
				VPDPWSSD(sw, p, sums[r])
			}
		}
	}
	d := f16Scalar(Mem{Base: w, Disp: 208})
	for r := range R {
		hi := YMM()
		VEXTRACTI64X4(U8(1), sums[r], hi)
		s8 := sums[r].AsY()
		VPADDD(hi, s8, s8)
		VCVTDQ2PS(s8, s8)
		yd := YMM()
		VBROADCASTSS(rowMem(r, 0), yd)
		VMULSS(yd.AsX(), d, yd.AsX()) // yd·d in lane 0, as the model: yd * f16
		VBROADCASTSS(yd.AsX(), yd)
		VFMADD231PS(yd, s8, accs[r])
	}
	ADDQ(U32(210), w)
	advanceRows(R)
	DECQ(nb)
	JMP(LabelRef(loop))
	Label(done)
	accp := Load(Param("acc"), GP64())
	for r := range R {
		VMOVUPS(accs[r], Mem{Base: accp, Disp: 32 * r})
	}
	VZEROUPPER()
	RET()
}

func q6kAVX2() {
	TEXT("dotQ6KAVX2", NOSPLIT, "func(w, x *byte, nb int, acc *[8]float32)")
	Pragma("noescape")
	Doc("dotQ6KAVX2 accumulates nb Q6_K × Q8_K blocks into acc (8 lanes).")
	w, x, nb := Load(Param("w"), GP64()), Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	acc := YMM()
	VXORPS(acc, acc, acc)
	m4, m2, m32 := YMM(), YMM(), YMM()
	VMOVDQU(m4Z, m4)
	VMOVDQU(m2Y, m2)
	VMOVDQU(m32Y, m32)
	whileNonZero("q6k2", nb, func() {
		scales := XMM()
		VMOVDQU(Mem{Base: w, Disp: 192}, scales)
		sumi := YMM()
		VPXOR(sumi, sumi, sumi)
		for h := range 2 {
			ql1, ql2, qh := YMM(), YMM(), YMM()
			VMOVDQU(Mem{Base: w, Disp: 64 * h}, ql1)
			VMOVDQU(Mem{Base: w, Disp: 64*h + 32}, ql2)
			VMOVDQU(Mem{Base: w, Disp: 128 + 32*h}, qh)
			for k := range 4 {
				q, t := YMM(), YMM()
				// high two bits: ((qh >> 2k) & 3) << 4
				if k == 0 {
					VPAND(m2, qh, t)
				} else {
					VPSRLW(U8(2*k), qh, t)
					VPAND(m2, t, t)
				}
				VPSLLW(U8(4), t, t)
				src := ql1
				if k%2 == 1 {
					src = ql2
				}
				if k < 2 {
					VPAND(m4, src, q)
				} else {
					VPSRLW(U8(4), src, q)
					VPAND(m4, q, q)
				}
				VPOR(t, q, q)
				q8 := Mem{Base: x, Disp: 4 + 128*h + 32*k}
				s32 := YMM()
				VPMADDUBSW(q8, m32, s32)
				VPMADDUBSW(q8, q, q)
				VPSUBW(s32, q, q)
				sc := XMM()
				VPSHUFB(shufQ6[4*h+k], scales, sc)
				scw := YMM()
				VPMOVSXBW(sc, scw)
				VPMADDWD(scw, q, q)
				VPADDD(q, sumi, sumi)
			}
		}
		yd := XMM()
		VBROADCASTSS(Mem{Base: x}, yd)
		d := f16Scalar(Mem{Base: w, Disp: 208})
		VMULPS(yd, d, d)
		dv := YMM()
		VBROADCASTSS(d, dv)
		VCVTDQ2PS(sumi, sumi)
		VFMADD231PS(dv, sumi, acc)
		ADDQ(U32(210), w)
		ADDQ(U32(292), x)
		DECQ(nb)
	})
	p := Load(Param("acc"), GP64())
	VMOVUPS(acc, Mem{Base: p})
	VZEROUPPER()
	RET()
}

// q6kRowsAVX2 is the AVX2 Q6_K kernel for R activation rows (float
// accumulators in memory, acc[8r:8r+8]: AVX2 has only 16 registers).
func q6kRowsAVX2(R int) {
	name := fmt.Sprintf("dotQ6KRows%dAVX2", R)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(w, x *byte, xstride, nb int, acc *[%d]float32)", 8*R))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s accumulates nb Q6_K blocks of one weight row against %d Q8_K rows", name, R),
		"x, x+xstride, ... into acc[8r:8r+8].")
	w, nb := Load(Param("w"), GP64()), Load(Param("nb"), GP64())
	x0 := Load(Param("x"), GP64())
	stride := Load(Param("xstride"), GP64())
	xs := []Register{x0}
	for r := 1; r < R; r++ {
		xr := GP64()
		LEAQ(Mem{Base: xs[r-1], Index: stride, Scale: 1}, xr)
		xs = append(xs, xr)
	}
	loop, done := name+"_loop", name+"_done"
	Label(loop)
	TESTQ(nb, nb)
	JZ(LabelRef(done))
	sums := make([]VecVirtual, R)
	for r := range sums {
		sums[r] = YMM()
		VPXOR(sums[r], sums[r], sums[r])
	}
	for h := range 2 {
		for k := range 4 {
			q, t := YMM(), YMM()
			VMOVDQU(Mem{Base: w, Disp: 128 + 32*h}, t)
			if k > 0 {
				VPSRLW(U8(2*k), t, t)
			}
			VPAND(m2Y, t, t)
			VPSLLW(U8(4), t, t)
			VMOVDQU(Mem{Base: w, Disp: 64*h + 32*(k%2)}, q)
			if k >= 2 {
				VPSRLW(U8(4), q, q)
			}
			VPAND(m4Z, q, q)
			VPOR(t, q, q)
			sc := XMM()
			VMOVDQU(Mem{Base: w, Disp: 192}, sc)
			VPSHUFB(shufQ6[4*h+k], sc, sc)
			scw := YMM()
			VPMOVSXBW(sc, scw)
			for r, xr := range xs {
				q8 := Mem{Base: xr, Disp: 4 + 128*h + 32*k}
				p, c := YMM(), YMM()
				VPMADDUBSW(q8, q, p)
				VMOVDQU(m32Y, c)
				VPMADDUBSW(q8, c, c)
				VPSUBW(c, p, p)
				VPMADDWD(scw, p, p)
				VPADDD(p, sums[r], sums[r])
			}
		}
	}
	d := f16Scalar(Mem{Base: w, Disp: 208})
	accp := Load(Param("acc"), GP64())
	for r, xr := range xs {
		yd := XMM()
		VMOVSS(Mem{Base: xr}, yd)
		VMULSS(yd, d, yd)
		dv := YMM()
		VBROADCASTSS(yd, dv)
		VCVTDQ2PS(sums[r], sums[r])
		a := YMM()
		VMOVUPS(Mem{Base: accp, Disp: 32 * r}, a)
		VFMADD231PS(dv, sums[r], a)
		VMOVUPS(a, Mem{Base: accp, Disp: 32 * r})
	}
	ADDQ(U32(210), w)
	for _, xr := range xs {
		ADDQ(U32(292), xr)
	}
	DECQ(nb)
	JMP(LabelRef(loop))
	Label(done)
	VZEROUPPER()
	RET()
}

// f16Scalar loads the binary16 at m (two bytes only: it may end a row) into
// lane 0 of an xmm as float32.
func f16Scalar(m Mem) VecVirtual {
	g := GP32()
	MOVWLZX(m, g)
	x := XMM()
	VMOVD(g, x)
	VCVTPH2PS(x, x)
	return x
}

// legacyLoop is the shared frame of the 32-element kernels: per block,
// body returns the 8 int32 lane sums, which are scaled by f16(w)·f16(x)
// and accumulated with one FMA.
func legacyLoop(name string, wBytes int, body func(w, x Register) VecVirtual) {
	TEXT(name, NOSPLIT, "func(w, x *byte, nb int, acc *[8]float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s accumulates nb blocks (%d weight bytes each) against Q8_0 into acc.", name, wBytes))
	w, x, nb := Load(Param("w"), GP64()), Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	acc := YMM()
	VXORPS(acc, acc, acc)
	Label(name + "_loop")
	TESTQ(nb, nb)
	JZ(LabelRef(name + "_done"))
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
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	p := Load(Param("acc"), GP64())
	VMOVUPS(acc, Mem{Base: p})
	VZEROUPPER()
	RET()
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
	legacyLoop("dotQ8_0AVX2", 34, func(w, x Register) VecVirtual {
		qx := YMM()
		VMOVDQU(Mem{Base: w, Disp: 2}, qx)
		return mulSumI8(qx, Mem{Base: x, Disp: 2})
	})
}

func q4_0AVX2() {
	legacyLoop("dotQ4_0AVX2", 18, func(w, x Register) VecVirtual {
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

// quantQ8KAVX2 encodes nb blocks of 256 float32 to Q8_K exactly as the
// reference (quantQ8K) does for finite input: d = 1/iscale with iscale =
// -127/m, m the first element of largest magnitude; q = round-to-nearest-
// even(iscale·x) (the reference's nearestInt; |iscale·x| ≤ 127 so its clamp
// never acts); bsums the sums of 16 quants. Blocks with NaNs or infinities
// encode to garbage, as in the reference, but differently.
func quantQ8KAVX2() {
	TEXT("quantQ8KAVX2", NOSPLIT, "func(x *float32, y *byte, nb int)")
	Pragma("noescape")
	Doc("quantQ8KAVX2 encodes nb blocks of 256 float32 at x to Q8_K at y.")
	x, y, nb := Load(Param("x"), GP64()), Load(Param("y"), GP64()), Load(Param("nb"), GP64())
	absm, perm := YMM(), YMM()
	VPCMPEQD(absm, absm, absm)
	VPSRLD(U8(1), absm, absm)
	VMOVDQU(packPermY, perm)
	whileNonZero("q8k", nb, func() {
		// amax over the block
		mx := []VecVirtual{YMM(), YMM(), YMM(), YMM()}
		for i, r := range mx {
			VANDPS(Mem{Base: x, Disp: 32 * i}, absm, r)
		}
		for c := 4; c < 32; c++ {
			t := YMM()
			VANDPS(Mem{Base: x, Disp: 32 * c}, absm, t)
			VMAXPS(t, mx[c%4], mx[c%4])
		}
		VMAXPS(mx[1], mx[0], mx[0])
		VMAXPS(mx[3], mx[2], mx[2])
		VMAXPS(mx[2], mx[0], mx[0])
		am := mx[0]
		t := YMM()
		VPERM2F128(U8(1), am, am, t)
		VMAXPS(t, am, am)
		VPERMILPS(U8(0x4e), am, t)
		VMAXPS(t, am, am)
		VPERMILPS(U8(0xb1), am, t)
		VMAXPS(t, am, am) // amax in every lane
		zero := YMM()
		VXORPS(zero, zero, zero)
		VUCOMISS(zero.AsX(), am.AsX())
		JNE(LabelRef("q8k_nonzero"))
		// all zero: clear the block
		for off := 0; off < 288; off += 32 {
			VMOVDQU(zero, Mem{Base: y, Disp: off})
		}
		MOVL(U32(0), Mem{Base: y, Disp: 288})
		JMP(LabelRef("q8k_next"))
		Label("q8k_nonzero")
		// first index with |x| == amax
		i, mask := GP64(), GP32()
		XORQ(i, i)
		Label("q8k_find")
		t2 := YMM()
		VANDPS(Mem{Base: x, Index: i, Scale: 4}, absm, t2)
		VCMPPS(U8(0), am, t2, t2) // EQ_OQ
		VMOVMSKPS(t2, mask)
		TESTL(mask, mask)
		JNZ(LabelRef("q8k_found"))
		ADDQ(U8(8), i)
		CMPQ(i, U32(256))
		JB(LabelRef("q8k_find"))
		XORQ(i, i) // only with NaNs in the block: no element equals amax
		JMP(LabelRef("q8k_scale"))
		Label("q8k_found")
		BSFL(mask, mask)
		ADDQ(mask.As64(), i)
		Label("q8k_scale")
		// iscale = -127/m; d = 1/iscale
		is := XMM()
		m := XMM()
		VMOVSS(Mem{Base: x, Index: i, Scale: 4}, m)
		VMOVSS(negF127, is)
		VDIVSS(m, is, is)
		d := XMM()
		VMOVSS(oneF, d)
		VDIVSS(is, d, d)
		VMOVSS(d, Mem{Base: y})
		isv := YMM()
		VBROADCASTSS(is, isv)
		// Group sums: per chunk c the lane-wise sums of groups 2c, 2c+1 are
		// folded with VPHADDD as they come (few live registers: AVX2 has 16).
		var h [2]VecVirtual
		var halves [2]VecVirtual
		var quads [2]VecVirtual
		for c := range 8 { // 32 quants per step
			q := make([]VecVirtual, 4)
			for k := range 4 {
				q[k] = YMM()
				VMULPS(Mem{Base: x, Disp: 128*c + 32*k}, isv, q[k])
				VCVTPS2DQ(q[k], q[k])
			}
			g0, g1 := YMM(), YMM()
			VPADDD(q[1], q[0], g0)
			VPADDD(q[3], q[2], g1)
			VPHADDD(g1, g0, g0) // [g0 01, g0 23, g1 01, g1 23 | .. 45, 67 ..]
			h[c%2] = g0
			if c%2 == 1 {
				VPHADDD(h[1], h[0], h[0]) // 4 groups, per-lane partial sums
				quads[c/2%2] = h[0]
				if c%4 == 3 {
					lo, hi := YMM(), YMM()
					VPERM2I128(U8(0x20), quads[1], quads[0], lo)
					VPERM2I128(U8(0x31), quads[1], quads[0], hi)
					VPADDD(hi, lo, lo)
					halves[c/4] = lo
				}
			}
			VPACKSSDW(q[1], q[0], q[0])
			VPACKSSDW(q[3], q[2], q[2])
			VPACKSSWB(q[2], q[0], q[0])
			VPERMD(q[0], perm, q[0])
			VMOVDQU(q[0], Mem{Base: y, Disp: 4 + 32*c})
		}
		VPACKSSDW(halves[1], halves[0], halves[0])
		VPERMQ(U8(0xd8), halves[0], halves[0])
		VMOVDQU(halves[0], Mem{Base: y, Disp: 260})
		Label("q8k_next")
		ADDQ(U32(1024), x)
		ADDQ(U32(292), y)
		DECQ(nb)
	})
	VZEROUPPER()
	RET()
}

// f16Dot generates the F16 dots: w holds n binary16 weights, x n float32
// (or, with half, n binary16) activations; n % 16 == 0. Each product is
// rounded to float32 as in the reference, then widened and summed in
// float64 over four accumulators of four lanes (order differs from the
// reference's sequential sum; see the tests for the tolerance).
func f16Dot(half bool) {
	name, xt, xs := "dotF16F32AVX2", "*float32", 4
	if half {
		name, xt, xs = "dotF16F16AVX2", "*byte", 2
	}
	TEXT(name, NOSPLIT, fmt.Sprintf("func(w *byte, x %s, n int) float64", xt))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s returns Σ float64(float32(w[i]·x[i])) over n elements (n %% 16 == 0).", name))
	w, x, n := Load(Param("w"), GP64()), Load(Param("x"), GP64()), Load(Param("n"), GP64())
	acc := []VecVirtual{YMM(), YMM(), YMM(), YMM()}
	for _, a := range acc {
		VXORPD(a, a, a)
	}
	whileNonZero(name, n, func() {
		for k := range 2 {
			a, b := YMM(), YMM()
			VCVTPH2PS(Mem{Base: w, Disp: 16 * k}, a)
			if half {
				VCVTPH2PS(Mem{Base: x, Disp: 16 * k}, b)
				VMULPS(b, a, a)
			} else {
				VMULPS(Mem{Base: x, Disp: 32 * k}, a, a)
			}
			VCVTPS2PD(a.AsX(), b)
			VADDPD(b, acc[2*k], acc[2*k])
			VEXTRACTF128(U8(1), a, a.AsX())
			VCVTPS2PD(a.AsX(), b)
			VADDPD(b, acc[2*k+1], acc[2*k+1])
		}
		ADDQ(U32(32), w)
		ADDQ(U32(16*xs), x)
		SUBQ(U32(16), n)
	})
	VADDPD(acc[1], acc[0], acc[0])
	VADDPD(acc[3], acc[2], acc[2])
	VADDPD(acc[2], acc[0], acc[0])
	hi := XMM()
	VEXTRACTF128(U8(1), acc[0], hi)
	lo := acc[0].AsX()
	VADDPD(hi, lo, lo)
	VUNPCKHPD(lo, lo, hi)
	VADDSD(hi, lo, lo)
	Store(lo, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// sumBytesAVX2 is the STREAM-style read kernel: the 64-bit lane sum of n
// bytes (n a multiple of 128), four independent accumulators.
func sumBytesAVX2() {
	TEXT("sumU64AVX2", NOSPLIT, "func(p *byte, n int) uint64")
	Pragma("noescape")
	Doc("sumU64AVX2 returns the wrapping sum of the n/8 little-endian uint64s at p (n % 128 == 0).")
	p, n := Load(Param("p"), GP64()), Load(Param("n"), GP64())
	a := []VecVirtual{YMM(), YMM(), YMM(), YMM()}
	for _, r := range a {
		VPXOR(r, r, r)
	}
	whileNonZero("sum", n, func() {
		for i, r := range a {
			VPADDQ(Mem{Base: p, Disp: 32 * i}, r, r)
		}
		// Prefetching 4 KiB ahead (the next page, which the hardware
		// prefetcher does not cross into) gave the plain read 0–10% more: the
		// bandwidth decode is measured against is the best plain read, not a
		// naive one.
		PREFETCHT0(Mem{Base: p, Disp: 4096})
		PREFETCHT0(Mem{Base: p, Disp: 4096 + 64})
		ADDQ(U32(128), p)
		SUBQ(U32(128), n)
	})
	VPADDQ(a[1], a[0], a[0])
	VPADDQ(a[3], a[2], a[2])
	VPADDQ(a[2], a[0], a[0])
	hi := XMM()
	VEXTRACTI128(U8(1), a[0], hi)
	lo := a[0].AsX()
	VPADDQ(hi, lo, lo)
	r0, r1 := GP64(), GP64()
	VMOVQ(lo, r0)
	VPEXTRQ(U8(1), lo, r1)
	ADDQ(r1, r0)
	Store(r0, ReturnIndex(0))
	VZEROUPPER()
	RET()
}
