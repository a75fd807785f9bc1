package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The attention kernels over q8_0 KV caches (both tiers) and the value
// kernels over f16 ones (issue 17); the f16 caches' scores are keys.go's.

// dotsQ8AVX512 is attention's scores over a q8_0 cache, sixteen rows at a
// time: a row's block of 32 values is widened to d·float32(q)
// (Dequantize's values) sixteen at a time and multiplied into the row's
// register of sixteen float32 lanes, and the sixteen registers are folded
// together (fold16) into one register of the sixteen sums; the scores
// agree with DotF32's within float32 summation error.
func dotsQ8AVX512() {
	dots16("dotsQ8AVX512Asm", "values of the q8_0 row", 32, 34, func(row func(r, disp int) Mem, qp Register, acc []VecVirtual) {
		qv := []VecVirtual{ZMM(), ZMM()}
		VMOVUPS(Mem{Base: qp}, qv[0])
		VMOVUPS(Mem{Base: qp, Disp: 64}, qv[1])
		for r, a := range acc {
			d, dh := ZMM(), YMM()
			VPBROADCASTW(row(r, 0), dh)
			VCVTPH2PS(dh, d)
			for h := range 2 {
				t := ZMM()
				VPMOVSXBD(row(r, 2+16*h), t)
				VCVTDQ2PS(t, t)
				VMULPS(d, t, t)
				VFMADD231PS(qv[h], t, a)
			}
		}
	})
}

// dots16 is the frame of the sixteen-row score kernels: body accumulates
// the cols columns of each row at row(r, 0) (the rows' current column
// group, colBytes bytes) times the query's at qp into acc[r].
func dots16(name, what string, cols, colBytes int, body func(row func(r, disp int) Mem, qp Register, acc []VecVirtual)) {
	kernel(name, "func(k *byte, stride int, q *float32, hd int, n int, out *float32)",
		fmt.Sprintf("%s sets out[i] to the dot of q[:hd] with the hd %s at k + i·stride,", name, what),
		fmt.Sprintf("for i < n (hd %% %d == 0, n %% 16 == 0), sixteen rows at a time folded into one register.", cols))
	k, stride, q := Load(Param("k"), GP64()), Load(Param("stride"), GP64()), Load(Param("q"), GP64())
	hd, n, out := Load(Param("hd"), GP64()), Load(Param("n"), GP64()), Load(Param("out"), GP64())
	s3 := GP64()
	LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, s3)
	rb := GP64() // bytes of a row's hd values
	MOVQ(hd, rb)
	SHRQ(U8(bitsOf(cols)), rb)
	IMUL3Q(Imm(uint64(colBytes)), rb, rb)
	b := []Register{k, GP64(), GP64(), GP64()} // rows 0, 4, 8, 12 of the block
	for i := 1; i < 4; i++ {
		LEAQ(Mem{Base: b[i-1], Index: stride, Scale: 4}, b[i])
	}
	row := func(r, disp int) Mem {
		switch r % 4 {
		case 0:
			return Mem{Base: b[r/4], Disp: disp}
		case 1:
			return Mem{Base: b[r/4], Index: stride, Scale: 1, Disp: disp}
		case 2:
			return Mem{Base: b[r/4], Index: stride, Scale: 2, Disp: disp}
		}
		return Mem{Base: b[r/4], Index: s3, Scale: 1, Disp: disp}
	}
	Label(name + "_block")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	acc := zeroed(16, ZMM, VPXORD)
	j, qp := GP64(), GP64()
	MOVQ(hd, j)
	MOVQ(q, qp)
	Label(name + "_col")
	body(row, qp, acc)
	for _, p := range b {
		ADDQ(U32(colBytes), p)
	}
	ADDQ(U32(4*cols), qp)
	SUBQ(U32(cols), j)
	JNZ(LabelRef(name + "_col"))
	for _, p := range b {
		SUBQ(rb, p)
	}
	VMOVUPS(fold16(acc), Mem{Base: out})
	ADDQ(U32(64), out)
	// The next block starts 16 rows on: 4 rows past the last base.
	LEAQ(Mem{Base: b[3], Index: stride, Scale: 4}, b[0])
	for i := 1; i < 4; i++ {
		LEAQ(Mem{Base: b[i-1], Index: stride, Scale: 4}, b[i])
	}
	SUBQ(U32(16), n)
	JMP(LabelRef(name + "_block"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// bitsOf is log2 of the power of two n.
func bitsOf(n int) int {
	b := 0
	for 1<<b < n {
		b++
	}
	return b
}

// fold16 sums each of the sixteen registers' lanes into lane r of the
// result: rows r and r+4 share a register after adding the halves of 256
// bits (lanes 0-1 of 128 bits r's, 2-3 r+4's), rows r, r+4, r+8, r+12 one
// after adding the quarters (one 128-bit lane each), and the four lanes of
// each quarter are summed by a 4×4 transpose, which leaves row 4L+j in lane
// j of quarter L: the natural order.
func fold16(acc []VecVirtual) VecVirtual {
	half := func(x, y VecVirtual, lo, hi uint8) VecVirtual {
		p, s := ZMM(), ZMM()
		VSHUFF32X4(U8(lo), y, x, p)
		VSHUFF32X4(U8(hi), y, x, s)
		VADDPS(s, p, p)
		return p
	}
	c := make([]VecVirtual, 4)
	for j := range 4 {
		ab := half(acc[j], acc[j+4], 0x44, 0xEE)    // [j: L0+L2, L1+L3 | j+4: ...]
		cd := half(acc[j+8], acc[j+12], 0x44, 0xEE) // the same for j+8, j+12
		c[j] = half(ab, cd, 0x88, 0xDD)             // quarter L: row 4L+j's four partial sums
	}
	t0, t1, t2, t3 := ZMM(), ZMM(), ZMM(), ZMM()
	VUNPCKLPS(c[1], c[0], t0)
	VUNPCKHPS(c[1], c[0], t1)
	VADDPS(t1, t0, t0) // per quarter: c0 lanes 0+2, c1 0+2, c0 1+3, c1 1+3
	VUNPCKLPS(c[3], c[2], t2)
	VUNPCKHPS(c[3], c[2], t3)
	VADDPS(t3, t2, t2)
	VUNPCKLPD(t2, t0, t1)
	VUNPCKHPD(t2, t0, t3)
	VADDPS(t3, t1, t1)
	return t1
}

// dotsQ8QsAVX512 is dotsQ8AVX512 for Q queries at once (2 to 4: a GQA
// group's heads, a tile of prefill): a row's sixteen values d·float32(q)
// are computed once for the Q queries, in dotsQ8AVX512's order, and each
// score keeps its chain and fold, so its bits. The rows go four at a
// time through the body (eight rows' scales and values beside sixteen
// accumulators would not fit in 32 registers).
func dotsQ8QsAVX512(Q int) {
	name := fmt.Sprintf("dotsQ8Q%dAVX512Asm", Q)
	dotsQs(name, "values of the q8_0 row", Q, 32, 34, func(row func(r, disp int) Mem, query func(j, disp int) Mem, acc [][]VecVirtual) {
		for g := 0; g < len(acc[0]); g += 4 {
			d := make([]VecVirtual, 4)
			for r := range d {
				d[r] = ZMM()
				dh := YMM()
				VPBROADCASTW(row(g+r, 0), dh)
				VCVTPH2PS(dh, d[r])
			}
			for h := range 2 {
				t := make([]VecVirtual, 4)
				for r := range t {
					t[r] = ZMM()
					VPMOVSXBD(row(g+r, 2+16*h), t[r])
					VCVTDQ2PS(t[r], t[r])
					VMULPS(d[r], t[r], t[r])
				}
				for j := range acc {
					qv := ZMM()
					VMOVUPS(query(j, 64*h), qv)
					for r := range t {
						VFMADD231PS(qv, t[r], acc[j][g+r])
					}
				}
			}
		}
	})
}

// qsRows is the rows a Q-query AVX-512 score kernel takes at a time: as
// many as fold16's sixteen registers hold for Q queries, in whole 128-bit
// quarters of the folded sums — eight for two queries, four for three or
// four. pkg/kernels' dispatch (qsRowsAVX512) must agree.
func qsRows(Q int) int {
	if Q == 2 {
		return 8
	}
	return 4
}

// dotsQs is the frame of the Q-query AVX-512 score kernels, R = qsRows(Q)
// rows a block: body accumulates the cols columns of rows r < R at
// row(r, 0) (colBytes bytes) times query j's at query(j, 0) into
// acc[j][r]; fold16 then leaves query j's R sums in lanes R·j to R·j+R-1,
// stored at out + j·os floats. Three queries fill fold16's fourth quarter
// with the first query's registers again, and do not store it.
func dotsQs(name, what string, Q, cols, colBytes int, body func(row func(r, disp int) Mem, query func(j, disp int) Mem, acc [][]VecVirtual)) {
	R := qsRows(Q)
	kernel(name, "func(k *byte, stride int, q *float32, hd int, n int, out *float32, os int)",
		fmt.Sprintf("%s sets out[j·os+i] to the dot of q[j·hd:(j+1)·hd] with the hd %s at k + i·stride,", name, what),
		fmt.Sprintf("for j < %d and i < n (hd %% %d == 0, n %% %d == 0), %d rows at a time.", Q, cols, R, R))
	k, stride, q := Load(Param("k"), GP64()), Load(Param("stride"), GP64()), Load(Param("q"), GP64())
	hd, n, out, os := Load(Param("hd"), GP64()), Load(Param("n"), GP64()), Load(Param("out"), GP64()), Load(Param("os"), GP64())
	s3, qs := GP64(), GP64()
	LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, s3)
	MOVQ(hd, qs)
	SHLQ(U8(2), qs) // bytes of one query
	SHLQ(U8(2), os)
	var qs3, os3, k4 Register // nth's third items; row 4 of a block of eight
	if Q == 4 {
		qs3, os3 = GP64(), GP64()
		LEAQ(Mem{Base: qs, Index: qs, Scale: 2}, qs3)
		LEAQ(Mem{Base: os, Index: os, Scale: 2}, os3)
	}
	if R == 8 {
		k4 = GP64()
		LEAQ(Mem{Base: k, Index: stride, Scale: 4}, k4)
	}
	row := func(r, disp int) Mem {
		if r < 4 {
			return nth(k, stride, s3, r, disp)
		}
		return nth(k4, stride, s3, r-4, disp)
	}
	rb := GP64() // bytes of a row's hd values
	MOVQ(hd, rb)
	SHRQ(U8(bitsOf(cols)), rb)
	IMUL3Q(Imm(uint64(colBytes)), rb, rb)
	Label(name + "_block")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	acc := make([][]VecVirtual, Q)
	for j := range acc {
		acc[j] = zeroed(R, ZMM, VPXORD)
	}
	j, qp := GP64(), GP64()
	MOVQ(hd, j)
	MOVQ(q, qp)
	Label(name + "_col")
	body(row, func(i, disp int) Mem { return nth(qp, qs, qs3, i, disp) }, acc)
	ADDQ(U32(colBytes), k)
	if R == 8 {
		ADDQ(U32(colBytes), k4)
	}
	ADDQ(U32(4*cols), qp)
	SUBQ(U32(cols), j)
	JNZ(LabelRef(name + "_col"))
	SUBQ(rb, k)
	var flat []VecVirtual
	for _, a := range acc {
		flat = append(flat, a...)
	}
	sums := fold16(append(flat, flat[:16-len(flat)]...))
	for i := range Q {
		if R == 8 {
			VEXTRACTF32X8(U8(i), sums, nth(out, os, os3, i, 0))
		} else {
			VEXTRACTF32X4(U8(i), sums, nth(out, os, os3, i, 0))
		}
	}
	ADDQ(U32(4*R), out)
	// The next block starts R rows on.
	LEAQ(Mem{Base: k, Index: stride, Scale: uint8(R)}, k)
	if R == 8 {
		LEAQ(Mem{Base: k, Index: stride, Scale: 4}, k4)
	}
	SUBQ(U32(R), n)
	JMP(LabelRef(name + "_block"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// dotsQ8AVX2 is attention's scores over a q8_0 cache, row by row: a row's
// block of 32 values is widened to d·float32(q) (Dequantize's values)
// eight at a time, each eight multiplied into its own chain of eight lanes; the chains and then
// the lanes are added pairwise at the end. Row by row, so a row's score
// never depends on where in the call it falls.
func dotsQ8AVX2() {
	name := "dotsQ8AVX2Asm"
	dotsAVX2(name, 1, 34, dotsQ8AVX2Cols,
		name+" sets out[i] to the dot of q[:hd] with the hd values of the q8_0 row at k + i·stride,",
		"for i < n (hd % 32 == 0), in float32 with fused multiply-adds in four chains of eight lanes.")
}

// dotsQ8AVX2Cols widens the q8_0 block at kp, its scale then each chain's
// eight values d·float32(q), and multiplies them into each query's chain.
func dotsQ8AVX2Cols(kp Register, query func(j, disp int) Mem, chains []int, acc [][]VecVirtual) {
	d, dh := YMM(), XMM()
	VPBROADCASTW(Mem{Base: kp}, dh)
	VCVTPH2PS(dh, d)
	for i, c := range chains {
		t := YMM()
		VPMOVSXBD(Mem{Base: kp, Disp: 2 + 8*c}, t)
		VCVTDQ2PS(t, t)
		VMULPS(d, t, t)
		for j := range acc {
			VFMADD231PS(query(j, 32*c), t, acc[j][i])
		}
	}
}

func dotsQ8QsAVX2(Q int) {
	name := fmt.Sprintf("dotsQ8Q%dAVX2Asm", Q)
	dotsAVX2(name, Q, 34, dotsQ8AVX2Cols,
		name+" sets out[j·os+i] to the dot of q[j·hd:(j+1)·hd] with the hd values of the q8_0 row at",
		fmt.Sprintf("k + i·stride, for j < %d and i < n (hd %% 32 == 0), each as dotsQ8AVX2Asm computes it.", Q))
}

// dotsAVX2 is the frame of the AVX2 score kernels, row by row, for Q ≤ 4
// queries: a score is four chains of eight lanes of fused multiply-adds,
// chain c over the columns 32j+8c..32j+8c+7 (cols multiplies query j's at
// query(j, 0) into acc[j] for the chains it is given, the row's current 32
// columns at kp, colBytes bytes), the chains added (0+1)+(2+3) and the
// sum's lanes by horizontal8. Up to three queries run their chains
// together; four queries' sixteen chains do not fit in sixteen registers
// with the row's values, so chains 0 and 1 pass over the row first and 2
// and 3 after: the chains are independent, and every score keeps the
// one-query kernel's bits.
func dotsAVX2(name string, Q, colBytes int, cols func(kp Register, query func(j, disp int) Mem, chains []int, acc [][]VecVirtual), doc ...string) {
	sig := "func(k *byte, stride int, q *float32, hd int, n int, out *float32)"
	if Q > 1 {
		sig = "func(k *byte, stride int, q *float32, hd int, n int, out *float32, os int)"
	}
	kernel(name, sig, doc...)
	k, stride, q := Load(Param("k"), GP64()), Load(Param("stride"), GP64()), Load(Param("q"), GP64())
	hd, n, out := Load(Param("hd"), GP64()), Load(Param("n"), GP64()), Load(Param("out"), GP64())
	var qs, qs3, os, os3 Register
	if Q > 1 {
		os, qs, qs3, os3 = Load(Param("os"), GP64()), GP64(), GP64(), GP64()
		MOVQ(hd, qs)
		SHLQ(U8(2), qs) // bytes of one query
		LEAQ(Mem{Base: qs, Index: qs, Scale: 2}, qs3)
		SHLQ(U8(2), os)
		LEAQ(Mem{Base: os, Index: os, Scale: 2}, os3)
	}
	Label(name + "_row")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	passes := 1
	if Q > 3 {
		passes = 2
	}
	per := 4 / passes
	j, kp, qp := GP64(), GP64(), GP64()
	query := func(i, disp int) Mem { return nth(qp, qs, qs3, i, disp) }
	sums := make([]VecVirtual, Q)
	for p := range passes {
		acc := make([][]VecVirtual, Q)
		for i := range acc {
			acc[i] = zeroed(per, YMM, VXORPS)
		}
		MOVQ(hd, j)
		MOVQ(k, kp)
		MOVQ(q, qp)
		col := passLabel(name+"_col", p)
		Label(col)
		chains := make([]int, per)
		for i := range chains {
			chains[i] = p*per + i
		}
		cols(kp, query, chains, acc)
		ADDQ(U32(colBytes), kp)
		ADDQ(U32(128), qp)
		SUBQ(U32(32), j)
		JNZ(LabelRef(col))
		for i, a := range acc {
			for c := 0; c < per; c += 2 {
				VADDPS(a[c+1], a[c], a[c]) // chains 0+1, 2+3
			}
			if p == 0 {
				sums[i] = a[0]
			}
			if per == 4 {
				VADDPS(a[2], a[0], a[0])
			} else if p > 0 {
				VADDPS(a[0], sums[i], sums[i])
			}
		}
	}
	if Q == 4 {
		u, hi := horizontal8x4(sums), XMM()
		VMOVSS(u.AsX(), nth(out, os, os3, 0, 0))
		VEXTRACTPS(U8(2), u.AsX(), nth(out, os, os3, 2, 0))
		VEXTRACTF128(U8(1), u, hi)
		VMOVSS(hi, nth(out, os, os3, 1, 0))
		VEXTRACTPS(U8(2), hi, nth(out, os, os3, 3, 0))
	} else {
		for i, s := range sums {
			VMOVSS(horizontal8(s, VADDPS, VADDSS), nth(out, os, os3, i, 0))
		}
	}
	ADDQ(stride, k)
	ADDQ(U32(4), out)
	DECQ(n)
	JMP(LabelRef(name + "_row"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// horizontal8x4 is horizontal8 (VADDPS) of four registers at once, the
// same adds of the same operands in the same order, so the same sums: in
// lanes 0 and 2 those of s[0] and s[2], in lanes 4 and 6 those of s[1] and
// s[3]. Sixteen instructions for the four sums instead of 24, and no
// scalar add.
func horizontal8x4(s []VecVirtual) VecVirtual {
	halves := func(x, y VecVirtual) VecVirtual {
		lo, hi := YMM(), YMM()
		VINSERTF128(U8(1), y.AsX(), x, lo) // x's low half, y's low half
		VPERM2F128(U8(0x31), y, x, hi)     // x's high half, y's high half
		VADDPS(hi, lo, lo)
		return lo
	}
	a, c := halves(s[0], s[1]), halves(s[2], s[3])
	u, v := YMM(), YMM()
	VUNPCKLPD(c, a, u) // in each 128-bit lane: lanes 0 and 1 of a, of c
	VUNPCKHPD(c, a, v) // lanes 2 and 3
	VADDPS(v, u, u)    // 0+2, 1+3
	VMOVSHDUP(u, v)
	VADDPS(v, u, u) // (0+2)+(1+3)
	return u
}

// passLabel is the label of pass p of a loop: base for the first, so that
// one-pass kernels keep their labels, base+p after.
func passLabel(base string, p int) string {
	if p == 0 {
		return base
	}
	return base + fmt.Sprint(p)
}

// nth addresses item i (< 4) of a run that starts at base, s bytes apart
// (s3 = 3·s), plus disp.
func nth(base, s, s3 Register, i, disp int) Mem {
	switch i {
	case 0:
		return Mem{Base: base, Disp: disp}
	case 3:
		return Mem{Base: base, Index: s3, Scale: 1, Disp: disp}
	}
	return Mem{Base: base, Index: s, Scale: uint8(i), Disp: disp}
}

// The value kernels: attention's o += Σ_i w_i·v_i over consecutive cache
// rows for G ≤ 4 query heads of a GQA group, each element a chain of
// fused multiply-adds o = fma(w_i, v_i[j], o) over the rows in order, so
// exactly what AxpyF16 (or the q8_0 twin) row by row gives, whether the
// heads run together or one by one; running them together widens each
// row once for all G heads.

// axpysF16HeadsAVX512 holds 64 columns of each head in four registers of
// sixteen lanes, 4·G chains side by side.
func axpysF16HeadsAVX512(G int) {
	name := fmt.Sprintf("axpysF16Heads%dAVX512Asm", G)
	axpys(name, G, true, valueShape{vec: ZMM, half: YMM, lanes: 16, R: 4, parts: 1, cols: 64, colBytes: 128, ahead: true}, nil, axpysF16Cols,
		fmt.Sprintf("%s sets o[h·hd+j] = fma(w[h·ws+i], v_i[j], o[h·hd+j]) for h < %d and i = 0..n-1 in turn,", name, G),
		"v_i the hd float16 values at v + i·stride (hd % 64 == 0, n > 0).")
}

// axpysQ8HeadsAVX512 is axpysF16HeadsAVX512 over a q8_0 cache: each row's
// 64 columns (two blocks of 32 int8 and an f16 scale) are widened once,
// x = d·float32(q) as Dequantize computes it.
func axpysQ8HeadsAVX512(G int) {
	name := fmt.Sprintf("axpysQ8Heads%dAVX512Asm", G)
	axpys(name, G, true, valueShape{vec: ZMM, half: YMM, lanes: 16, R: 4, parts: 1, cols: 64, colBytes: 68}, nil, axpysQ8Cols,
		fmt.Sprintf("%s sets o[h·hd+j] = fma(w[h·ws+i], x_i[j], o[h·hd+j]) for h < %d and i = 0..n-1 in turn,", name, G),
		"x_i the hd values of the q8_0 row at v + i·stride, d·q in float32 (hd % 64 == 0, n > 0).")
}

// axpysF16AVX2 is attention's value accumulation over consecutive cache
// positions, one head: o += Σ_i w[i]·v_i for the f16 rows v_i at v +
// i·stride. It keeps 64 columns of o in eight registers while all n rows
// pass, one fused multiply-add per element and row, in row order.
func axpysF16AVX2() {
	name := "axpysF16AVX2Asm"
	axpys(name, 1, false, valueShape{vec: YMM, half: XMM, lanes: 8, R: 8, parts: 1, cols: 64, colBytes: 128, ahead: true}, nil, axpysF16Cols,
		name+" sets o[j] = fma(w[i], v_i[j], o[j]) for i = 0..n-1 in turn, v_i the hd float16 values",
		"at v + i·stride (hd % 64 == 0, n > 0).")
}

// axpysQ8AVX2 is axpysF16AVX2 over a q8_0 cache.
func axpysQ8AVX2() {
	name := "axpysQ8AVX2Asm"
	axpys(name, 1, false, valueShape{vec: YMM, half: XMM, lanes: 8, R: 8, parts: 1, cols: 64, colBytes: 68}, nil, axpysQ8Cols,
		name+" sets o[j] = fma(w[i], x_i[j], o[j]) for i = 0..n-1 in turn, x_i the hd values of the",
		"q8_0 row at v + i·stride, d·q in float32 (hd % 64 == 0, n > 0).")
}

// axpysF16HeadsAVX2 and axpysQ8HeadsAVX2 are the AVX-512 kernels in
// sixteen registers of eight lanes: G heads' accumulators, their weights
// and the row's values must fit. Twelve accumulators keep the two
// multiply-add pipes busy (eight would leave no slack over their latency),
// so a pass over the rows covers 48 columns of two heads, 32 of three and
// 24 of four, with the weights broadcast as used (late) so that four
// heads' weights need one register; the columns left over go 16 at a
// time (24 and 48 wide steps stop where 16 or 32 columns remain: heads of
// 64 take 24+24+16, of 128 four steps of 24 and two of 16). q8_0: 32
// columns of two heads; a block of 32 in two passes of 16 for three or
// four, each pass widening its half of the block.
func axpysF16HeadsAVX2(G int) {
	name := fmt.Sprintf("axpysF16Heads%dAVX2Asm", G)
	cols := func(R int, late bool) valueShape {
		return valueShape{vec: YMM, half: XMM, lanes: 8, R: R, parts: 1, cols: 8 * R, colBytes: 16 * R, ahead: true, late: late}
	}
	var shape valueShape
	var tails []valueShape
	switch G {
	case 2:
		shape, tails = cols(6, false), []valueShape{cols(2, false)}
	case 3:
		shape = cols(4, false)
	case 4:
		shape, tails = cols(3, true), []valueShape{cols(2, false)}
	}
	step := shape.cols
	if len(tails) > 0 {
		step = tails[len(tails)-1].cols
	}
	axpys(name, G, true, shape, tails, axpysF16Cols,
		fmt.Sprintf("%s sets o[h·hd+j] = fma(w[h·ws+i], v_i[j], o[h·hd+j]) for h < %d and i = 0..n-1 in turn,", name, G),
		fmt.Sprintf("v_i the hd float16 values at v + i·stride (hd %% %d == 0, n > 0).", step))
}

func axpysQ8HeadsAVX2(G int) {
	name := fmt.Sprintf("axpysQ8Heads%dAVX2Asm", G)
	shape := valueShape{vec: YMM, half: XMM, lanes: 8, R: 4, parts: 1, cols: 32, colBytes: 34}
	if G > 2 {
		shape = valueShape{vec: YMM, half: XMM, lanes: 8, R: 2, parts: 2, cols: 32, colBytes: 34}
	}
	axpys(name, G, true, shape, nil, axpysQ8Cols,
		fmt.Sprintf("%s sets o[h·hd+j] = fma(w[h·ws+i], x_i[j], o[h·hd+j]) for h < %d and i = 0..n-1 in turn,", name, G),
		"x_i the hd values of the q8_0 row at v + i·stride, d·q in float32 (hd % 32 == 0, n > 0).")
}

// valueShape is how a value kernel walks the columns: cols of them
// (colBytes bytes of a row) a step, in parts passes over the rows, each
// holding R registers (vec, of lanes float32 lanes; half is the register
// of half its width) of every head's outputs.
type valueShape struct {
	vec, half                       func() VecVirtual
	lanes, R, parts, cols, colBytes int
	ahead                           bool // prefetch the row n rows on (the next tile's)
	late                            bool // broadcast a head's weight when it is used (see axpysF16Cols)
}

// axpysF16Cols widens the R·lanes float16 values of part p at vp and adds
// them into each head's accumulators with its weight: a column at a time
// into every head, or with sh.late all R columns first, then head by head
// (one register for the weight, R for the values).
func axpysF16Cols(sh valueShape, vp Register, p int, w func(h int) VecVirtual, acc [][]VecVirtual) {
	widen := func(c int) VecVirtual {
		t := sh.vec()
		VCVTPH2PS(Mem{Base: vp, Disp: 2 * sh.lanes * (p*sh.R + c)}, t)
		return t
	}
	if sh.late {
		ts := make([]VecVirtual, sh.R)
		for c := range ts {
			ts[c] = widen(c)
		}
		for h := range acc {
			wh := w(h)
			for c, t := range ts {
				VFMADD231PS(t, wh, acc[h][c])
			}
		}
		return
	}
	for c := range sh.R {
		t := widen(c)
		for h := range acc {
			VFMADD231PS(t, w(h), acc[h][c])
		}
	}
}

// axpysQ8Cols is axpysF16Cols over q8_0 blocks: the scale d of each block
// the part reaches, then its values d·float32(q), lanes at a time.
func axpysQ8Cols(sh valueShape, vp Register, p int, w func(h int) VecVirtual, acc [][]VecVirtual) {
	var d VecVirtual
	blk := -1
	for c := range sh.R {
		x := sh.lanes * (p*sh.R + c) // the step's column
		if x/32 != blk {
			blk = x / 32
			d = sh.vec()
			dh := sh.half()
			VPBROADCASTW(Mem{Base: vp, Disp: 34 * blk}, dh)
			VCVTPH2PS(dh, d)
		}
		t := sh.vec()
		VPMOVSXBD(Mem{Base: vp, Disp: 34*blk + 2 + x%32}, t)
		VCVTDQ2PS(t, t)
		VMULPS(d, t, t)
		for h := range acc {
			VFMADD231PS(t, w(h), acc[h][c])
		}
	}
}

// axpys is the frame of the value kernels: for each step of sh.cols
// columns and each of its parts, it loads the G heads' outputs, passes
// over the n rows (cols widening the part's columns of the row at vp into
// acc[h] with head h's weight), and stores them. Steps of sh.cols go on
// while exactly sh.cols columns remain or at least sh.cols and a step of
// tails[0]; then steps of each of tails, narrower in turn, while its
// columns remain. A one-head kernel (heads false) takes no weight stride.
func axpys(name string, G int, heads bool, sh valueShape, tails []valueShape, cols colsFunc, doc ...string) {
	var f valueFrame
	f.G = G
	if heads {
		kernel(name, "func(w *float32, ws int, n int, v *byte, stride int, o *float32, hd int)", doc...)
		f.w, f.ws, f.n = Load(Param("w"), GP64()), Load(Param("ws"), GP64()), Load(Param("n"), GP64())
		f.v, f.stride, f.o, f.hd = Load(Param("v"), GP64()), Load(Param("stride"), GP64()), Load(Param("o"), GP64()), Load(Param("hd"), GP64())
		SHLQ(U8(2), f.ws) // bytes
		f.os = GP64()     // bytes of one head's output
		MOVQ(f.hd, f.os)
		SHLQ(U8(2), f.os)
		if G > 3 {
			f.ws3, f.os3 = GP64(), GP64()
			LEAQ(Mem{Base: f.ws, Index: f.ws, Scale: 2}, f.ws3)
			LEAQ(Mem{Base: f.os, Index: f.os, Scale: 2}, f.os3)
		}
	} else {
		kernel(name, "func(w *float32, v *byte, stride int, n int, o *float32, hd int)", doc...)
		f.w, f.v, f.stride = Load(Param("w"), GP64()), Load(Param("v"), GP64()), Load(Param("stride"), GP64())
		f.n, f.o, f.hd = Load(Param("n"), GP64()), Load(Param("o"), GP64()), Load(Param("hd"), GP64())
	}
	if sh.ahead {
		f.ahead = GP64() // bytes of n rows
		MOVQ(f.n, f.ahead)
		IMULQ(f.stride, f.ahead)
	}
	shapes := append([]valueShape{sh}, tails...)
	for i, s := range shapes {
		next := name + "_done"
		if i+1 < len(shapes) {
			next = passLabel(name+"_cols", i+1)
		}
		Label(passLabel(name+"_cols", i))
		switch {
		case len(shapes) == 1:
			TESTQ(f.hd, f.hd)
			JZ(LabelRef(next))
		case i == 0:
			// A wide step only where it leaves none or a whole step of
			// the next shape: narrow steps keep fewer chains.
			CMPQ(f.hd, U32(s.cols))
			JE(LabelRef(name + "_wide"))
			CMPQ(f.hd, U32(s.cols+shapes[1].cols))
			JB(LabelRef(next))
			Label(name + "_wide")
		default:
			CMPQ(f.hd, U32(s.cols))
			JB(LabelRef(next))
		}
		f.step(passLabel(name, i), s, cols)
		JMP(LabelRef(passLabel(name+"_cols", i)))
	}
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// colsFunc widens the columns of part p of a step (shape sh) of the row at
// vp and adds them into acc[h] with weight w(h).
type colsFunc func(sh valueShape, vp Register, p int, w func(h int) VecVirtual, acc [][]VecVirtual)

// valueFrame is the registers of a value kernel's frame.
type valueFrame struct {
	G                                               int
	w, ws, n, v, stride, o, hd, os, ws3, os3, ahead Register
}

// step emits one step of sh.cols columns: for each of its parts, the G
// heads' outputs in registers while the n rows pass; then v, o and hd move
// on by the step's columns. With sh.late each head's weight is broadcast
// as cols asks for it; without, all G are broadcast before the row's
// columns.
func (f *valueFrame) step(name string, sh valueShape, cols colsFunc) {
	for p := range sh.parts {
		out := func(h, c int) Mem { return nth(f.o, f.os, f.os3, h, 4*sh.lanes*(p*sh.R+c)) }
		acc := make([][]VecVirtual, f.G)
		for h := range acc {
			acc[h] = make([]VecVirtual, sh.R)
			for c := range acc[h] {
				acc[h][c] = sh.vec()
				VMOVUPS(out(h, c), acc[h][c])
			}
		}
		i, wp, vp := GP64(), GP64(), GP64()
		MOVQ(f.n, i)
		MOVQ(f.w, wp)
		MOVQ(f.v, vp)
		row := passLabel(name+"_row", p)
		Label(row)
		broadcast := func(h int) VecVirtual {
			x := sh.vec()
			VBROADCASTSS(nth(wp, f.ws, f.ws3, h, 0), x)
			return x
		}
		w := broadcast
		if !sh.late {
			wb := make([]VecVirtual, f.G)
			for h := range wb {
				wb[h] = broadcast(h)
			}
			w = func(h int) VecVirtual { return wb[h] }
		}
		if sh.ahead {
			// The first pass over a tile from memory: its rows' next
			// tile's, so that they are in by the next call.
			PREFETCHT0(Mem{Base: vp, Index: f.ahead, Scale: 1})
		}
		cols(sh, vp, p, w, acc)
		ADDQ(U32(4), wp)
		ADDQ(f.stride, vp)
		DECQ(i)
		JNZ(LabelRef(row))
		for h := range acc {
			for c, a := range acc[h] {
				VMOVUPS(a, out(h, c))
			}
		}
	}
	ADDQ(U32(sh.colBytes), f.v)
	ADDQ(U32(4*sh.cols), f.o)
	SUBQ(U32(sh.cols), f.hd)
}
