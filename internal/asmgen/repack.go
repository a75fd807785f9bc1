package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// nibbleRowsAVX2 generates the loader's move of k-quant nibbles into
// LayoutR16 (pkg/kernels/layout_repack.go, nibbleRowsGeneric): 32 quant
// bytes of each of 16 rows, eight per chunk pair, into four chunks of
// low nibbles and four of high ones. Per row, one load and twelve
// operations turn the 32 bytes into the eight output dwords (low and high
// nibbles of chunk k in dwords 2k and 2k+1); eight rows' dwords are then
// transposed (dwords, qwords, 128-bit lanes) so that each chunk's eight
// rows go out in one 32-byte store, where the Go version stores a row pair
// at a time.
func nibbleRowsAVX2() {
	const name = "nibbleRowsAVX2Asm"
	kernel(name, "func(out *byte, hi int, src *byte, rb int)",
		name+" writes 16 rows' chunks k < 4 at out + 64k and out + hi + 64k (row l at byte 4l) from",
		"the 32 bytes at src + l·rb, as nibbleRowsGeneric does.")
	out, hi := Load(Param("out"), GP64()), Load(Param("hi"), GP64())
	src, rb := Load(Param("src"), GP64()), Load(Param("rb"), GP64())
	rb3 := GP64()
	LEAQ(Mem{Base: rb, Index: rb, Scale: 2}, rb3)
	m4 := YMM()
	VMOVDQU(m4Z, m4)
	for o := range 2 { // rows 8o..8o+7
		p := [2]Register{src, GP64()}
		LEAQ(Mem{Base: src, Index: rb, Scale: 4}, p[1])
		rows := make([]VecVirtual, 8)
		for r := range rows {
			m := Mem{Base: p[r/4]}
			switch r % 4 {
			case 1:
				m = Mem{Base: p[r/4], Index: rb, Scale: 1}
			case 2:
				m = Mem{Base: p[r/4], Index: rb, Scale: 2}
			case 3:
				m = Mem{Base: p[r/4], Index: rb3, Scale: 1}
			}
			// Qword k: bytes 0-3 (a) hold chunk k's columns 0-3 in their
			// low nibbles and chunk 4+k's in their high ones, bytes 4-7 (b)
			// columns 4-7. lo = a&15 | (b&15)<<4, hi = a>>4&15 | b&0xf0.
			x, lo, hi4, top, t := YMM(), YMM(), YMM(), YMM(), YMM()
			VMOVDQU(m, x)
			VPAND(m4, x, lo)
			VPSRLW(U8(4), x, hi4)
			VPAND(m4, hi4, hi4)
			VPANDN(x, m4, top)
			VPSRLQ(U8(32), lo, t)
			VPSLLD(U8(4), t, t)
			VPOR(t, lo, lo)
			VPSRLQ(U8(32), top, top)
			VPOR(top, hi4, hi4)
			VPSLLQ(U8(32), hi4, hi4)
			VPBLENDD(U8(0xaa), hi4, lo, lo) // dword 2k: chunk k, 2k+1: chunk 4+k
			rows[r] = lo
		}
		// Transpose: u[j] = dword j of rows 0-3 (low lane), of rows 4-7 (high).
		var t [8]VecVirtual
		for i := 0; i < 8; i += 2 {
			t[i], t[i+1] = YMM(), YMM()
			VPUNPCKLDQ(rows[i+1], rows[i], t[i])
			VPUNPCKHDQ(rows[i+1], rows[i], t[i+1])
		}
		var u [8]VecVirtual // u[4g+j]: dwords j and 4+j of rows 4g..4g+3
		for g := range 2 {
			a, b := t[4*g], t[4*g+1] // rows 4g, 4g+1 with 4g+2, 4g+3: dwords 0,1 and 2,3
			c, d := t[4*g+2], t[4*g+3]
			for j, pair := range [4][2]VecVirtual{{a, c}, {a, c}, {b, d}, {b, d}} {
				u[4*g+j] = YMM()
				if j%2 == 0 {
					VPUNPCKLQDQ(pair[1], pair[0], u[4*g+j])
				} else {
					VPUNPCKHQDQ(pair[1], pair[0], u[4*g+j])
				}
			}
		}
		for j := range 4 {
			for half, imm := range []uint8{0x20, 0x31} {
				col := j + 4*half // dword col of the eight rows
				v := YMM()
				VPERM2I128(U8(imm), u[4+j], u[j], v)
				m := Mem{Base: out, Disp: 64*(col/2) + 32*o}
				if col%2 == 1 {
					m = Mem{Base: out, Index: hi, Scale: 1, Disp: 64*(col/2) + 32*o}
				}
				VMOVDQU(v, m)
			}
		}
		if o == 0 {
			LEAQ(Mem{Base: src, Index: rb, Scale: 8}, src)
		}
	}
	VZEROUPPER()
	RET()
}
