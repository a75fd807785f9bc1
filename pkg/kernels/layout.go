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
// LayoutR16 interleaves groups of 16 rows, one block of columns at a time
// (a super-block of 256 for the k-quants, a block of 32 for Q4_0, Q4_1,
// Q5_0, Q5_1 and Q8_0),
// with the scales next to their quants (pre-unpacked for the k-quants), so
// that a 512-bit register holds the same four columns of 16 rows: lane l of
// every vector is weight row l of the group. The kernels then take dot
// products with VPDPBUSD (unsigned weight bytes times signed activation
// bytes) against one activation dword broadcast to all lanes, and apply
// each (sub-)block's scale to 16 rows with one multiply. The AVX2 tier reads
// the same bytes as two 256-bit halves (rows 0-7, then 8-15) with
// VPMADDUBSW and VPMADDWD (internal/asmgen/r16avx2.go): one packed file
// serves both tiers. A group block is,
// for Q4_K (2368 bytes = 16 × 144 + 64: the unpacked scales and mins take 4
// bytes more per row):
//
//	0     d[16]     float16, row l's super-block scale
//	32    dmin[16]  float16
//	64    sc[8][16] uint8, sub-block j's 6-bit scale of row l
//	192   mn[4][16][2] uint8, the 6-bit mins of sub-blocks 2p and 2p+1 of row l
//	320   qs[32][16][4] chunk c: byte i of row l holds column 8c+i in its
//	      low nibble and column 8c+4+i in its high nibble
//
// for Q5_K (2880 bytes = 16 × 176 + 64), Q4_K's block with the fifth bits
// after it:
//
//	0     d, dmin, sc, mn, qs as Q4_K's
//	2368  qh[8][16][4] the fifth bits of sub-block j: bit t of byte i of row
//	      l is that of column 32j + 8(t/2) + 4(t%2) + i, i.e. of byte i of
//	      chunk 4j + t/2, low nibble for even t, high for odd
//
// for Q6_K (3360 bytes = 16 × 210, the same size as ggml's):
//
//	0     d[16]     float16
//	32    sc[8][16][2] int8, the scales of sub-blocks 2p and 2p+1 of row l
//	288   ql[32][16][4] the low four bits, arranged as Q4_K's qs
//	2336  qh[16][16][4] the high two bits: byte i of row l in pair p holds,
//	      from bit 0, those of columns 16p+i, 16p+4+i, 16p+8+i, 16p+12+i
//
// for Q4_0 (288 bytes = 16 × 18, ggml's size):
//
//	0     d[16]     float16
//	32    qs[4][16][4] chunk c: byte i of row l is ggml's qs[4c+i]: column
//	      4c+i in its low nibble, column 16+4c+i in its high nibble
//
// for Q4_1 (320 bytes = 16 × 20, ggml's size), Q4_0's block with the
// minimums after it:
//
//	0     d[16], qs as Q4_0's
//	288   m[16]     float16, row l's minimum
//
// for Q5_0 (352 bytes = 16 × 22, ggml's size), Q4_0's block (the low four
// bits) with the fifth bits after it:
//
//	0     d[16], qs as Q4_0's
//	288   qh[16][4] bit t of byte i of row l is the fifth bit of the
//	      column in byte i of chunk t/2, its low nibble's for even t
//	      (column 4(t/2)+i), its high nibble's for odd t (16+4(t/2)+i)
//
// for Q5_1 (384 bytes = 16 × 24, ggml's size), Q5_0's block with the
// minimums after it:
//
//	0     d[16], qs, qh as Q5_0's
//	352   m[16]     float16, row l's minimum
//
// and for Q8_0 (544 bytes = 16 × 34, ggml's size):
//
//	0     d[16]     float16
//	32    qs[8][16][4] chunk c: byte i of row l holds column 4c+i as
//	      q+128 (ggml's int8 q with its sign bit flipped: unsigned 0..255)
//
// and for F16 and BF16 (1024 bytes = 16 rows × 32 columns × 2, ggml's size):
//
//	0     v[32][16] column k's 16 values, row l's at 32k + 2l
//
// so that one 32-byte load is a column of the group: converted to 16
// float32 lanes (VCVTPH2PS; BF16 by a zero-extension and a shift), it takes
// one fused multiply-add per activation row with the activation float
// broadcast from memory. The activations are float32 rows whose values are
// rounded through F16 (BF16) as llama.cpp encodes them for such weights
// (VecDotType), so each product is exact in float32 and only the
// summation (two float32 chains per row, even and odd columns, added at
// the end) differs from LayoutRows' float64 sum (dotR16FloatGeneric).
//
// The 32-column formats' quants are unsigned, as VPDPBUSD takes them, and
// carry an offset o (Q4_0's 8, Q5_0's 16, Q8_0's 128; Q4_1's and Q5_1's
// are unsigned already, o = 0): Σ(q-o)·x = Σq·x - o·Σx. The
// kernels start each block's integer sum at -o·Σx, which the activation
// encoding carries (see q8R16Bytes); every sum stays exact in int32. The
// correction sits on the activation side because the broadcast activation
// dword must be VPDPBUSD's signed (memory) operand, so the weights are its
// unsigned one, and because -o·Σx is one number per activation block for
// all 16 rows (it replaces the zeroing of the sums), where a weight-side
// correction (per-row sums kept at pack time) would cost 32 bytes per group
// block: 1.06× Q8_0's size, 1.11× Q4_0's. Q4_1's and Q5_1's minimum m adds
// m·d_x·Σx per block, with d_x·Σx rounded as Q8_1's s (llama.cpp's
// activations for Q4_1 and Q5_1): one float multiply-add per block of the
// float sums, not the integer ones.
//
// Only Q4_K, Q5_K, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16 and BF16
// matrices, and the ternary TQ1_0 and TQ2_0 ones (quant_ternary_r16.go), whose rows are a multiple of 16
// (and columns of the block) have a LayoutR16 form; the arithmetic (exact
// integer sums per (sub-)block, one float multiply-add per block of
// columns) is that of dotR16Generic, the reference twin of the assembly
// kernels.
type Layout uint8

const (
	LayoutRows Layout = iota
	LayoutR16
)

// R16 is the number of rows interleaved in LayoutR16.
const R16 = 16

const (
	r16Q4KBlock  = 2368
	r16Q5KBlock  = 2880
	r16Q6KBlock  = 3360
	r16Q4_0Block = R16 * 18
	r16Q4_1Block = R16 * 20
	r16Q5_0Block = R16 * 22
	r16Q5_1Block = R16 * 24
	r16Q8_0Block = R16 * 34
	r16HalfBlock = R16 * 32 * 2 // F16, BF16: 32 columns

	// r16HalfXBlock is the activation bytes of a block of the F16 and
	// BF16 kernels: 32 float32.
	r16HalfXBlock = 32 * 4
)

// q8R16Bytes is the size of an activation block of the LayoutR16 Q4_0,
// Q4_1, Q5_0, Q5_1 and Q8_0 kernels: a Q8_0 block re-encoded for them
// (quantQ8R16), 32 columns:
//
//	0   float32 d, the Q8_0 block's float16 scale, widened
//	4   int32   -o·Σq, o the weight format's offset (8 for Q4_0, 16 for
//	            Q5_0, 128 for Q8_0): where each block's integer sums start;
//	    float32 for Q4_1 and Q5_1: s = d·Σq as Q8_1 holds it (through float16,
//	            d before its rounding), which the minimum multiplies
//	8   int8    q[32], the Q8_0 block's quants
//
// The k-quant kernels take Q8_K rows, whose block sums are in the format.
const q8R16Bytes = 40

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
	bc, _ := r16Block(t)
	return bc > 0 && rows > 0 && rows%R16 == 0 && cols > 0 && cols%bc == 0
}

// r16Block returns the columns and the bytes of a LayoutR16 group block
// (16 rows) of t, or 0, 0 when t has no LayoutR16 form.
func r16Block(t DType) (cols, bytes int) {
	switch t {
	case Q4_K:
		return QK_K, r16Q4KBlock
	case Q5_K:
		return QK_K, r16Q5KBlock
	case Q6_K:
		return QK_K, r16Q6KBlock
	case Q4_0:
		return qk, r16Q4_0Block
	case Q4_1:
		return qk, r16Q4_1Block
	case Q5_0:
		return qk, r16Q5_0Block
	case Q5_1:
		return qk, r16Q5_1Block
	case Q8_0:
		return qk, r16Q8_0Block
	case F16, BF16:
		return 32, r16HalfBlock
	case TQ2_0:
		return QK_K, r16TQ2Block
	case TQ1_0:
		return QK_K, r16TQ1Block
	}
	return 0, 0
}

// r16Offset is the offset o of the 32-column formats' unsigned LayoutR16
// quants (Q4_0: 8, Q5_0: 16, Q8_0: 128), 0 for Q4_1, Q5_1 and the
// k-quants.
func r16Offset(t DType) int32 {
	switch t {
	case Q4_0:
		return 8
	case Q5_0:
		return 16
	case Q8_0:
		return 128
	}
	return 0
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
		bc, bb := r16Block(t)
		gb := cols / bc * bb // one group of 16 rows
		if rows/R16 > math.MaxInt/gb {
			return 0, false
		}
		return rows / R16 * gb, true
	}
	return 0, false
}

// r16Half reports whether t is F16 or BF16, whose LayoutR16 kernels take
// float32 activations rounded through t (roundR16).
func r16Half(t DType) bool { return t == F16 || t == BF16 }

// r16Legacy reports whether t is a 32-column format with a LayoutR16 form,
// whose kernels take quantQ8R16's activations.
func r16Legacy(t DType) bool {
	return t == Q4_0 || t == Q4_1 || t == Q5_0 || t == Q5_1 || t == Q8_0
}

// r16MinAt is where the minimums of a LayoutR16 Q4_1 or Q5_1 group block
// start, 0 for the formats without them.
func r16MinAt(t DType) int {
	switch t {
	case Q4_1:
		return 288
	case Q5_1:
		return 352
	}
	return 0
}

// RepackR16 rearranges src, whole groups of 16 rows of a Q4_K, Q5_K, Q6_K,
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16, TQ1_0 or TQ2_0 matrix
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
	bc, gbb := r16Block(t)
	nb := cols / bc
	bb := bc / t.BlockSize() * t.BlockBytes() // source bytes of one row's block of columns
	group := repackGroup(t)
	if group == nil {
		repackR16Lanes(t, dst, src, cols)
		return
	}
	// Q6_K's group repack waits on its 16 rows (16 streams) unless they
	// are prefetched two blocks ahead: 1.0 -> 1.5-1.7 GB/s for a 4096×4096
	// matrix. The other types' repacks lose more to the 16 calls than they
	// gain (Q4_K 2.8-3.6 -> 1.9-2.3 GB/s).
	const ahead = 2
	for g := 0; g < len(src)/(R16*rb); g++ {
		for b := range nb {
			if t == Q6_K && b+ahead < nb {
				for l := range R16 {
					kern.prefetch(src[(g*R16+l)*rb+(b+ahead)*bb:][:bb])
				}
			}
			group(dst[(g*nb+b)*gbb:(g*nb+b+1)*gbb], src[g*R16*rb+b*bb:], rb)
		}
	}
}

// repackR16Lanes is RepackR16 one ggml block at a time: the reference of
// the group-at-a-time repacks (layout_repack.go).
func repackR16Lanes(t DType, dst, src []byte, cols int) {
	rb, _ := t.RowBytes(cols)
	bc, gbb := r16Block(t)
	nb := cols / bc
	bb := bc / t.BlockSize() * t.BlockBytes() // source bytes of one row's block of columns
	lane := repackQ4KLane
	switch t {
	case Q5_K:
		lane = repackQ5KLane
	case Q6_K:
		lane = repackQ6KLane
	case Q4_0:
		lane = repackQ4_0Lane
	case Q4_1:
		lane = repackQ4_1Lane
	case Q5_0:
		lane = repackQ5_0Lane
	case Q5_1:
		lane = repackQ5_1Lane
	case Q8_0:
		lane = repackQ8_0Lane
	case F16, BF16:
		lane = repackHalfLane
	case TQ2_0:
		lane = repackTQ2Lane
	case TQ1_0:
		lane = repackTQ1Lane
	}
	for g := 0; g < len(src)/(R16*rb); g++ {
		for b := range nb {
			out := dst[(g*nb+b)*gbb : (g*nb+b+1)*gbb]
			for l := range R16 {
				lane(out, l, src[(g*R16+l)*rb+b*bb:][:bb])
			}
		}
	}
}

// The repack functions move one ggml block (row l of the group) into the
// group block out. Column k of a Q4_K block is nibble (k/32)%2 of byte
// 16 + 32·(k/64) + k%32; columns 8c..8c+7 (chunk c) share the nibble and
// sit in 8 consecutive bytes.
func repackQ4KLane(out []byte, l int, blk []byte) { repackQ45KLane(out, l, blk, blk[16:144]) }

// A Q5_K block is Q4_K's with the fifth bits at 16 and the nibbles at 48:
// column k's fifth bit is bit k/32 of qh[k%32]. Bit t of byte i of
// sub-block j's output is column 32j + 4t + i's, bit j of qh[4t+i]: the
// four bytes i at once from the word qh[4t:].
func repackQ5KLane(out []byte, l int, blk []byte) {
	repackQ45KLane(out, l, blk, blk[48:176])
	var w [8]uint32
	for t := range w {
		w[t] = le.Uint32(blk[16+4*t:])
	}
	for j := range 8 {
		var v uint32
		for t, wt := range w {
			v |= (wt >> j & 0x01010101) << t
		}
		le.PutUint32(out[2368+64*j+4*l:], v)
	}
}

// repackQ45KLane moves the scales of a Q4_K or Q5_K block and its nibbles
// qs (128 bytes, Q4_K's order).
func repackQ45KLane(out []byte, l int, blk, qs []byte) {
	copy(out[2*l:], blk[0:2])    // d
	copy(out[32+2*l:], blk[2:4]) // dmin
	for j := range 8 {
		sc, m := scaleMinK4(j, blk[4:16])
		out[64+16*j+l] = sc
		out[192+32*(j/2)+2*l+j%2] = m
	}
	// Eight source bytes qs[32q+8k:][:8] hold chunk 8q+k in their low
	// nibbles and chunk 8q+4+k in their high ones; a row's 4 bytes of a
	// chunk take bytes i and 4+i (low and high nibble of the output byte),
	// a word at a time.
	for q := range 4 {
		for k := range 4 {
			x := le.Uint64(qs[32*q+8*k:])
			a, b := uint32(x), uint32(x>>32)
			c := 8*q + k
			le.PutUint32(out[320+64*c+4*l:], a&0x0f0f0f0f|(b&0x0f0f0f0f)<<4)
			le.PutUint32(out[320+64*(c+4)+4*l:], a>>4&0x0f0f0f0f|b&0xf0f0f0f0)
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
	// ql[64h + 32·p1 + 8k:][:8] holds chunk 16h+4·p1+k in its low nibbles
	// and chunk 16h+4·(p1+2)+k in its high ones (as Q4_K's qs).
	for h := range 2 {
		for p1 := range 2 {
			for k := range 4 {
				x := le.Uint64(blk[64*h+32*p1+8*k:])
				a, b := uint32(x), uint32(x>>32)
				c := 16*h + 4*p1 + k
				le.PutUint32(out[288+64*c+4*l:], a&0x0f0f0f0f|(b&0x0f0f0f0f)<<4)
				le.PutUint32(out[288+64*(c+8)+4*l:], a>>4&0x0f0f0f0f|b&0xf0f0f0f0)
			}
		}
	}
	// Pair p holds columns 16p..16p+15: byte i, bits 2s, of column 16p+4s+i;
	// with h = p/8, part = p%8/2, those are bits 2·part of
	// qh[128 + 32h + 16·(p%2) + 4s + i]: four words give all four parts.
	for h := range 2 {
		for half := range 2 {
			qh := blk[128+32*h+16*half:][:16]
			w0, w1, w2, w3 := le.Uint32(qh), le.Uint32(qh[4:]), le.Uint32(qh[8:]), le.Uint32(qh[12:])
			for part := range 4 {
				sh := 2 * part
				v := w0>>sh&0x03030303 | (w1>>sh&0x03030303)<<2 | (w2>>sh&0x03030303)<<4 | (w3>>sh&0x03030303)<<6
				le.PutUint32(out[2336+64*(8*h+2*part+half)+4*l:], v)
			}
		}
	}
}

// A Q4_0 block's qs already holds, in byte 4c+i, the two columns chunk c
// puts in byte i of a row.
func repackQ4_0Lane(out []byte, l int, blk []byte) {
	copy(out[2*l:], blk[0:2]) // d
	for c := range 4 {
		le.PutUint32(out[32+64*c+4*l:], le.Uint32(blk[2+4*c:]))
	}
}

// A Q4_1 block is d, m and Q4_0's qs.
func repackQ4_1Lane(out []byte, l int, blk []byte) {
	copy(out[2*l:], blk[0:2])     // d
	copy(out[288+2*l:], blk[2:4]) // m
	for c := range 4 {
		le.PutUint32(out[32+64*c+4*l:], le.Uint32(blk[4+4*c:]))
	}
}

// A Q5_0 block is d, qh and Q4_0's qs; bit k of qh is column k's fifth
// bit. Bit t of the output's byte i is column 16(t%2) + 4(t/2) + i's: the
// nibble of qh at 16(t%2) + 4(t/2), its bit i moved to bit 8i + t.
func repackQ5_0Lane(out []byte, l int, blk []byte) {
	copy(out[2*l:], blk[0:2]) // d
	repackQ5Bits(out, l, blk[2:])
}

// A Q5_1 block is d, m, qh and Q4_0's qs.
func repackQ5_1Lane(out []byte, l int, blk []byte) {
	copy(out[2*l:], blk[0:2])     // d
	copy(out[352+2*l:], blk[2:4]) // m
	repackQ5Bits(out, l, blk[4:])
}

// repackQ5Bits moves a Q5_0 or Q5_1 block's qh and qs (at b) into row l
// of out: the fifth bits as repackQ5_0Lane says, the nibbles as Q4_0's.
func repackQ5Bits(out []byte, l int, b []byte) {
	qh := le.Uint32(b)
	var v uint32
	for t := range 8 {
		n := qh >> (16*(t%2) + 4*(t/2))
		v |= (n&1 | n&2<<7 | n&4<<14 | n&8<<21) << t
	}
	le.PutUint32(out[288+4*l:], v)
	for c := range 4 {
		le.PutUint32(out[32+64*c+4*l:], le.Uint32(b[4+4*c:]))
	}
}

// repackHalfLane moves 32 F16 or BF16 values of row l to their columns.
func repackHalfLane(out []byte, l int, blk []byte) {
	for k := range 32 {
		copy(out[32*k+2*l:], blk[2*k:2*k+2])
	}
}

func repackQ8_0Lane(out []byte, l int, blk []byte) {
	copy(out[2*l:], blk[0:2]) // d
	for c := range 8 {
		le.PutUint32(out[32+64*c+4*l:], le.Uint32(blk[2+4*c:])^0x80808080)
	}
}

var le = binary.LittleEndian

// r16LegacyQuant returns the unsigned quant of row l, column k of a
// LayoutR16 Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0 group block (its value is that
// less r16Offset).
func r16LegacyQuant(t DType, blk []byte, l, k int) uint8 {
	if t == Q8_0 {
		return blk[32+64*(k/4)+4*l+k%4]
	}
	q := blk[32+64*(k%16/4)+4*l+k%4] >> (4 * (k / 16)) & 0xf
	if t == Q5_0 || t == Q5_1 {
		q |= blk[288+4*l+k%4] >> (2*(k%16/4) + k/16) & 1 << 4
	}
	return q
}

// r16Q45KQuant returns the quant of row l, column k of a LayoutR16 Q4_K or
// Q5_K group block.
func r16Q45KQuant(t DType, blk []byte, l, k int) uint8 {
	c, i := k/8, k%8
	q := blk[320+64*c+4*l+i%4] >> (4 * (i / 4)) & 0xf
	if t == Q5_K {
		q |= blk[2368+64*(c/4)+4*l+i%4] >> (2*(c%4) + i/4) & 1 << 4
	}
	return q
}

// RowLayout decodes row r of a rows×cols matrix of type t in layout l
// into dst[:cols], bit for bit as Row decodes it from ggml's layout. It
// panics if the row is out of range.
func RowLayout(t DType, l Layout, w []byte, cols, r int, dst []float32) {
	if l == LayoutRows {
		Row(t, w, cols, r, dst)
		return
	}
	bc, gbb := r16Block(t)
	if l != LayoutR16 || !CanR16(t, R16, cols) || r < 0 || (r/R16+1)*(cols/bc)*gbb > len(w) || len(dst) < cols {
		panic(fmt.Sprintf("kernels: RowLayout: row %d of %d-column %v in layout %v does not fit (%d bytes, dst %d)", r, cols, t, l, len(w), len(dst)))
	}
	nb := cols / bc
	g, l16 := r/R16, r%R16
	for b := range nb {
		blk := w[(g*nb+b)*gbb:][:gbb]
		y := dst[b*bc : (b+1)*bc]
		if t == TQ2_0 {
			rowR16TQ2(blk, l16, y)
			continue
		}
		if r16Half(t) {
			for k := range y {
				h := binary.LittleEndian.Uint16(blk[32*k+2*l16:])
				if t == F16 {
					y[k] = F16ToF32(h)
				} else {
					y[k] = BF16ToF32(h)
				}
			}
			continue
		}
		if t == TQ1_0 {
			rowR16TQ1(blk, l16, y)
			continue
		}
		d := F16ToF32(binary.LittleEndian.Uint16(blk[2*l16:]))
		if at := r16MinAt(t); at > 0 {
			m := F16ToF32(binary.LittleEndian.Uint16(blk[at+2*l16:]))
			for k := range qk {
				y[k] = float32(r16LegacyQuant(t, blk, l16, k))*d + m // as dequantQ4_1, dequantQ5_1
			}
			continue
		}
		if r16Legacy(t) {
			o := r16Offset(t)
			for k := range qk {
				y[k] = float32(int32(r16LegacyQuant(t, blk, l16, k))-o) * d // as dequantQ4_0, dequantQ5_0, dequantQ8_0
			}
			continue
		}
		if t == Q4_K || t == Q5_K {
			dmin := F16ToF32(binary.LittleEndian.Uint16(blk[32+2*l16:]))
			for j := range 8 {
				s, m := blk[64+16*j+l16], blk[192+32*(j/2)+2*l16+j%2]
				dl, ml := d*float32(s), dmin*float32(m) // as dequantQ45K
				for k := 32 * j; k < 32*j+32; k++ {
					y[k] = dl*float32(r16Q45KQuant(t, blk, l16, k)) - ml
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
