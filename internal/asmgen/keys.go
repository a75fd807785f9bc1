package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Attention's scores over an f16 cache whose keys are stored in lanes
// (issue 17): a group of eight positions of one KV head holds element d
// of its eight keys side by side, 16 bytes, for d = 0..hd-1. One
// VCVTPH2PS widens element d of eight keys, and each query multiplies its
// element d, broadcast, into a register whose lane l is key l's score: a
// chain of fused multiply-adds over d = 0..hd-1 in order, no horizontal
// sum. A score is that chain whatever else the call scores, so every
// kernel here, and the reference (dotsF16KeysGeneric), gives the same bits.

// keysT is the groups of eight keys the Q-query kernel scores at a time:
// Q·T accumulators, eight or nine chains to cover the multiply-add's
// latency at two a cycle, with the Q broadcasts and a widened key in
// sixteen registers. pkg/kernels' dispatch (keysGroupsAVX2) must agree.
func keysT(Q int) int { return [...]int{8, 4, 3, 2}[Q-1] }

// dotsF16KeysAVX2 is the kernel of Q queries (1 to 4) and T groups a step;
// with T = 1 it scores the groups a step of keysT(Q) leaves.
func dotsF16KeysAVX2(Q, T int) {
	name := fmt.Sprintf("dotsF16KeysQ%dT%dAVX2Asm", Q, T)
	kernel(name, "func(k *byte, groups int, q *float32, hd int, out *float32, os int)",
		name+" sets out[j·os+8t+l] to the dot of q[j·hd:(j+1)·hd] with key l of group t, for j < "+fmt.Sprint(Q)+",",
		"t < groups (a multiple of "+fmt.Sprint(T)+") and l < 8: element d of key l of group t is the float16 at",
		"k + 16·hd·t + 16·d + 2·l, and each score is fma(q_j[d], key[d], s) for d = 0..hd-1 in order from s = 0.")
	k, groups, q := Load(Param("k"), GP64()), Load(Param("groups"), GP64()), Load(Param("q"), GP64())
	hd, out := Load(Param("hd"), GP64()), Load(Param("out"), GP64())
	ts := GP64() // bytes of one group
	MOVQ(hd, ts)
	SHLQ(U8(4), ts)
	var ts3, qs, qs3, os, os3 Register
	if T > 3 {
		ts3 = GP64()
		LEAQ(Mem{Base: ts, Index: ts, Scale: 2}, ts3)
	}
	if Q > 1 {
		os, qs = Load(Param("os"), GP64()), GP64()
		SHLQ(U8(2), os)
		MOVQ(hd, qs)
		SHLQ(U8(2), qs)
		if Q > 3 {
			qs3, os3 = GP64(), GP64()
			LEAQ(Mem{Base: qs, Index: qs, Scale: 2}, qs3)
			LEAQ(Mem{Base: os, Index: os, Scale: 2}, os3)
		}
	}
	whileNonZero(name+"_group", groups, func() {
		acc := make([][]VecVirtual, Q)
		for j := range acc {
			acc[j] = zeroed(T, YMM, VXORPS)
		}
		d, kp, qp := GP64(), GP64(), GP64()
		MOVQ(hd, d)
		MOVQ(k, kp)
		MOVQ(q, qp)
		var kp4 Register
		if T > 4 {
			kp4 = GP64()
			LEAQ(Mem{Base: k, Index: ts, Scale: 4}, kp4)
		}
		key := func(t int) Mem {
			switch t {
			case 0:
				return Mem{Base: kp}
			case 3:
				return Mem{Base: kp, Index: ts3, Scale: 1}
			case 4:
				return Mem{Base: kp4}
			case 5, 6:
				return Mem{Base: kp4, Index: ts, Scale: uint8(t - 4)}
			case 7:
				return Mem{Base: kp4, Index: ts3, Scale: 1}
			}
			return Mem{Base: kp, Index: ts, Scale: uint8(t)}
		}
		// Element d of the keys, then d+1 (disp 16 and 4 bytes on): two a
		// trip, an odd last one after.
		step := func(u int) {
			b := make([]VecVirtual, Q)
			for j := range b {
				b[j] = YMM()
				VBROADCASTSS(nth(qp, qs, qs3, j, 4*u), b[j])
			}
			for t := range T {
				kv := YMM()
				m := key(t)
				m.Disp += 16 * u
				VCVTPH2PS(m, kv)
				for j := range b {
					VFMADD231PS(kv, b[j], acc[j][t])
				}
			}
		}
		SHRQ(U8(1), d)
		JZ(LabelRef(name + "_odd"))
		// The step's T groups are T·16·hd bytes, read in hd/2 trips: the
		// next step's, as many bytes on, are prefetched T·32 bytes a trip
		// (a whole tile of a cache read from memory would otherwise wait
		// on a few lines at a time: the loop is dense in multiply-adds).
		pp := GP64()
		LEAQ(Mem{Base: k, Index: ts, Scale: 1}, pp)
		for range T - 1 {
			ADDQ(ts, pp)
		}
		Label(name + "_d")
		for i := 0; i < 32*T; i += 64 {
			PREFETCHT0(Mem{Base: pp, Disp: i})
		}
		ADDQ(U32(32*T), pp)
		step(0)
		step(1)
		ADDQ(U32(32), kp)
		if T > 4 {
			ADDQ(U32(32), kp4)
		}
		ADDQ(U32(8), qp)
		DECQ(d)
		JNZ(LabelRef(name + "_d"))
		Label(name + "_odd")
		TESTQ(U32(1), hd)
		JZ(LabelRef(name + "_store"))
		step(0)
		ADDQ(U32(16), kp)
		if T > 4 {
			ADDQ(U32(16), kp4)
		}
		Label(name + "_store")
		for j := range acc {
			for t, a := range acc[j] {
				VMOVUPS(a, nth(out, os, os3, j, 32*t))
			}
		}
		// kp is k + ts now (kp4 k + 5·ts): on to group T.
		switch T {
		case 1:
			MOVQ(kp, k)
		case 2:
			LEAQ(Mem{Base: kp, Index: ts, Scale: 1}, k)
		case 3:
			LEAQ(Mem{Base: kp, Index: ts, Scale: 2}, k)
		case 4:
			LEAQ(Mem{Base: kp, Index: ts3, Scale: 1}, k)
		case 8:
			LEAQ(Mem{Base: kp4, Index: ts3, Scale: 1}, k)
		default:
			panic(fmt.Sprintf("dotsF16KeysAVX2: no step of %d groups", T))
		}
		ADDQ(U32(32*T), out)
		SUBQ(U32(T), groups)
	})
	VZEROUPPER()
	RET()
}
