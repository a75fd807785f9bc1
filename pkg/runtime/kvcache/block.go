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
//   - a score is the same kernel arithmetic wherever it falls in a call
//     (DotsF16Keys's chain of one key's lane, DotsQ8_0's row), scaled and
//     capped by the same code (capScores);
//   - an output element adds its value rows in position order, one
//     multiply-add each (AxpysF16Heads and AxpysQ8_0Heads load and store
//     float32 between calls, so where a call starts changes nothing).
//
// Rows whose token is split into a different number of ranges (a block
// straddling a multiple of RangeLen) are attended as separate blocks.

// blockSpan is the positions [lo, lo+n) one row of a block sees in the
// range being computed.
type blockSpan struct{ lo, n int }

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

// attendBlock is AttendBlock for rows whose tokens all have k ranges. The
// block's g·rows queries are copied side by side (query v = j·g+h is row
// j's head h), so that the rows covering a whole tile are scored and
// weighted in one kernel call; query v's score of position p in the range
// being computed is scores[v·un + p−ulo], [ulo, ulo+un) the union of the
// rows' spans.
func (c *Cache) attendBlock(l, pos, rows, kvh, g, k int, q []float32, qs int, p AttnParams, out []float32, os int, s *Scratch) {
	hd := c.g.HeadDim
	gd, pl := g*hd, PartLen(g, hd)
	var parts []float32
	if k > 1 {
		parts = growF(&s.bparts, rows*k*pl) // row j's k states at [j·k·pl, (j+1)·k·pl)
	}
	if cap(s.spans) < rows {
		s.spans = make([]blockSpan, rows)
	}
	spans := s.spans[:rows]
	qb, ob := growF(&s.bq, rows*gd), growF(&s.bout, rows*gd)
	for j := range rows {
		copy(qb[j*gd:(j+1)*gd], q[j*qs:j*qs+gd])
	}
	for r := range k {
		ulo, uhi := 0, 0
		for j := range spans {
			lo, n := c.span(l, pos+j)
			a, m := rangeSpan(lo, n, r, k)
			spans[j] = blockSpan{a, m}
			if j == 0 || a < ulo {
				ulo = a
			}
			uhi = max(uhi, a+m)
		}
		un := uhi - ulo
		scores := growF(&s.scores, rows*g*un)
		c.blockScores(l, kvh, ulo, un, g, spans, qb, scores, s)
		for j, sp := range spans {
			for h := range g {
				v := j*g + h
				x := scores[v*un+sp.lo-ulo : v*un+sp.lo-ulo+sp.n]
				capScores(x, p)
				if k == 1 {
					kernels.Softmax(x)
				} else {
					part := parts[(j*k+r)*pl:]
					part[h], part[g+h] = kernels.ExpMax(x)
				}
			}
		}
		clear(ob)
		c.blockValues(l, kvh, ulo, un, g, spans, scores, ob, s)
		for j := range rows {
			if k == 1 {
				copy(out[j*os:j*os+gd], ob[j*gd:(j+1)*gd])
			} else {
				copy(parts[(j*k+r)*pl+2*g:(j*k+r+1)*pl], ob[j*gd:(j+1)*gd])
			}
		}
	}
	if k > 1 {
		for j := range rows {
			MergeRanges(parts[j*k*pl:(j+1)*k*pl], k, g, hd, out[j*os:j*os+gd])
		}
	}
}

// tileRows calls f for the rows that see all of the tile [p0, p0+tn) — a
// run of consecutive rows, since the spans' ends rise with the row — as
// one call f(j0, j1, p0, p0+tn), and for each row seeing part of it as
// f(j, j+1, a, b) with [a, b) its part.
func tileRows(spans []blockSpan, p0, tn int, f func(j0, j1, a, b int)) {
	full := -1
	for j, sp := range spans {
		a, b := max(p0, sp.lo), min(p0+tn, sp.lo+sp.n)
		if a == p0 && b == p0+tn {
			if full < 0 {
				full = j
			}
			continue
		}
		if full >= 0 {
			f(full, j, p0, p0+tn)
			full = -1
		}
		if a < b {
			f(j, j+1, a, b)
		}
	}
	if full >= 0 {
		f(full, len(spans), p0, p0+tn)
	}
}

// seeing returns the rows [j0, j1) whose spans meet [a, b): a run, since
// the spans' starts and ends rise with the row.
func seeing(spans []blockSpan, a, b int) (j0, j1 int) {
	j0 = len(spans)
	for j, sp := range spans {
		if sp.lo < b && sp.lo+sp.n > a {
			j0, j1 = min(j0, j), j+1
		}
	}
	return j0, max(j0, j1)
}

// blockScores computes the rows' scores (unscaled) of the positions in
// their spans, walking [lo, lo+n) — the union of the spans — in tiles.
func (c *Cache) blockScores(l, kvh, lo, n, g int, spans []blockSpan, q, scores []float32, s *Scratch) {
	hd := c.g.HeadDim
	for i, r := range c.runs(l, kvh, lo, n) {
		for t := 0; t < r.n; t += tile {
			p0, tn := lo+i+t, min(tile, r.n-t)
			if c.lanes {
				// Every row that sees part of the tile scores all of it:
				// whole groups of keys, and the scores of positions outside
				// a row's span (inside the union, so inside its scores) are
				// never read.
				j0, j1 := seeing(spans, p0, p0+tn)
				c.laneScores(r, t, tn, q[j0*g*hd:j1*g*hd], scores[j0*g*n+p0-lo:], n, s)
				continue
			}
			tileRows(spans, p0, tn, func(j0, j1, a, b int) {
				kt := r.k[(a-lo-i)*c.head : (b-lo-i)*c.head]
				qs := q[j0*g*hd : j1*g*hd]
				sc := scores[j0*g*n+a-lo:]
				switch c.dt {
				case kernels.Q8_0:
					kernels.DotsQ8_0Queries(kt, c.head, qs, hd, sc, n, b-a)
				default:
					for v := range len(qs) / hd {
						for m := range b - a {
							sc[v*n+m] = kernels.DotF32(c.dt, kt[m*c.head:(m+1)*c.head], qs[v*hd:(v+1)*hd])
						}
					}
				}
			})
		}
	}
}

// blockValues adds to each query's output (out[v·hd:(v+1)·hd]) its
// weights times the value rows of its row's span, tile by tile over
// [lo, lo+n).
func (c *Cache) blockValues(l, kvh, lo, n, g int, spans []blockSpan, w, out []float32, s *Scratch) {
	hd := c.g.HeadDim
	vrow := growF(&s.vrow, hd)
	for i, r := range c.runs(l, kvh, lo, n) {
		for t := 0; t < r.n; t += tile {
			p0, tn := lo+i+t, min(tile, r.n-t)
			if c.dt == kernels.F16 || c.dt == kernels.Q8_0 {
				tileRows(spans, p0, tn, func(j0, j1, a, b int) {
					vt := r.v[(a-lo-i)*c.head : (b-lo-i)*c.head]
					wj, oj := w[j0*g*n+a-lo:], out[j0*g*hd:j1*g*hd]
					if c.dt == kernels.F16 {
						kernels.AxpysF16Heads(wj, n, b-a, vt, c.head, oj, hd)
					} else {
						kernels.AxpysQ8_0Heads(wj, n, b-a, vt, c.head, oj, hd)
					}
				})
				continue
			}
			// f32: one dequantisation of the row for every row and head.
			for p := p0; p < p0+tn; p++ {
				kernels.Dequantize(c.dt, r.v[(p-lo-i)*c.head:(p-lo-i+1)*c.head], vrow)
				for j, sp := range spans {
					if p < sp.lo || p >= sp.lo+sp.n {
						continue
					}
					for v := j * g; v < (j+1)*g; v++ {
						wv, o := w[v*n+p-lo], out[v*hd:(v+1)*hd]
						for m, x := range vrow {
							o[m] += wv * x
						}
					}
				}
			}
		}
	}
}
