package kernels

// The loader repacks every matrix of a model it publishes, gigabytes at a
// time: these are the repacks a whole group block at a time, two rows at
// once (four for F16 and BF16), so that the quants go out in 8-byte stores
// (rows l and l+1 of a chunk are adjacent), bits move a word at a time and
// the block offsets are computed once per group block rather than per
// byte; the k-quants' nibbles go through the tier's nibbleRows (AVX2 where
// the host has it). Their output is byte for byte that of the lane
// functions (repackQ4KLane, ...), which stay the reference
// (TestRepackGroupsMatchLanes, on every tier).

// repackGroup returns the group-block repack of t, or nil where the lane
// functions are the only one (TQ1_0, TQ2_0). The function writes the group
// block out (r16Block's bytes) from the 16 ggml blocks at src, src[rb:],
// ..., src[15*rb:] (rows of rb bytes).
func repackGroup(t DType) func(out, src []byte, rb int) {
	switch t {
	case Q4_K:
		return func(out, src []byte, rb int) { repackQ4KGroup((*[r16Q4KBlock]byte)(out), src, rb) }
	case Q5_K:
		return func(out, src []byte, rb int) { repackQ5KGroup((*[r16Q5KBlock]byte)(out), src, rb) }
	case Q6_K:
		return func(out, src []byte, rb int) { repackQ6KGroup((*[r16Q6KBlock]byte)(out), src, rb) }
	case Q4_0:
		return func(out, src []byte, rb int) { repackQ4_0Group((*[r16Q4_0Block]byte)(out), src, rb) }
	case Q4_1:
		return func(out, src []byte, rb int) { repackQ4_1Group((*[r16Q4_1Block]byte)(out), src, rb) }
	case Q5_0:
		return func(out, src []byte, rb int) { repackQ5_0Group((*[r16Q5_0Block]byte)(out), src, rb) }
	case Q5_1:
		return func(out, src []byte, rb int) { repackQ5_1Group((*[r16Q5_1Block]byte)(out), src, rb) }
	case Q8_0:
		return func(out, src []byte, rb int) { repackQ8_0Group((*[r16Q8_0Block]byte)(out), src, rb) }
	case F16, BF16:
		return func(out, src []byte, rb int) { repackHalfGroup((*[r16HalfBlock]byte)(out), src, rb) }
	}
	return nil
}

// repackQ4KGroup writes the Q4_K group block out from the 16 ggml blocks
// at src, src[rb:], ..., src[15*rb:] (rows of rb bytes).
func repackQ4KGroup(out *[r16Q4KBlock]byte, src []byte, rb int) {
	for l := 0; l < R16; l += 2 {
		q45KRows(out, l, (*[16]byte)(src[l*rb:]), (*[16]byte)(src[(l+1)*rb:]))
	}
	// As repackQ45KLane: the eight bytes at 32q+8k hold chunk 8q+k in
	// their low nibbles and chunk 8q+4+k in their high ones.
	for q := range 4 {
		kern.nibbleRows(out[320+64*8*q:], 64*4, src[16+32*q:], rb)
	}
}

// repackQ5KGroup is repackQ4KGroup for Q5_K, whose blocks have the fifth
// bits (qh, 32 bytes) between the scales and the nibbles.
func repackQ5KGroup(out *[r16Q5KBlock]byte, src []byte, rb int) {
	for l := 0; l < R16; l += 2 {
		b0 := (*[176]byte)(src[l*rb:])
		b1 := (*[176]byte)(src[(l+1)*rb:])
		q45KRows((*[r16Q4KBlock]byte)(out[:r16Q4KBlock]), l, (*[16]byte)(b0[:16]), (*[16]byte)(b1[:16]))
		v0, v1 := q5KBits((*[32]byte)(b0[16:])), q5KBits((*[32]byte)(b1[16:]))
		for j := range 8 {
			le.PutUint64(out[2368+64*j+4*l:], uint64(v0[j])|uint64(v1[j])<<32)
		}
	}
	for q := range 4 {
		kern.nibbleRows(out[320+64*8*q:], 64*4, src[48+32*q:], rb)
	}
}

// q45KRows writes the d, dmin, scales and mins of rows l and l+1 of a
// Q4_K group block (or of the Q4_K part of a Q5_K one) from their blocks'
// first 16 bytes (h0, h1).
func q45KRows(out *[r16Q4KBlock]byte, l int, h0, h1 *[16]byte) {
	le.PutUint32(out[2*l:], pairU16(h0[0:], h1[0:]))    // d
	le.PutUint32(out[32+2*l:], pairU16(h0[2:], h1[2:])) // dmin
	sc0, mn0 := scalesMinsK4(h0)
	sc1, mn1 := scalesMinsK4(h1)
	for j := range 8 {
		le.PutUint16(out[64+16*j+l:], uint16(byte(sc0>>(8*j)))|uint16(byte(sc1>>(8*j)))<<8)
	}
	for p := range 4 {
		le.PutUint32(out[192+32*p+2*l:], uint32(uint16(mn0>>(16*p)))|uint32(uint16(mn1>>(16*p)))<<16)
	}
}

// nibbleRowsGeneric is the reference of kernelSet.nibbleRows: for each row
// l < 16, the 32 bytes at src[l*rb:] hold, eight per k < 4, chunk k's
// columns in their low nibbles and another chunk's in their high ones
// (splitNibbles), which go to out[64k+4l:] and out[hi+64k+4l:].
func nibbleRowsGeneric(out []byte, hi int, src []byte, rb int) {
	out = out[:hi+64*3+4*R16]
	for l := 0; l < R16; l += 2 {
		q0, q1 := (*[32]byte)(src[l*rb:]), (*[32]byte)(src[(l+1)*rb:])
		for k := range 4 {
			lo0, hi0 := splitNibbles(le.Uint64(q0[8*k:]))
			lo1, hi1 := splitNibbles(le.Uint64(q1[8*k:]))
			le.PutUint64(out[64*k+4*l:], uint64(lo0)|uint64(lo1)<<32)
			le.PutUint64(out[hi+64*k+4*l:], uint64(hi0)|uint64(hi1)<<32)
		}
	}
}

// q5KBits is repackQ5KLane's fifth bits of a Q5_K block's qh, v[j] byte i
// bit t = bit j of qh[4t+i]: in each byte lane i, the 8×8 bit matrix of
// the words w[t] (row t, column j) transposed, by swapping 4×4, 2×2 and
// 1×1 blocks across the words.
func q5KBits(qh *[32]byte) (w [8]uint32) {
	for t := range w {
		w[t] = le.Uint32(qh[4*t:])
	}
	for _, s := range [3]struct {
		d    int
		mask uint32
	}{{4, 0x0f0f0f0f}, {2, 0x33333333}, {1, 0x55555555}} {
		for t := range 8 {
			if t&s.d != 0 {
				continue
			}
			x := (w[t]>>s.d ^ w[t+s.d]) & s.mask
			w[t+s.d] ^= x
			w[t] ^= x << s.d
		}
	}
	return w
}

// repackQ4_0Group: a Q4_0 block is d and qs, whose bytes 4c..4c+3 are
// chunk c's bytes of its row (repackQ4_0Lane). Q4_0, Q4_1, Q5_0 and Q5_1
// keep a function each, with their offsets constant: one function taking
// the offsets as variables ran at half the speed (bounds checks and
// branches per row pair).
func repackQ4_0Group(out *[r16Q4_0Block]byte, src []byte, rb int) {
	for l := 0; l < R16; l += 2 {
		b0 := (*[18]byte)(src[l*rb:])
		b1 := (*[18]byte)(src[(l+1)*rb:])
		le.PutUint32(out[2*l:], pairU16(b0[0:], b1[0:])) // d
		legacyChunks(out[32:], l, (*[16]byte)(b0[2:]), (*[16]byte)(b1[2:]), 0)
	}
}

// repackQ4_1Group: a Q4_1 block is d, m and Q4_0's qs.
func repackQ4_1Group(out *[r16Q4_1Block]byte, src []byte, rb int) {
	for l := 0; l < R16; l += 2 {
		b0 := (*[20]byte)(src[l*rb:])
		b1 := (*[20]byte)(src[(l+1)*rb:])
		le.PutUint32(out[2*l:], pairU16(b0[0:], b1[0:]))                // d
		le.PutUint32(out[r16MinAt(Q4_1)+2*l:], pairU16(b0[2:], b1[2:])) // m
		legacyChunks(out[32:], l, (*[16]byte)(b0[4:]), (*[16]byte)(b1[4:]), 0)
	}
}

// repackQ5_0Group: a Q5_0 block is d, qh and Q4_0's qs.
func repackQ5_0Group(out *[r16Q5_0Block]byte, src []byte, rb int) {
	for l := 0; l < R16; l += 2 {
		b0 := (*[22]byte)(src[l*rb:])
		b1 := (*[22]byte)(src[(l+1)*rb:])
		le.PutUint32(out[2*l:], pairU16(b0[0:], b1[0:])) // d
		le.PutUint64(out[288+4*l:], uint64(q5Bits(le.Uint32(b0[2:])))|uint64(q5Bits(le.Uint32(b1[2:])))<<32)
		legacyChunks(out[32:], l, (*[16]byte)(b0[6:]), (*[16]byte)(b1[6:]), 0)
	}
}

// repackQ5_1Group: a Q5_1 block is d, m, qh and Q4_0's qs.
func repackQ5_1Group(out *[r16Q5_1Block]byte, src []byte, rb int) {
	for l := 0; l < R16; l += 2 {
		b0 := (*[24]byte)(src[l*rb:])
		b1 := (*[24]byte)(src[(l+1)*rb:])
		le.PutUint32(out[2*l:], pairU16(b0[0:], b1[0:]))                // d
		le.PutUint32(out[r16MinAt(Q5_1)+2*l:], pairU16(b0[2:], b1[2:])) // m
		le.PutUint64(out[288+4*l:], uint64(q5Bits(le.Uint32(b0[4:])))|uint64(q5Bits(le.Uint32(b1[4:])))<<32)
		legacyChunks(out[32:], l, (*[16]byte)(b0[8:]), (*[16]byte)(b1[8:]), 0)
	}
}

// pairU16 is the 16-bit values at a and b, side by side (rows l and l+1
// of a group block's d, dmin or m).
func pairU16(a, b []byte) uint32 { return uint32(le.Uint16(a)) | uint32(le.Uint16(b))<<16 }

// repackQ8_0Group: a Q8_0 block is d and 32 signed quants, stored offset
// by 128 (the sign bit flipped), 4 per chunk.
func repackQ8_0Group(out *[r16Q8_0Block]byte, src []byte, rb int) {
	for l := 0; l < R16; l += 2 {
		b0 := (*[34]byte)(src[l*rb:])
		b1 := (*[34]byte)(src[(l+1)*rb:])
		le.PutUint32(out[2*l:], pairU16(b0[0:], b1[0:])) // d
		legacyChunks(out[32:], l, (*[16]byte)(b0[2:]), (*[16]byte)(b1[2:]), 0x8080808080808080)
		legacyChunks(out[32+4*64:], l, (*[16]byte)(b0[18:]), (*[16]byte)(b1[18:]), 0x8080808080808080)
	}
}

// legacyChunks writes rows l and l+1 of four chunks (64 bytes apart from
// out) from 16 quant bytes of each row, 4 per chunk, xored with flip.
func legacyChunks(out []byte, l int, q0, q1 *[16]byte, flip uint64) {
	for k := range 2 {
		x0, x1 := le.Uint64(q0[8*k:])^flip, le.Uint64(q1[8*k:])^flip
		le.PutUint64(out[64*(2*k)+4*l:], x0&0xffffffff|x1<<32)
		le.PutUint64(out[64*(2*k+1)+4*l:], x0>>32|x1&^0xffffffff)
	}
}

// q5Bits is repackQ5Bits's fifth bits of a Q5_0 or Q5_1 block: byte i of
// the result holds in bit t the bit 16(t%2) + 4(t/2) + i of qh. The
// nibbles of qh go to the bytes t of a word (x, bit i of byte t), whose
// 8×8 bit matrix is then transposed (bit t of byte i).
func q5Bits(qh uint32) uint32 {
	x := spreadNibbles(uint64(qh&0xffff)) | spreadNibbles(uint64(qh>>16))<<8
	x = x&0xaa55aa55aa55aa55 | (x&0x00aa00aa00aa00aa)<<7 | x>>7&0x00aa00aa00aa00aa
	x = x&0xcccc3333cccc3333 | (x&0x0000cccc0000cccc)<<14 | x>>14&0x0000cccc0000cccc
	x = x&0xf0f0f0f00f0f0f0f | (x&0x00000000f0f0f0f0)<<28 | x>>28&0x00000000f0f0f0f0
	return uint32(x)
}

// spreadNibbles moves nibble k of the 16-bit n to bits 16k..16k+3.
func spreadNibbles(n uint64) uint64 {
	n = (n | n<<24) & 0x000000ff000000ff
	return (n | n<<12) & 0x000f000f000f000f
}

// repackHalfGroup moves 16 rows × 32 F16 or BF16 values to their columns
// (out[32k+2l:] holds row l's value k), four rows and four columns at a
// time: the 4×4 matrix of 16-bit values in four words transposed.
func repackHalfGroup(out *[r16HalfBlock]byte, src []byte, rb int) {
	for l := 0; l < R16; l += 4 {
		b0 := (*[64]byte)(src[l*rb:])
		b1 := (*[64]byte)(src[(l+1)*rb:])
		b2 := (*[64]byte)(src[(l+2)*rb:])
		b3 := (*[64]byte)(src[(l+3)*rb:])
		for q := range 8 {
			a0, a1, a2, a3 := le.Uint64(b0[8*q:]), le.Uint64(b1[8*q:]), le.Uint64(b2[8*q:]), le.Uint64(b3[8*q:])
			x := (a0>>16 ^ a1) & 0x0000ffff0000ffff
			a1 ^= x
			a0 ^= x << 16
			x = (a2>>16 ^ a3) & 0x0000ffff0000ffff
			a3 ^= x
			a2 ^= x << 16
			x = (a0>>32 ^ a2) & 0x00000000ffffffff
			a2 ^= x
			a0 ^= x << 32
			x = (a1>>32 ^ a3) & 0x00000000ffffffff
			a3 ^= x
			a1 ^= x << 32
			le.PutUint64(out[32*(4*q)+2*l:], a0)
			le.PutUint64(out[32*(4*q+1)+2*l:], a1)
			le.PutUint64(out[32*(4*q+2)+2*l:], a2)
			le.PutUint64(out[32*(4*q+3)+2*l:], a3)
		}
	}
}

// splitNibbles turns eight quant bytes x (bytes i and 4+i: columns i and
// 4+i of a chunk in the low nibbles, of another chunk in the high ones)
// into the two chunks' output words: byte i holds column i in its low
// nibble and column 4+i in its high one.
func splitNibbles(x uint64) (lo, hi uint32) {
	a, b := uint32(x), uint32(x>>32)
	return a&0x0f0f0f0f | (b&0x0f0f0f0f)<<4, a>>4&0x0f0f0f0f | b&0xf0f0f0f0
}

// scalesMinsK4 unpacks the eight 6-bit scales and mins of a Q4_K block
// (scaleMinK4, four at a time in 32-bit words): scale j in byte j of sc,
// min j in byte j of mn.
func scalesMinsK4(blk *[16]byte) (sc, mn uint64) {
	a, b, c := le.Uint32(blk[4:]), le.Uint32(blk[8:]), le.Uint32(blk[12:])
	sc = uint64(a&0x3f3f3f3f) | uint64(c&0x0f0f0f0f|(a>>6&0x03030303)<<4)<<32
	mn = uint64(b&0x3f3f3f3f) | uint64(c>>4&0x0f0f0f0f|(b>>6&0x03030303)<<4)<<32
	return sc, mn
}

// repackQ6KGroup writes the Q6_K group block out from the 16 ggml blocks
// at src, src[rb:], ..., src[15*rb:].
func repackQ6KGroup(out *[r16Q6KBlock]byte, src []byte, rb int) {
	for l := 0; l < R16; l += 2 {
		b0 := (*[210]byte)(src[l*rb:])
		b1 := (*[210]byte)(src[(l+1)*rb:])
		le.PutUint32(out[2*l:], pairU16(b0[208:], b1[208:])) // d
		for p := range 8 {
			le.PutUint32(out[32+32*p+2*l:], pairU16(b0[192+2*p:], b1[192+2*p:]))
		}
		// As repackQ6KLane: pair p's byte i of a row holds bits 2·part
		// of the qh words of its half, columns 16p+4s+i from bit 2s.
		for h := range 2 {
			for half := range 2 {
				o := 128 + 32*h + 16*half
				x0, x1, x2, x3 := le.Uint32(b0[o:]), le.Uint32(b0[o+4:]), le.Uint32(b0[o+8:]), le.Uint32(b0[o+12:])
				y0, y1, y2, y3 := le.Uint32(b1[o:]), le.Uint32(b1[o+4:]), le.Uint32(b1[o+8:]), le.Uint32(b1[o+12:])
				for part := range 4 {
					sh := 2 * part
					v0 := x0>>sh&0x03030303 | (x1>>sh&0x03030303)<<2 | (x2>>sh&0x03030303)<<4 | (x3>>sh&0x03030303)<<6
					v1 := y0>>sh&0x03030303 | (y1>>sh&0x03030303)<<2 | (y2>>sh&0x03030303)<<4 | (y3>>sh&0x03030303)<<6
					le.PutUint64(out[2336+64*(8*h+2*part+half)+4*l:], uint64(v0)|uint64(v1)<<32)
				}
			}
		}
	}
	// As repackQ6KLane: ql[64h + 32·p1 + 8k:][:8] holds chunk 16h+4·p1+k
	// in its low nibbles and chunk 16h+4·(p1+2)+k in its high ones.
	for h := range 2 {
		for p1 := range 2 {
			kern.nibbleRows(out[288+64*(16*h+4*p1):], 64*8, src[64*h+32*p1:], rb)
		}
	}
}
