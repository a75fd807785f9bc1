// Command asmgen generates corelm's amd64 kernels (pkg/kernels/dot_amd64.s and
// its Go stubs) with avo. It lives in its own module so that the main module
// does not depend on avo; run it through `go generate ./pkg/kernels`.
//
// Every kernel reproduces, exactly, the integer sums and the float operation
// order of the Go models in pkg/kernels/dot_x86order_test.go (ggml's AVX2
// order: eight float32 lanes, lane l holding the 4-element products l of
// each 32-byte chunk, one FMA per lane per block). The kernels leave their
// float accumulators in acc; the horizontal sum is done in Go, once per row,
// so it is shared by every tier — except in the decode (cols) kernels, which
// reduce in assembly in the same order (hsum8, hsumQ4K).
//
// Two tiers: "avx2" (AVX2+FMA+F16C) and "avx512vnni" (AVX-512 F/BW/VL/DQ +
// VNNI; it reuses the avx2 kernels where it has no variant of its own).
//
// One file per weight family, each with its one-row, rows (several
// activation rows per call: prefill) and cols (several weight rows: decode)
// kernels: q45k.go (Q4_K and Q5_K), q6k.go, legacy.go (Q8_0, Q4_0), r16.go
// (LayoutR16 Q4_K/Q5_K/Q6_K), r16legacy.go (LayoutR16 Q4_0/Q4_1/Q5_0/Q5_1/Q8_0), r16float.go (LayoutR16
// F16/BF16, both tiers), r16avx2.go (the
// AVX2 tier of both), ternary.go (TQ1_0, TQ2_0), f32.go (F32 rows); then q8k.go (the activation
// encoder), f16.go (F16
// dots and attention), exp.go (softmax, SwiGLU), stream.go (the read
// benchmark's sum). main.go holds the driver and the loop frame, rows.go the
// addressing of several rows, consts.go the data section.
package main

import (
	"flag"
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
	r16AVX512()
	r16LegacyAVX512()
	quantQ8R16AVX512(false)
	quantQ8R16AVX512(true)
	r16AVX2()
	r16FloatAVX512()
	r16FloatAVX2()
	roundF16AVX2()
	roundBF16AVX2()
	nibbleRowsAVX2()
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
	axpysF16AVX2()
	dotsQ8AVX512()
	scaleAVX2()
	scaleTanhAVX2()
	scaleTanhAVX512()
	for Q := 2; Q <= 4; Q++ {
		dotsQ8QsAVX512(Q)
	}
	dotsQ8AVX2()
	for Q := 2; Q <= 4; Q++ {
		dotsQ8QsAVX2(Q)
	}
	axpysQ8AVX2()
	for Q := 1; Q <= 4; Q++ {
		dotsF16KeysAVX2(Q, keysT(Q))
		dotsF16KeysAVX2(Q, 1)
	}
	for G := 1; G <= 4; G++ {
		axpysF16HeadsAVX512(G)
		axpysQ8HeadsAVX512(G)
	}
	for G := 2; G <= 4; G++ {
		axpysF16HeadsAVX2(G)
		axpysQ8HeadsAVX2(G)
	}
	sumBytesAVX2()
	prefetchLines()
	expConstsData()
	expSubAVX2()
	expSubAVX512()
	maxAVX2()
	swigluAVX2()
	ternKernels()
	f32Kernels()
	Generate()
	writeWrappers()
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
		if strings.Contains(fn, "AVX2Asm(") && high.MatchString(line) {
			log.Fatalf("%s: avx2 kernel uses an AVX-512-only register: %s", fn, strings.TrimSpace(line))
		}
	}
}

// kernel declares the assembly function name, of Go signature sig, whose
// stub is //go:noescape and documented by doc.
func kernel(name, sig string, doc ...string) {
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(doc...)
}

// q8KBytes is the size of a Q8_K activation block.
const q8KBytes = 292

// nextBlock ends an iteration of the k-quant kernels' block loops: it moves
// the weight pointer w on by one block (bb bytes) and each activation
// pointer in xs by one Q8_K block (nil ones are skipped), and counts nb
// down.
func nextBlock(nb, w Register, bb int, xs ...Register) {
	ADDQ(U32(bb), w)
	for _, x := range xs {
		if x != nil {
			ADDQ(U32(q8KBytes), x)
		}
	}
	DECQ(nb)
}

// zeroed allocates n vector registers with alloc and clears them with xor
// (VPXORD, VXORPS or vpxor).
func zeroed(n int, alloc func() VecVirtual, xor func(ops ...Op)) []VecVirtual {
	v := make([]VecVirtual, n)
	for i := range v {
		v[i] = alloc()
		xor(v[i], v[i], v[i])
	}
	return v
}

// vpxor is VPXOR in the form zeroed takes.
func vpxor(ops ...Op) { VPXOR(ops[0], ops[1], ops[2]) }

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
