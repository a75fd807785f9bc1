package kvcache

import (
	"fmt"
	"math"

	"github.com/corelm/corelm/pkg/kernels"
)

// Grouped attention (issue 17). The g = heads/KVHeads query heads of a GQA
// group share one KV head; attending them one by one (AttendHead) reads
// every key and value row g times, which at depth makes decode wait on the
// cache rather than on the weights. AttendGroup takes the whole group and
// walks the cache in tiles of a few positions, every query head reading a
// tile while it is in L1, so each row comes from memory once per step.
//
// The arithmetic of each head is that of AttendHead, operation for
// operation: a row's dot is the same kernel call on the same bytes, a
// tile's value rows are added in order into the same accumulators
// (AxpysF16Heads is AxpysF16 head by head, exactly, and the kernels load
// and store float32 between calls, which rounds nothing). So the two are
// exactly equal (TestAttendGroupMatchesHead).
//
// Past RangeLen positions attention is computed in ranges of at most
// RangeLen positions, each with its own softmax state (max, sum of
// exponentials, output not yet normalised), merged at the end as
// flash-decoding does. The split depends only on how many positions the
// token sees, never on the batch or the threads, so a token's result is
// the same whatever step it is computed in (chunked = one-batch prefill);
// it differs from the one-range result by float32 rounding only
// (TestAttendRangesMatchOneRange). The ranges let a step with fewer
// (row, KV head) tasks than threads — decode of one sequence of a model
// with one or two KV heads — keep every core busy (model.Step.Attend).

// tile is how many positions the group path reads at a time: their keys
// (or values) of one KV head, 16 KiB at a head width of 128 in f16, stay in
// L1 while each query head of the group goes over them.
const tile = 64

// RangeLen is the most positions one range of a token's attention covers.
const RangeLen = 512

// span returns the positions [lo, lo+n) the token at pos of layer l sees.
func (c *Cache) span(l, pos int) (lo, n int) {
	lc := &c.layers[l]
	if lc.window > 0 && pos-lc.window+1 > 0 {
		lo = pos - lc.window + 1
	}
	if lc.group < 0 && pos-lo+1 > lc.slots {
		// Only reachable if a caller broke the Chunk contract.
		panic(fmt.Sprintf("kvcache: layer %d ring of %d slots cannot serve %d positions", l, lc.slots, pos-lo+1))
	}
	return lo, pos - lo + 1
}

// Ranges is how many ranges the attention of the token at pos in layer l
// is computed in: one up to RangeLen positions in view.
func (c *Cache) Ranges(l, pos int) int {
	_, n := c.span(l, pos)
	return ranges(n, c.rangeLen())
}

func (c *Cache) rangeLen() int {
	if c.rangeN > 0 {
		return c.rangeN
	}
	return RangeLen
}

func ranges(n, rl int) int { return (n + rl - 1) / rl }

// rangeSpan returns range r of k over n positions starting at lo: the
// ranges are as equal as integers allow.
func rangeSpan(lo, n, r, k int) (int, int) {
	a, b := r*n/k, (r+1)*n/k
	return lo + a, b - a
}

// PartLen is the floats of one range's partial state of a group of g query
// heads of width hd: g maxima, g sums, then g outputs.
func PartLen(g, hd int) int { return g * (hd + 2) }

// AttendGroup computes causal attention of layer l for the token at pos and
// the g = heads/KVHeads query heads of KV head kvh: q holds their queries
// (g×HeadDim, already rotated), out receives their outputs. It equals g
// calls of AttendHead exactly while the token sees at most RangeLen
// positions, and within float32 rounding past that (see above).
func (c *Cache) AttendGroup(l, pos, kvh, heads int, q []float32, p AttnParams, out []float32, s *Scratch) {
	g, hd := heads/c.g.KVHeads, c.g.HeadDim
	lo, n := c.span(l, pos)
	k := ranges(n, c.rangeLen())
	if k == 1 {
		scores := c.groupScores(l, kvh, lo, n, g, q, p, s)
		for h := range g {
			kernels.Softmax(scores[h*n : (h+1)*n])
		}
		clear(out[:g*hd])
		c.groupValues(l, kvh, lo, n, g, scores, out, s)
		return
	}
	parts := growF(&s.parts, k*PartLen(g, hd))
	for r := range k {
		c.attendRange(l, kvh, lo, n, r, k, g, q, p, parts[r*PartLen(g, hd):(r+1)*PartLen(g, hd)], s)
	}
	MergeRanges(parts, k, g, hd, out)
}

// AttendRange computes range r (of Ranges(l, pos)) of AttendGroup's
// attention into part (PartLen floats): for each query head the max of its
// scores in the range, the sum of their exponentials less that max, and
// the value rows weighted by those exponentials. MergeRanges turns the
// ranges' states into AttendGroup's output.
func (c *Cache) AttendRange(l, pos, kvh, heads, r int, q []float32, p AttnParams, part []float32, s *Scratch) {
	lo, n := c.span(l, pos)
	c.attendRange(l, kvh, lo, n, r, ranges(n, c.rangeLen()), heads/c.g.KVHeads, q, p, part, s)
}

func (c *Cache) attendRange(l, kvh, lo, n, r, k, g int, q []float32, p AttnParams, part []float32, s *Scratch) {
	hd := c.g.HeadDim
	rlo, rn := rangeSpan(lo, n, r, k)
	scores := c.groupScores(l, kvh, rlo, rn, g, q, p, s)
	for h := range g {
		part[h], part[g+h] = kernels.ExpMax(scores[h*rn : (h+1)*rn])
	}
	o := part[2*g : 2*g+g*hd]
	clear(o)
	c.groupValues(l, kvh, rlo, rn, g, scores, o, s)
}

// MergeRanges combines k ranges' partial states (PartLen(g, hd) floats
// each, in range order) into the g outputs: with M the largest of the
// ranges' maxima and c_r = exp(m_r − M), out = Σ_r (c_r/S)·o_r where
// S = Σ_r c_r·s_r, ranges taken in order.
func MergeRanges(parts []float32, k, g, hd int, out []float32) {
	pl := PartLen(g, hd)
	for h := range g {
		m := float32(math.Inf(-1))
		for r := range k {
			m = max(m, parts[r*pl+h])
		}
		var sum float64
		for r := range k {
			sum += float64(float32(math.Exp(float64(parts[r*pl+h]-m)))) * float64(parts[r*pl+g+h])
		}
		o := out[h*hd : (h+1)*hd]
		clear(o)
		for r := range k {
			w := float32(math.Exp(float64(parts[r*pl+h]-m)) / sum)
			pr := parts[r*pl+2*g+h*hd : r*pl+2*g+(h+1)*hd]
			for j, x := range pr {
				o[j] += w * x
			}
		}
	}
}

// groupScores returns the g heads' scaled (and soft-capped) scores over
// positions [lo, lo+n), head h's at [h·n, (h+1)·n).
func (c *Cache) groupScores(l, kvh, lo, n, g int, q []float32, p AttnParams, s *Scratch) []float32 {
	hd := c.g.HeadDim
	scores := growF(&s.scores, g*n)
	for i, r := range c.runs(l, kvh, lo, n) {
		for t := 0; t < r.n; t += tile {
			tn := min(tile, r.n-t)
			if c.lanes {
				// The f16 kernels prefetch the next tile's rows themselves.
				c.laneScores(r, t, tn, q[:g*hd], scores[i+t:], n, s)
				continue
			}
			kt := r.k[t*c.head : (t+tn)*c.head]
			kernels.Prefetch(c.nextTile(l, kvh, lo, n, i, t, r).k)
			kernels.Prefetch(r.v[t*c.head : (t+tn)*c.head]) // for groupValues, after the softmax
			switch c.dt {
			case kernels.Q8_0:
				kernels.DotsQ8_0Queries(kt, c.head, q[:g*hd], hd, scores[i+t:], n, tn)
				continue
			}
			for h := range g {
				qh := q[h*hd : (h+1)*hd]
				sc := scores[h*n+i+t : h*n+i+t+tn]
				for j := range tn {
					sc[j] = kernels.DotF32(c.dt, kt[j*c.head:(j+1)*c.head], qh)
				}
			}
		}
	}
	capScores(scores, p)
	return scores
}

// capScores scales raw scores by p.Scale and soft-caps them. With
// soft-capping, 1/Softcap is folded into the scale before the tanh, as
// ggml's flash attention does: Softcap·tanh(q·k·(Scale/Softcap)), the tanh
// a vectorised rational approximation (kernels.ScaleTanh, within 4e-7 of
// tanh; math.Tanh per score cost more than the scores' dots).
func capScores(scores []float32, p AttnParams) {
	if p.Softcap > 0 {
		kernels.ScaleTanh(scores, p.Scale/p.Softcap, p.Softcap)
		return
	}
	kernels.Scale(scores, p.Scale)
}

// groupValues adds to the g heads' outputs (out, g×HeadDim) their weights
// (w, head h's n at [h·n, (h+1)·n)) times the value rows of [lo, lo+n).
func (c *Cache) groupValues(l, kvh, lo, n, g int, w, out []float32, s *Scratch) {
	hd := c.g.HeadDim
	vrow := growF(&s.vrow, hd)
	for i, r := range c.runs(l, kvh, lo, n) {
		if c.dt == kernels.F16 || c.dt == kernels.Q8_0 {
			for t := 0; t < r.n; t += tile {
				tn := min(tile, r.n-t)
				vt := r.v[t*c.head : (t+tn)*c.head]
				if !c.lanes {
					kernels.Prefetch(c.nextTile(l, kvh, lo, n, i, t, r).v)
				}
				if c.dt == kernels.F16 {
					kernels.AxpysF16Heads(w[i+t:], n, tn, vt, c.head, out[:g*hd], hd)
				} else {
					kernels.AxpysQ8_0Heads(w[i+t:], n, tn, vt, c.head, out[:g*hd], hd)
				}
			}
			continue
		}
		// f32: one dequantisation of the row for all the group's heads.
		for j := range r.n {
			kernels.Dequantize(c.dt, r.v[j*c.head:(j+1)*c.head], vrow)
			for h := range g {
				wh, o := w[h*n+i+j], out[h*hd:(h+1)*hd]
				for m, x := range vrow {
					o[m] += wh * x
				}
			}
		}
	}
}

func growF(p *[]float32, n int) []float32 {
	if cap(*p) < n {
		*p = make([]float32, n)
	}
	return (*p)[:n]
}
