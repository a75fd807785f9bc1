package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// sumBytesAVX2 is the STREAM-style read kernel: the 64-bit lane sum of n
// bytes (n a multiple of 128), four independent accumulators.
func sumBytesAVX2() {
	kernel("sumU64AVX2Asm", "func(p *byte, n int) uint64",
		"sumU64AVX2Asm returns the wrapping sum of the n/8 little-endian uint64s at p (n % 128 == 0).")
	p, n := Load(Param("p"), GP64()), Load(Param("n"), GP64())
	a := []VecVirtual{YMM(), YMM(), YMM(), YMM()}
	for _, r := range a {
		VPXOR(r, r, r)
	}
	whileNonZero("sum", n, func() {
		for i, r := range a {
			VPADDQ(Mem{Base: p, Disp: 32 * i}, r, r)
		}
		// Prefetching 4 KiB ahead (the next page, which the hardware
		// prefetcher does not cross into) gave the plain read 0–10% more: the
		// bandwidth decode is measured against is the best plain read, not a
		// naive one.
		PREFETCHT0(Mem{Base: p, Disp: 4096})
		PREFETCHT0(Mem{Base: p, Disp: 4096 + 64})
		ADDQ(U32(128), p)
		SUBQ(U32(128), n)
	})
	lo, _ := sum4x2(a, VPADDQ, VEXTRACTI128)
	r0, r1 := GP64(), GP64()
	VMOVQ(lo, r0)
	VPEXTRQ(U8(1), lo, r1)
	ADDQ(r1, r0)
	Store(r0, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// prefetchLines asks for the cache lines of n bytes at p (PREFETCHT0, one
// per 64 bytes): attention's look-ahead at the next KV tile, whose rows the
// hardware prefetcher would only find after a few misses (a tile is a few
// KiB, and the next one is elsewhere in memory).
func prefetchLines() {
	kernel("prefetchAsm", "func(p *byte, n int)",
		"prefetchAsm prefetches the cache lines of the n bytes at p (n > 0), into every level.")
	p, n := Load(Param("p"), GP64()), Load(Param("n"), GP64())
	end := GP64()
	LEAQ(Mem{Base: p, Index: n, Scale: 1}, end)
	Label("prefetch_loop")
	PREFETCHT0(Mem{Base: p})
	ADDQ(U32(64), p)
	CMPQ(p, end)
	JB(LabelRef("prefetch_loop"))
	RET()
}
