package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Layout is how a weight matrix's blocks are arranged in memory.
//
// LayoutRows is ggml's: each row's blocks in order, rows one after another.
// It is what GGUF files hold and what every kernel reads.
//
// LayoutR16 interleaves groups of 16 rows, one super-block (256 columns) at
// a time, with the scales pre-unpacked, so that a 512-bit register holds the
// same four columns of 16 rows: lane l of every vector is weight row l of the
// group. The kernels then take dot products with VPDPBUSD against one
// activation dword broadcast to all lanes, and apply each sub-block's scale
// to 16 rows with one multiply. A group block is, for Q4_K (2368 bytes =
// 16 × 144 + 64: the unpacked scales and mins take 4 bytes more per row):
//
//	0     d[16]     float16, row l's super-block scale
//	32    dmin[16]  float16
//	64    sc[8][16] uint8, sub-block j's 6-bit scale of row l
//	192   mn[4][16][2] uint8, the 6-bit mins of sub-blocks 2p and 2p+1 of row l
//	320   qs[32][16][4] chunk c: byte i of row l holds column 8c+i in its
//	      low nibble and column 8c+4+i in its high nibble
//
// and for Q6_K (3360 bytes = 16 × 210, the same size as ggml's):
//
//	0     d[16]     float16
//	32    sc[8][16][2] int8, the scales of sub-blocks 2p and 2p+1 of row l
//	288   ql[32][16][4] the low four bits, arranged as Q4_K's qs
//	2336  qh[16][16][4] the high two bits: byte i of row l in pair p holds,
//	      from bit 0, those of columns 16p+i, 16p+4+i, 16p+8+i, 16p+12+i
//
// Only Q4_K and Q6_K matrices whose rows are a multiple of 16 have a
// LayoutR16 form; the arithmetic (integer sums per sub-block, one float
// multiply-add per super-block) is that of dotR16Generic, the reference twin of
// the assembly kernels.
type Layout uint8

const (
	LayoutRows Layout = iota
	LayoutR16
)

// R16 is the number of rows interleaved in LayoutR16.
const R16 = 16

const (
	r16Q4KBlock = 2368
	r16Q6KBlock = 3360
)

func (l Layout) String() string {
	switch l {
	case LayoutRows:
		return "rows"
	case LayoutR16:
		return "r16"
	}
	return fmt.Sprintf("Layout(%d)", uint8(l))
}

// CanR16 reports whether a rows×cols matrix of type t has a LayoutR16 form.
func CanR16(t DType, rows, cols int) bool {
	return (t == Q4_K || t == Q6_K) && rows > 0 && rows%R16 == 0 && cols > 0 && cols%QK_K == 0
}

// LayoutBytes is the size of a rows×cols matrix of type t in layout l, or
// false when l cannot hold it.
func LayoutBytes(t DType, l Layout, rows, cols int) (int, bool) {
	switch l {
	case LayoutRows:
		rb, ok := t.RowBytes(cols)
		if !ok || rows < 0 || (rb > 0 && rows > math.MaxInt/rb) {
			return 0, false
		}
		return rows * rb, true
	case LayoutR16:
		if !CanR16(t, rows, cols) {
			return 0, false
		}
		gb := cols / QK_K * r16BlockBytes(t) // one group of 16 rows
		if rows/R16 > math.MaxInt/gb {
			return 0, false
		}
		return rows / R16 * gb, true
	}
	return 0, false
}

// r16BlockBytes is the size of a LayoutR16 group block (16 rows × 256
// columns) of t.
func r16BlockBytes(t DType) int {
	if t == Q6_K {
		return r16Q6KBlock
	}
	return r16Q4KBlock
}

// RepackR16 rearranges src, whole groups of 16 rows of a Q4_K or Q6_K matrix
// with cols columns in LayoutRows, into dst in LayoutR16. It panics if the
// sizes are inconsistent (dst must be LayoutBytes long) or t has no
// LayoutR16 form.
func RepackR16(t DType, dst, src []byte, cols int) {
	rb, ok := t.RowBytes(cols)
	var size int
	if ok && rb > 0 && len(src)%rb == 0 {
		size, ok = LayoutBytes(t, LayoutR16, len(src)/rb, cols)
	}
	if !ok || len(src) == 0 || len(dst) != size {
		panic(fmt.Sprintf("kernels: RepackR16: %v, %d columns, %d bytes into %d", t, cols, len(src), len(dst)))
	}
	nb := cols / QK_K
	bb := t.BlockBytes()
	gbb := r16BlockBytes(t)
	for g := 0; g < len(src)/(R16*rb); g++ {
		for b := range nb {
			out := dst[(g*nb+b)*gbb : (g*nb+b+1)*gbb]
			for l := range R16 {
				blk := src[(g*R16+l)*rb+b*bb:][:bb]
				if t == Q4_K {
					repackQ4KLane(out, l, blk)
				} else {
					repackQ6KLane(out, l, blk)
				}
			}
		}
	}
}

// The repack functions move one ggml block (row l of the group) into the
// group block out. Column k of a Q4_K block is nibble (k/32)%2 of byte
// 16 + 32·(k/64) + k%32; columns 8c..8c+7 (chunk c) share the nibble and
// sit in 8 consecutive bytes.
func repackQ4KLane(out []byte, l int, blk []byte) {
	copy(out[2*l:], blk[0:2])    // d
	copy(out[32+2*l:], blk[2:4]) // dmin
	for j := range 8 {
		sc, m := scaleMinK4(j, blk[4:16])
		out[64+16*j+l] = sc
		out[192+32*(j/2)+2*l+j%2] = m
	}
	for c := range 32 {
		src := blk[16+32*(c/8)+8*(c%4):][:8]
		sh := 4 * (c / 4 % 2)
		dst := out[320+64*c+4*l:][:4]
		for i := range 4 {
			dst[i] = src[i]>>sh&0xf | (src[4+i]>>sh&0xf)<<4
		}
	}
}

// Column k of a Q6_K block, with h = k/128, part = (k%128)/32, i = k%32:
// low nibble part>>1 of ql[64h + 32·(part&1) + i], high bits 2·part of
// qh[128 + 32h + i]. Columns 8c..8c+7 share h and part.
func repackQ6KLane(out []byte, l int, blk []byte) {
	copy(out[2*l:], blk[208:210]) // d
	for j := range 16 {
		out[32+32*(j/2)+2*l+j%2] = blk[192+j]
	}
	for c := range 32 {
		h, part, i0 := c/16, c%16/4, 8*(c%4)
		ql := blk[64*h+32*(part&1)+i0:][:8]
		sh := 4 * (part >> 1)
		dst := out[288+64*c+4*l:][:4]
		for i := range 4 {
			dst[i] = ql[i]>>sh&0xf | (ql[4+i]>>sh&0xf)<<4
		}
	}
	// Pair p holds columns 16p..16p+15: byte i, bits 2s, of column 16p+4s+i.
	for p := range 16 {
		h, part, i0 := p/8, p%8/2, 16*(p%2)
		qh := blk[128+32*h+i0:][:16]
		sh := 2 * part
		dst := out[2336+64*p+4*l:][:4]
		for i := range 4 {
			dst[i] = qh[i]>>sh&3 | (qh[4+i]>>sh&3)<<2 | (qh[8+i]>>sh&3)<<4 | (qh[12+i]>>sh&3)<<6
		}
	}
}

// RowLayout decodes row r of a rows×cols matrix of type t in layout l
// into dst[:cols], bit for bit as Row decodes it from ggml's layout. It
// panics if the row is out of range.
func RowLayout(t DType, l Layout, w []byte, cols, r int, dst []float32) {
	if l == LayoutRows {
		Row(t, w, cols, r, dst)
		return
	}
	gbb := r16BlockBytes(t)
	nb := cols / QK_K
	if l != LayoutR16 || !CanR16(t, R16, cols) || r < 0 || (r/R16+1)*nb*gbb > len(w) || len(dst) < cols {
		panic(fmt.Sprintf("kernels: RowLayout: row %d of %d-column %v in layout %v does not fit (%d bytes, dst %d)", r, cols, t, l, len(w), len(dst)))
	}
	g, l16 := r/R16, r%R16
	for b := range nb {
		blk := w[(g*nb+b)*gbb:][:gbb]
		y := dst[b*QK_K : (b+1)*QK_K]
		d := F16ToF32(binary.LittleEndian.Uint16(blk[2*l16:]))
		if t == Q4_K {
			dmin := F16ToF32(binary.LittleEndian.Uint16(blk[32+2*l16:]))
			for j := range 8 {
				s, m := blk[64+16*j+l16], blk[192+32*(j/2)+2*l16+j%2]
				dl, ml := d*float32(s), dmin*float32(m) // as dequantQ4K
				for k := 32 * j; k < 32*j+32; k++ {
					c, i := k/8, k%8
					q := blk[320+64*c+4*l16+i%4] >> (4 * (i / 4)) & 0xf
					y[k] = dl*float32(q) - ml
				}
			}
			continue
		}
		for k := range QK_K {
			c, i := k/8, k%8
			q := blk[288+64*c+4*l16+i%4] >> (4 * (i / 4)) & 0xf
			p, kk := k/16, k%16
			q |= blk[2336+64*p+4*l16+kk%4] >> (2 * (kk / 4)) & 3 << 4
			sc := int8(blk[32+32*(p/2)+2*l16+p%2])
			y[k] = d * float32(sc) * float32(int(q)-32) // as dequantQ6K
		}
	}
}
