package kernels

import (
	"encoding/binary"
	"math"
)

// LayoutR16 for TQ2_0: 16 rows interleaved per super-block of 256 columns
// (1056 bytes = 16 × 66, ggml's size), so that the VPDPBUSD kernels
// (internal/asmgen/ternary.go) take the trits of four columns of 16 rows
// from one vector lane by lane:
//
//	0    d[16]          float16, row l's scale
//	32   qs[16][16][4]  set s (columns 16s..16s+15): byte i of row l holds,
//	                    from bit 0, the stored trits t = w+1 of columns
//	                    16s+i, 16s+4+i, 16s+8+i, 16s+12+i
//
// The arithmetic is dotR16TQ2Generic's: per super-block and row the exact
// integer Σ t·x - Σ x (the Q8_K block's bsums), then one fused multiply-add
// by d·dx into the row's float32 accumulator. Against the ggml-layout
// kernels this moves the per-block conversion and scaling from every row
// to every 16 rows. TQ1_0's form is below.
const r16TQ2Block = R16 * tq2Bytes

// repackTQ2Lane moves the TQ2_0 block blk into lane l of the group block
// out. Column k of blk is bits 2·(k%128/32) of byte 32·(k/128) + k%32.
func repackTQ2Lane(out []byte, l int, blk []byte) {
	copy(out[2*l:], blk[64:66]) // d
	for s := range 16 {
		for i := range 4 {
			var b byte
			for m := range 4 {
				k := 16*s + 4*m + i
				b |= blk[32*(k/128)+k%32] >> (2 * (k % 128 / 32)) & 3 << (2 * m)
			}
			out[32+64*s+4*l+i] = b
		}
	}
}

// r16TQ2Trit is the stored trit (0..2; 3 is never written) of row l, column
// k of a LayoutR16 TQ2_0 group block.
func r16TQ2Trit(blk []byte, l, k int) int32 {
	return int32(blk[32+64*(k/16)+4*l+k%4] >> (2 * (k % 16 / 4)) & 3)
}

// dotR16TQ2Generic is dotR16Generic for TQ2_0 (Q8_K activation rows).
func dotR16TQ2Generic(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16TernaryGeneric(w, r16TQ2Block, r16TQ2Trit, nb, xq, xrb, R, out, ostride)
}

// dotR16TernaryGeneric is the ternary twins' loop: per super-block and row
// the exact integer Σ t·x - Σ x, then acc = fma(d·dx, sum, acc).
func dotR16TernaryGeneric(w []byte, gbb int, trit func(blk []byte, l, k int) int32, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	for r := range R {
		var acc [R16]float32
		for b := range nb {
			blk := w[b*gbb : (b+1)*gbb]
			x := xq[r*xrb+b*q8KBytes:][:q8KBytes]
			dx := math.Float32frombits(binary.LittleEndian.Uint32(x))
			var sx int32
			for g := range 16 {
				sx += int32(int16(binary.LittleEndian.Uint16(x[260+2*g:])))
			}
			for l := range R16 {
				isum := -sx
				for k := range QK_K {
					isum += trit(blk, l, k) * int32(int8(x[4+k]))
				}
				d := F16ToF32(binary.LittleEndian.Uint16(blk[2*l:]))
				acc[l] = fma32(d*dx, float32(isum), acc[l])
			}
		}
		copy(out[r*ostride:r*ostride+R16], acc[:])
	}
}

// rowR16TQ2 decodes row l of the group block blk into y[:256], as
// dequantTQ2_0 does.
func rowR16TQ2(blk []byte, l int, y []float32) {
	d := F16ToF32(binary.LittleEndian.Uint16(blk[2*l:]))
	for k := range QK_K {
		y[k] = float32(r16TQ2Trit(blk, l, k)-1) * d
	}
}

// LayoutR16 for TQ1_0 (864 bytes = 16 × 54, ggml's size): the trits
// re-packed five to a byte as in ggml's format (packTrits5, most
// significant trit first), but so that byte i of row l in a set holds the
// same four columns of all 16 rows that one VPDPBUSD lane takes:
//
//	0    d[16]          float16, row l's scale
//	32   qs[12][16][4]  set s: byte i of row l holds the trits of columns
//	                    20s+i, 20s+4+i, ..., 20s+16+i (trit k: 20s+4k+i)
//	800  qh[16][4]      byte i of row l: columns 240+i, 244+i, 248+i,
//	                    252+i as trits 0..3 (trit 4 is 0)
//
// The twin adds the same exact integer sums as dotR16TQ2Generic.
const r16TQ1Block = R16 * tq1Bytes

// r16TQ1Pos returns the byte offset (in the group block) and trit index of
// row l, column k of a LayoutR16 TQ1_0 group block.
func r16TQ1Pos(l, k int) (int, int) {
	if k < 240 {
		return 32 + 64*(k/20) + 4*l + k%4, k % 20 / 4
	}
	return 800 + 4*l + k%4, (k - 240) / 4
}

// repackTQ1Lane moves the TQ1_0 block blk into lane l of the group block
// out, re-encoding its trits (any byte decodes to five trits, which
// packTrits5 encodes back exactly).
func repackTQ1Lane(out []byte, l int, blk []byte) {
	copy(out[2*l:], blk[52:54]) // d
	var n [16][4]int            // per set and byte: the base-3 number
	for k := range QK_K {
		set, i := k/20, k%4
		n[set][i] = 3*n[set][i] + tq1Trit(blk, k) + 1
	}
	for s := range 13 {
		for i := range 4 {
			v := n[s][i]
			if s == 12 {
				v *= 3 // four trits: the fifth is 0
			}
			off, _ := r16TQ1Pos(l, 20*s+i)
			out[off] = packTrits5(v)
		}
	}
}

// r16TQ1Trit is the stored trit (0..2) of row l, column k.
func r16TQ1Trit(blk []byte, l, k int) int32 {
	off, tk := r16TQ1Pos(l, k)
	return int32(trit(blk[off], tk) + 1)
}

// dotR16TQ1Generic is dotR16Generic for TQ1_0 (Q8_K activation rows).
func dotR16TQ1Generic(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16TernaryGeneric(w, r16TQ1Block, r16TQ1Trit, nb, xq, xrb, R, out, ostride)
}

// rowR16TQ1 decodes row l of the group block blk into y[:256], as
// dequantTQ1_0 does.
func rowR16TQ1(blk []byte, l int, y []float32) {
	d := F16ToF32(binary.LittleEndian.Uint16(blk[2*l:]))
	for k := range QK_K {
		y[k] = float32(r16TQ1Trit(blk, l, k)-1) * d
	}
}
