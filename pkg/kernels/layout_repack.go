package kernels

// The loader repacks every Q4_K and Q6_K matrix of a model it publishes,
// gigabytes at a time: these are the repack of those two types a whole
// group block at a time, two rows at once, so that the quants go out in
// 8-byte stores (rows l and l+1 of a chunk are adjacent) and the block
// offsets are computed once per group block rather than per byte. Their
// output is byte for byte that of the lane functions (repackQ4KLane,
// repackQ6KLane), which stay the reference (TestRepackGroupsMatchLanes).

// repackQ4KGroup writes the Q4_K group block out from the 16 ggml blocks
// at src, src[rb:], ..., src[15*rb:] (rows of rb bytes).
func repackQ4KGroup(out *[r16Q4KBlock]byte, src []byte, rb int) {
	for l := 0; l < R16; l += 2 {
		b0 := (*[144]byte)(src[l*rb:])
		b1 := (*[144]byte)(src[(l+1)*rb:])
		le.PutUint32(out[2*l:], uint32(le.Uint16(b0[0:]))|uint32(le.Uint16(b1[0:]))<<16)    // d
		le.PutUint32(out[32+2*l:], uint32(le.Uint16(b0[2:]))|uint32(le.Uint16(b1[2:]))<<16) // dmin
		scalesMinsK4(out, l, b0)
		scalesMinsK4(out, l+1, b1)
		// As repackQ45KLane: the eight bytes at 32q+8k hold chunk 8q+k
		// in their low nibbles and chunk 8q+4+k in their high ones.
		for q := range 4 {
			for k := range 4 {
				lo0, hi0 := splitNibbles(le.Uint64(b0[16+32*q+8*k:]))
				lo1, hi1 := splitNibbles(le.Uint64(b1[16+32*q+8*k:]))
				c := 8*q + k
				le.PutUint64(out[320+64*c+4*l:], uint64(lo0)|uint64(lo1)<<32)
				le.PutUint64(out[320+64*(c+4)+4*l:], uint64(hi0)|uint64(hi1)<<32)
			}
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
// (scaleMinK4, four at a time in 32-bit words) into row l of the group
// block out.
func scalesMinsK4(out *[r16Q4KBlock]byte, l int, blk *[144]byte) {
	a, b, c := le.Uint32(blk[4:]), le.Uint32(blk[8:]), le.Uint32(blk[12:])
	sc := uint64(a&0x3f3f3f3f) | uint64(c&0x0f0f0f0f|(a>>6&0x03030303)<<4)<<32
	mn := uint64(b&0x3f3f3f3f) | uint64(c>>4&0x0f0f0f0f|(b>>6&0x03030303)<<4)<<32
	for j := range 8 {
		out[64+16*j+l] = byte(sc >> (8 * j))
	}
	for p := range 4 {
		le.PutUint16(out[192+32*p+2*l:], uint16(mn>>(16*p)))
	}
}

// repackQ6KGroup writes the Q6_K group block out from the 16 ggml blocks
// at src, src[rb:], ..., src[15*rb:].
func repackQ6KGroup(out *[r16Q6KBlock]byte, src []byte, rb int) {
	for l := 0; l < R16; l += 2 {
		b0 := (*[210]byte)(src[l*rb:])
		b1 := (*[210]byte)(src[(l+1)*rb:])
		le.PutUint32(out[2*l:], uint32(le.Uint16(b0[208:]))|uint32(le.Uint16(b1[208:]))<<16) // d
		for p := range 8 {
			le.PutUint32(out[32+32*p+2*l:], uint32(le.Uint16(b0[192+2*p:]))|uint32(le.Uint16(b1[192+2*p:]))<<16)
		}
		// As repackQ6KLane: ql[64h + 32·p1 + 8k:][:8] holds chunk
		// 16h+4·p1+k in its low nibbles and chunk 16h+4·(p1+2)+k in its
		// high ones.
		for h := range 2 {
			for p1 := range 2 {
				for k := range 4 {
					lo0, hi0 := splitNibbles(le.Uint64(b0[64*h+32*p1+8*k:]))
					lo1, hi1 := splitNibbles(le.Uint64(b1[64*h+32*p1+8*k:]))
					c := 16*h + 4*p1 + k
					le.PutUint64(out[288+64*c+4*l:], uint64(lo0)|uint64(lo1)<<32)
					le.PutUint64(out[288+64*(c+8)+4*l:], uint64(hi0)|uint64(hi1)<<32)
				}
			}
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
}
