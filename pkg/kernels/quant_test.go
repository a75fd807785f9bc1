package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// Hand-built blocks: each test writes a block's bytes from the field layout
// of ggml-common.h (written here element by element, independently of the
// codecs) and checks Dequantize against values computed from those fields.

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }

func f16b(f float32) []byte {
	h := F32ToF16(f)
	if F16ToF32(h) != f {
		panic(fmt.Sprintf("%g is not a half", f))
	}
	return le16(h)
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func decode(t *testing.T, typ DType, b []byte, n int) []float32 {
	t.Helper()
	if size, _ := typ.RowBytes(n); size != len(b) {
		t.Fatalf("%v block is %d bytes, want %d (test bug)", typ, len(b), size)
	}
	y := make([]float32, n)
	Dequantize(typ, b, y)
	return y
}

func expectFloats(t *testing.T, what string, got []float32, want func(i int) float32) {
	t.Helper()
	bad := 0
	for i := range got {
		if w := want(i); got[i] != w {
			t.Errorf("%s: element %d = %v, want %v", what, i, got[i], w)
			if bad++; bad > 5 {
				t.FailNow()
			}
		}
	}
}

func TestDequantizeLegacyHandBuilt(t *testing.T) {
	t.Run("Q4_0", func(t *testing.T) {
		// Byte j: element j in the low nibble, element j+16 in the high one.
		qs := make([]byte, 16)
		for j := range qs {
			qs[j] = byte(j) | byte(15-j)<<4
		}
		y := decode(t, Q4_0, cat(f16b(0.5), qs), 32)
		expectFloats(t, "Q4_0", y, func(i int) float32 {
			if i < 16 {
				return float32(i-8) * 0.5
			}
			return float32(15-(i-16)-8) * 0.5
		})
		if y[0] != -4 || y[16] != 3.5 || y[31] != -4 { // spelled out once
			t.Errorf("Q4_0 spot values %v %v %v", y[0], y[16], y[31])
		}
	})
	t.Run("Q4_1", func(t *testing.T) {
		qs := make([]byte, 16)
		for j := range qs {
			qs[j] = byte(j) | byte((j*7)%16)<<4
		}
		y := decode(t, Q4_1, cat(f16b(0.25), f16b(-1), qs), 32)
		expectFloats(t, "Q4_1", y, func(i int) float32 {
			if i < 16 {
				return float32(i)*0.25 - 1
			}
			return float32((i-16)*7%16)*0.25 - 1
		})
	})
	// qh bit i is the fifth bit of element i.
	const qh uint32 = 0xa5c3_0ff1
	hb := func(i int) int { return int(qh>>i&1) << 4 }
	nib := func(i int) int { // low nibble of element i in the layouts below
		if i < 16 {
			return i
		}
		return 15 - (i - 16)
	}
	qs := make([]byte, 16)
	for j := range qs {
		qs[j] = byte(j) | byte(15-j)<<4
	}
	t.Run("Q5_0", func(t *testing.T) {
		y := decode(t, Q5_0, cat(f16b(0.125), binary.LittleEndian.AppendUint32(nil, qh), qs), 32)
		expectFloats(t, "Q5_0", y, func(i int) float32 { return float32(nib(i)+hb(i)-16) * 0.125 })
		// Element 0: nibble 0, qh bit 0 = 1 → 16-16 = 0. Element 31: nibble 0,
		// bit 31 = 1 → 0. Element 4: nibble 4, bit 4 = 1 → 20-16 = 4 → 0.5.
		if y[0] != 0 || y[31] != 0 || y[4] != 0.5 {
			t.Errorf("Q5_0 spot values %v %v %v", y[0], y[31], y[4])
		}
	})
	t.Run("Q5_1", func(t *testing.T) {
		y := decode(t, Q5_1, cat(f16b(2), f16b(-3), binary.LittleEndian.AppendUint32(nil, qh), qs), 32)
		expectFloats(t, "Q5_1", y, func(i int) float32 { return float32(nib(i)+hb(i))*2 - 3 })
	})
	t.Run("Q8_0", func(t *testing.T) {
		q := make([]byte, 32)
		for j := range q {
			q[j] = byte(int8(j*8 - 128))
		}
		y := decode(t, Q8_0, cat(f16b(0.0625), q), 32)
		expectFloats(t, "Q8_0", y, func(i int) float32 { return float32(i*8-128) * 0.0625 })
	})
	t.Run("Q8_1", func(t *testing.T) {
		q := make([]byte, 32)
		for j := range q {
			q[j] = byte(int8(127 - j*5))
		}
		y := decode(t, Q8_1, cat(f16b(0.5), f16b(1234), q), 32)
		expectFloats(t, "Q8_1", y, func(i int) float32 { return float32(127-i*5) * 0.5 })
	})
	t.Run("Q8_K", func(t *testing.T) {
		q := make([]byte, 256)
		for j := range q {
			q[j] = byte(int8(j - 128))
		}
		b := cat(binary.LittleEndian.AppendUint32(nil, math.Float32bits(0.01)), q, make([]byte, 32))
		y := decode(t, Q8_K, b, 256)
		expectFloats(t, "Q8_K", y, func(i int) float32 { return 0.01 * float32(i-128) })
	})
}

// Spec-level writers of the k-quant bit planes, element by element.

// put2 stores 2-bit value v of element e (0..255) in a 64-byte plane: 128
// elements per 32 bytes, element 32p+l of a half in bits 2p of byte l.
func put2(plane []byte, e int, v uint8) {
	h, r := e/128, e%128
	plane[32*h+r%32] |= (v & 3) << (2 * (r / 32))
}

// put4 stores nibble v of element e in a 128-byte plane: per 64 elements,
// element l in the low and element l+32 in the high nibble of byte l.
func put4(plane []byte, e int, v uint8) {
	c, r := e/64, e%64
	plane[32*c+r%32] |= (v & 0xf) << (4 * (r / 32))
}

// putBit sets bit e/32 of byte e%32.
func putBit(plane []byte, e int, v uint8) {
	plane[e%32] |= (v & 1) << (e / 32)
}

// pack6 writes 8 six-bit scales and mins in the Q4_K/Q5_K 12-byte layout.
func pack6(sc, mn [8]uint8) []byte {
	b := make([]byte, 12)
	for g := range 8 {
		if g < 4 {
			b[g] = sc[g] & 63
			b[g+4] = mn[g] & 63
			continue
		}
		b[g+4] = sc[g]&0xf | (mn[g]&0xf)<<4
		b[g-4] |= (sc[g] >> 4) << 6
		b[g] |= (mn[g] >> 4) << 6
	}
	return b
}

func TestDequantizeKHandBuilt(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	var q [256]uint8

	t.Run("Q2_K", func(t *testing.T) {
		scales, plane := make([]byte, 16), make([]byte, 64)
		for g := range scales {
			scales[g] = byte(g) | byte(15-g)<<4 // scale g, min 15-g
		}
		for e := range q {
			q[e] = uint8(r.IntN(4))
			put2(plane, e, q[e])
		}
		y := decode(t, Q2_K, cat(scales, plane, f16b(0.5), f16b(0.25)), 256)
		expectFloats(t, "Q2_K", y, func(e int) float32 {
			g := e / 16
			return 0.5*float32(g)*float32(q[e]) - 0.25*float32(15-g)
		})
	})

	t.Run("Q3_K", func(t *testing.T) {
		// Scales are 6-bit, stored offset by 32: group g's low nibble sits in
		// byte g (g<8) or the high nibble of byte g-8, its top two bits in
		// byte 8+g%4 at bit 2·(g/4).
		var want [16]int
		sc := make([]byte, 12)
		for g := range 16 {
			want[g] = g*4 - 32 // -32..28
			u := uint8(want[g] + 32)
			if g < 8 {
				sc[g] |= u & 0xf
			} else {
				sc[g-8] |= (u & 0xf) << 4
			}
			sc[8+g%4] |= (u >> 4) << (2 * (g / 4))
		}
		hmask, plane := make([]byte, 32), make([]byte, 64)
		for e := range q {
			q[e] = uint8(r.IntN(8)) // 3-bit code, value q-4
			put2(plane, e, q[e]&3)
			putBit(hmask, e, q[e]>>2)
		}
		y := decode(t, Q3_K, cat(hmask, plane, sc, f16b(0.125)), 256)
		expectFloats(t, "Q3_K", y, func(e int) float32 {
			return 0.125 * float32(want[e/16]) * float32(int(q[e])-4)
		})
		// Literal bytes: group 13 = low nibble of sc[5]>>4, top bits of sc[9] bits 6..7.
		if got := q3Scale(sc, 13) + 32; got != int(sc[5]>>4)|int(sc[9]>>6&3)<<4 || got != 13*4 {
			t.Errorf("group 13 scale %d", got)
		}
	})

	var sc, mn [8]uint8
	for g := range 8 {
		sc[g] = uint8(63 - 5*g) // exercise the high bits of groups 4..7
		mn[g] = uint8(7*g + 10)
	}
	// Literal check of the 6-bit packing for group 5: scale 38 = 0b100110,
	// min 45 = 0b101101 → byte 9 = 0x6 | 0xd<<4, top bits in bytes 1 and 5.
	if p := pack6(sc, mn); p[9] != 0xd6 || p[1]>>6 != 2 || p[5]>>6 != 2 {
		t.Fatalf("pack6 test helper: % x", p)
	}

	t.Run("Q4_K", func(t *testing.T) {
		plane := make([]byte, 128)
		for e := range q {
			q[e] = uint8(r.IntN(16))
			put4(plane, e, q[e])
		}
		y := decode(t, Q4_K, cat(f16b(0.5), f16b(0.125), pack6(sc, mn), plane), 256)
		expectFloats(t, "Q4_K", y, func(e int) float32 {
			g := e / 32
			return 0.5*float32(sc[g])*float32(q[e]) - 0.125*float32(mn[g])
		})
	})

	t.Run("Q5_K", func(t *testing.T) {
		qh, plane := make([]byte, 32), make([]byte, 128)
		for e := range q {
			q[e] = uint8(r.IntN(32))
			put4(plane, e, q[e]&0xf)
			putBit(qh, e, q[e]>>4)
		}
		y := decode(t, Q5_K, cat(f16b(0.25), f16b(1), pack6(sc, mn), qh, plane), 256)
		expectFloats(t, "Q5_K", y, func(e int) float32 {
			g := e / 32
			return 0.25*float32(sc[g])*float32(q[e]) - float32(mn[g])
		})
	})

	t.Run("Q6_K", func(t *testing.T) {
		// ql: per 128 elements, elements 0..31 and 64..95 share bytes 0..31
		// (low/high nibble), elements 32..63 and 96..127 bytes 32..63. qh:
		// the top two bits in the 2-bit plane layout.
		ql, qh, scales := make([]byte, 128), make([]byte, 64), make([]byte, 16)
		for e := range q {
			q[e] = uint8(r.IntN(64))
			h, rr := e/128, e%128
			p, l := rr/32, rr%32
			ql[64*h+32*(p%2)+l] |= (q[e] & 0xf) << (4 * (p / 2))
			put2(qh, e, q[e]>>4)
		}
		for g := range scales {
			scales[g] = byte(int8(g*16 - 128))
		}
		y := decode(t, Q6_K, cat(ql, qh, scales, f16b(0.0625)), 256)
		expectFloats(t, "Q6_K", y, func(e int) float32 {
			return 0.0625 * float32(e/16*16-128) * float32(int(q[e])-32)
		})
	})
}

func TestDequantizePanicsOnBadShape(t *testing.T) {
	tests := []struct {
		name string
		t    DType
		nsrc int
		ndst int
	}{
		{"partial block", Q4_0, 18, 31},
		{"short source", Q4_K, 143, 256},
		{"long source", Q8_0, 35, 32},
		{"unsupported type", IQ2_XXS, 66, 256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("no panic")
				}
			}()
			Dequantize(tt.t, make([]byte, tt.nsrc), make([]float32, tt.ndst))
		})
	}
}
