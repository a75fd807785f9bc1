package kvcache

import "github.com/corelm/corelm/pkg/kernels"

// Tiled prefill attention (issue 17). A prefill step attends many
// consecutive tokens of a sequence over nearly the same positions;
// AttendGroup row by row reads every key and value row once per token.
// AttendBlock takes a block of consecutive rows with the query heads of
// one KV head and walks the positions they see in tiles of 64: every
// (row, head) of the block reads a tile while it is in L1, so a K or V row
// comes from memory once per block instead of once per token.
//
// Each row's arithmetic is AttendGroup's, operation for operation, so the
// two are bit for bit equal (TestAttendBlockMatchesGroup) and chunked
// prefill still equals one batch:
//   - a row keeps its own ranges (rangeSpan of the positions it sees) and
//     its own softmax: Softmax for one range, ExpMax per range and
//     MergeRanges for several, as AttendGroup computes them. This is not
//     an online softmax rescaling a running output tile after tile (that
//     would round differently from the decode path); a row's scores of a
//     range, at most RangeLen per head, are all kept until its softmax.
//   - a score is one kernel call's row (DotsF16 and DotsQ8_0 give a row the
//     same bits wherever it falls in a call), scaled and capped by the same
//     code (capScores);
//   - an output element adds its value rows in position order, one
//     multiply-add each (AxpysF16Heads and AxpysQ8_0Heads load and store
//     float32 between calls, so where a call starts changes nothing).
//
// Rows whose token is split into a different number of ranges (a block
// straddling a multiple of RangeLen) are attended as separate blocks.

// BlockSpan is the part of the positions one row of a block sees that
// one pass over a range covers, and where its scores are.
type blockSpan struct {
	lo, n int // positions [lo, lo+n)
	off   int // its g heads' scores at scores[off+h·n : off+(h+1)·n]
}

// AttendBlock computes AttendGroup for rows consecutive tokens of one
// sequence, at positions pos, pos+1, …: row j's g = heads/KVHeads queries
// are q[j·qs : j·qs+g·HeadDim] and its outputs go to out[j·os : j·os+g·HeadDim].
// The result is bit for bit that of AttendGroup row by row.
func (c *Cache) AttendBlock(l, pos, rows, kvh, heads int, q []float32, qs int, p AttnParams, out []float32, os int, s *Scratch) {
	g, rl := heads/c.g.KVHeads, c.rangeLen()
	for j0 := 0; j0 < rows; {
		_, n := c.span(l, pos+j0)
		k := ranges(n, rl)
		j1 := j0 + 1
		for ; j1 < rows; j1++ {
			if _, n := c.span(l, pos+j1); ranges(n, rl) != k {
				break
			}
		}
		c.attendBlock(l, pos+j0, j1-j0, kvh, g, k, q[j0*qs:], qs, p, out[j0*os:], os, s)
		j0 = j1
	}
}

// attendBlock is AttendBlock for rows whose tokens all have k ranges.
func (c *Cache) attendBlock(l, pos, rows, kvh, g, k int, q []float32, qs int, p AttnParams, out []float32, os int, s *Scratch) {
	hd := c.g.HeadDim
	pl := PartLen(g, hd)
	var parts []float32
	if k > 1 {
		parts = growF(&s.bparts, rows*k*pl) // row j's k states at [j·k·pl, (j+1)·k·pl)
	}
	if cap(s.spans) < rows {
		s.spans = make([]blockSpan, rows)
	}
	spans := s.spans[:rows]
	for r := range k {
		total, ulo, uhi := 0, 0, 0
		for j := range spans {
			lo, n := c.span(l, pos+j)
			a, m := rangeSpan(lo, n, r, k)
			spans[j] = blockSpan{lo: a, n: m, off: total}
			total += g * m
			if j == 0 || a < ulo {
				ulo = a
			}
			uhi = max(uhi, a+m)
		}
		scores := growF(&s.scores, total)
		c.blockScores(l, kvh, ulo, uhi-ulo, g, spans, q, qs, scores)
		capScores(scores, p)
		outs := s.outs[:0]
		for j, sp := range spans {
			var o []float32
			if k == 1 {
				for h := range g {
					kernels.Softmax(scores[sp.off+h*sp.n : sp.off+(h+1)*sp.n])
				}
				o = out[j*os : j*os+g*hd]
			} else {
				part := parts[(j*k+r)*pl : (j*k+r+1)*pl]
				for h := range g {
					part[h], part[g+h] = kernels.ExpMax(scores[sp.off+h*sp.n : sp.off+(h+1)*sp.n])
				}
				o = part[2*g : 2*g+g*hd]
			}
			clear(o)
			outs = append(outs, o)
		}
		s.outs = outs
		c.blockValues(l, kvh, ulo, uhi-ulo, g, spans, scores, outs, s)
	}
	if k > 1 {
		for j := range rows {
			MergeRanges(parts[j*k*pl:(j+1)*k*pl], k, g, hd, out[j*os:j*os+g*hd])
		}
	}
}

// blockScores computes the rows' scores (unscaled) of the positions in
// their spans, walking [lo, lo+n) — the union of the spans — in tiles.
func (c *Cache) blockScores(l, kvh, lo, n, g int, spans []blockSpan, q []float32, qs int, scores []float32) {
	hd := c.g.HeadDim
	for i, r := range c.runs(l, kvh, lo, n) {
		for t := 0; t < r.n; t += tile {
			p0, tn := lo+i+t, min(tile, r.n-t)
			for j, sp := range spans {
				a, b := max(p0, sp.lo), min(p0+tn, sp.lo+sp.n)
				if a >= b {
					continue
				}
				kt := r.k[(a-lo-i)*c.row : (b-lo-i-1)*c.row+c.head]
				for h := range g {
					qh := q[j*qs+h*hd : j*qs+(h+1)*hd]
					sc := scores[sp.off+h*sp.n+a-sp.lo : sp.off+h*sp.n+b-sp.lo]
					switch c.dt {
					case kernels.F16:
						kernels.DotsF16(kt, c.row, qh, sc)
						continue
					case kernels.Q8_0:
						kernels.DotsQ8_0(kt, c.row, qh, sc)
						continue
					}
					for m := range sc {
						sc[m] = kernels.DotF32(c.dt, kt[m*c.row:m*c.row+c.head], qh)
					}
				}
			}
		}
	}
}

// blockValues adds to each row's outputs (outs[j], g×HeadDim) its weights
// times the value rows of its span, tile by tile over [lo, lo+n).
func (c *Cache) blockValues(l, kvh, lo, n, g int, spans []blockSpan, w []float32, outs [][]float32, s *Scratch) {
	hd := c.g.HeadDim
	vrow := growF(&s.vrow, hd)
	for i, r := range c.runs(l, kvh, lo, n) {
		for t := 0; t < r.n; t += tile {
			p0, tn := lo+i+t, min(tile, r.n-t)
			if c.dt != kernels.F16 && c.dt != kernels.Q8_0 {
				// f32: one dequantisation of the row for every row and head.
				for m := range tn {
					p := p0 + m
					kernels.Dequantize(c.dt, r.v[(p-lo-i)*c.row:(p-lo-i)*c.row+c.head], vrow)
					for j, sp := range spans {
						if p < sp.lo || p >= sp.lo+sp.n {
							continue
						}
						for h := range g {
							wh, o := w[sp.off+h*sp.n+p-sp.lo], outs[j][h*hd:(h+1)*hd]
							for m, x := range vrow {
								o[m] += wh * x
							}
						}
					}
				}
				continue
			}
			for j, sp := range spans {
				a, b := max(p0, sp.lo), min(p0+tn, sp.lo+sp.n)
				if a >= b {
					continue
				}
				vt := r.v[(a-lo-i)*c.row : (b-lo-i-1)*c.row+c.head]
				wj := w[sp.off+a-sp.lo:]
				if c.dt == kernels.F16 {
					kernels.AxpysF16Heads(wj, sp.n, b-a, vt, c.row, outs[j], hd)
				} else {
					kernels.AxpysQ8_0Heads(wj, sp.n, b-a, vt, c.row, outs[j], hd)
				}
			}
		}
	}
}
