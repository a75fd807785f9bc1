package kvcache

import (
	"github.com/corelm/corelm/pkg/kernels"
)

// Keys in lanes (issue 17). An f16 cache stores each head's keys of a ring
// or block (span positions) in groups of keyGroup = 8 consecutive
// positions, and within a group element d of its keys side by side:
// position i's element d is the float16 at
//
//	(i − i%8)·head + 2·w·d + 2·(i%8)    with w = min(8, span − (i − i%8)),
//
// w being 8 but in the last group of a span that is not a multiple of 8.
// A head's keys take the same bytes as one row after the other did; the
// values stay in rows. kernels.DotsF16Keys widens element d of eight keys
// with one instruction and multiplies it by a query's element d into eight
// lanes, one score each: a score is one chain of fused multiply-adds over
// d in order, with no horizontal sum to fold, and the same bits however a
// call is cut (decode, a tile of prefill, chunked or one batch) and on
// every tier.
const keyGroup = kernels.KeyGroup

// storeLanes writes the keys x of position i into kh, a head's keys in a
// span of span positions.
func storeLanes(kh []byte, span, i int, x []float32) {
	g0 := i - i%keyGroup
	w := min(keyGroup, span-g0)
	b := kh[2*len(x)*g0+2*(i-g0):]
	for d, f := range x {
		h := kernels.F32ToF16(f)
		b[2*w*d], b[2*w*d+1] = byte(h), byte(h>>8)
	}
}

// laneScores sets out[j·os+x] to query j's score (q[j·hd:(j+1)·hd]) of
// the position from+x of run r, for x < m. Whole groups go to
// DotsF16Keys where out takes them; a group the m positions cover in
// part, or the short last group of a span, is scored whole in scratch
// (the short one padded to eight keys) and the positions asked for are
// copied out.
func (c *Cache) laneScores(r run, from, m int, q []float32, out []float32, os int, s *Scratch) {
	hd := c.g.HeadDim
	nq := len(q) / hd
	for x := 0; x < m; {
		i := r.i0 + from + x
		g0 := i - i%keyGroup
		w := min(keyGroup, r.span-g0)
		if i == g0 && w == keyGroup && m-x >= keyGroup {
			ng := min(m-x, r.span-g0) / keyGroup
			kernels.DotsF16Keys(r.kh[g0*c.head:(g0+ng*keyGroup)*c.head], ng, q, hd, out[x:], os)
			x += ng * keyGroup
			continue
		}
		kg := r.kh[g0*c.head : (g0+w)*c.head]
		if w < keyGroup {
			pad := growB(&s.kpad, keyGroup*c.head)
			clear(pad)
			for d := range hd {
				copy(pad[2*keyGroup*d:2*keyGroup*d+2*w], kg[2*w*d:2*w*d+2*w])
			}
			kg = pad
		}
		tmp := growF(&s.kscores, nq*keyGroup)
		kernels.DotsF16Keys(kg, 1, q, hd, tmp, keyGroup)
		cnt := min(g0+w-i, m-x)
		for j := range nq {
			copy(out[j*os+x:j*os+x+cnt], tmp[j*keyGroup+i-g0:])
		}
		x += cnt
	}
}

func growB(p *[]byte, n int) []byte {
	if cap(*p) < n {
		*p = make([]byte, n)
	}
	return (*p)[:n]
}
