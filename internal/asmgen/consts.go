package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
)

// The constant vectors the kernels load (the data section of dot_amd64.s).

var (
	m4Z       Mem    // 64 × 0x0f
	m2Y       Mem    // 32 × 0x03
	m32Y      Mem    // 32 × 32
	ones16Y   Mem    // 16 × int16(1)
	packPermY Mem    // dword order undoing VPACKSS*'s lane interleave
	negF127   Mem    // float32 -127
	oneF      Mem    // float32 1
	halfF     Mem    // float32 0.5
	posF127   Mem    // float32 127
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
	m4Z = splat64("m4", 64, 0x0f0f0f0f0f0f0f0f)
	m2Y = splat64("m2", 32, 0x0303030303030303)
	m32Y = splat64("m32", 32, 0x2020202020202020)
	m8Y = splat64("m8", 32, 0x0808080808080808)
	m16Z = splat64("m16", 64, 0x1010101010101010)
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
	halfF = GLOBL("halff", RODATA|NOPTR)
	DATA(0, F32(0.5))
	posF127 = GLOBL("posf127", RODATA|NOPTR)
	DATA(0, F32(127))
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
	ones16Y = splat64("ones16", 32, 0x0001000100010001)
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

// splat64 declares the constant name: n bytes of the 64-bit pattern v.
func splat64(name string, n int, v uint64) Mem {
	m := GLOBL(name, RODATA|NOPTR)
	for i := 0; i < n; i += 8 {
		DATA(i, U64(v))
	}
	return m
}
