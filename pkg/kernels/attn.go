package kernels

import (
	"fmt"
	"math"
)

// ExpMax replaces x by exp(x − max x) and returns the max and Σ exp(x − max
// x) (summed in float64, rounded once): Softmax without its final scaling.
// It is the partial softmax state of one range of attention scores, which
// flash-decoding merges across ranges; Softmax(x) equals x scaled by 1/sum.
func ExpMax(x []float32) (m, sum float32) {
	if len(x) == 0 {
		return 0, 0
	}
	m = kern.max(x)
	return m, kern.expSub(x, m)
}

// AxpysF16Heads is AxpysF16 for the g = len(o)/hd query heads of a GQA
// group over the same value rows: head h adds Σ_i w[h·ws+i]·v_i (i < n) to
// its output o[h·hd:(h+1)·hd], v_i the hd float16 values at v[i·stride:].
// Every tier gives exactly what g calls of its AxpysF16 would; the assembly
// widens each row once for all the heads.
func AxpysF16Heads(w []float32, ws, n int, v []byte, stride int, o []float32, hd int) {
	if hd <= 0 || len(o)%hd != 0 {
		panic(fmt.Sprintf("kernels: AxpysF16Heads: %d outputs are not whole heads of %d", len(o), hd))
	}
	g := len(o) / hd
	if g == 0 || n == 0 {
		return
	}
	if n < 0 || ws < n || len(w) < (g-1)*ws+n || stride < 2*hd || len(v) < (n-1)*stride+2*hd {
		panic(fmt.Sprintf("kernels: AxpysF16Heads: %d heads of %d weights at stride %d in %d, %d rows of %d values at stride %d in %d bytes",
			g, n, ws, len(w), n, hd, stride, len(v)))
	}
	kern.axpysF16Heads(w, ws, n, v, stride, o, hd)
}

// axpysF16HeadsGeneric is the heads one by one, each as axpysF16Generic.
func axpysF16HeadsGeneric(w []float32, ws, n int, v []byte, stride int, o []float32, hd int) {
	for h := range len(o) / hd {
		axpysF16Generic(w[h*ws:h*ws+n], v, stride, o[h*hd:(h+1)*hd])
	}
}

// AxpysQ8_0Heads is AxpysF16Heads over a q8_0 cache: head h adds
// Σ_i w[h·ws+i]·x_i to o[h·hd:(h+1)·hd], x_i the hd values (hd % 32 == 0)
// of the q8_0 row at v[i·stride:], each d·q as Dequantize gives it. The
// reference adds w·x rounded, the assembly fused (fma(w, x, o)); each tier
// gives exactly what it gives head by head.
func AxpysQ8_0Heads(w []float32, ws, n int, v []byte, stride int, o []float32, hd int) {
	if hd <= 0 || hd%32 != 0 || len(o)%hd != 0 {
		panic(fmt.Sprintf("kernels: AxpysQ8_0Heads: %d outputs are not whole heads of %d (a multiple of 32)", len(o), hd))
	}
	g := len(o) / hd
	if g == 0 || n == 0 {
		return
	}
	rb := hd / 32 * 34
	if n < 0 || ws < n || len(w) < (g-1)*ws+n || stride < rb || len(v) < (n-1)*stride+rb {
		panic(fmt.Sprintf("kernels: AxpysQ8_0Heads: %d heads of %d weights at stride %d in %d, %d rows of %d values at stride %d in %d bytes",
			g, n, ws, len(w), n, hd, stride, len(v)))
	}
	kern.axpysQ8Heads(w, ws, n, v, stride, o, hd)
}

// axpysQ8HeadsGeneric dequantises each row once, then adds it to each
// head's output in turn: o[j] += w·x[j].
func axpysQ8HeadsGeneric(w []float32, ws, n int, v []byte, stride int, o []float32, hd int) {
	var buf [32]float32
	for i := range n {
		row := v[i*stride:]
		for b := 0; b < hd; b += 32 {
			x := buf[:32]
			dequantQ8_0(row[b/32*34:b/32*34+34], x)
			for h := range len(o) / hd {
				wh, oh := w[h*ws+i], o[h*hd+b:h*hd+b+32]
				for j, xj := range x {
					oh[j] += wh * xj
				}
			}
		}
	}
}

// DotsQ8_0 is attention's scores of one query over consecutive positions
// of a q8_0 KV cache: out[i] is the dot of q with the
// q8_0 row of len(q) values (a multiple of 32) at k[i·stride:], as DotF32
// computes it; the AVX2 tier sums in four chains of eight float32 lanes and
// the AVX-512 tier in a tree of float32 lanes (within float32 summation
// error), and a row's score never depends on where in the call it falls.
func DotsQ8_0(k []byte, stride int, q, out []float32) {
	rb := len(q) / 32 * 34
	if len(q)%32 != 0 {
		panic(fmt.Sprintf("kernels: DotsQ8_0: rows of %d values are not whole q8_0 blocks", len(q)))
	}
	if len(out) > 0 && (stride < rb || len(k) < (len(out)-1)*stride+rb) {
		panic(fmt.Sprintf("kernels: DotsQ8_0: %d rows of %d values at stride %d in %d bytes", len(out), len(q), stride, len(k)))
	}
	kern.dotsQ8(k, stride, q, out)
}

// dotsQ8Generic is DotF32 row by row: each block's 32 products summed in
// float32, the blocks' sums in float64.
func dotsQ8Generic(k []byte, stride int, q, out []float32) {
	var y [32]float32
	for i := range out {
		row := k[i*stride:]
		var sum float64
		for b := 0; b < len(q); b += 32 {
			dequantQ8_0(row[b/32*34:b/32*34+34], y[:])
			var s float32
			for j, v := range q[b : b+32] {
				s += y[j] * v
			}
			sum += float64(s)
		}
		out[i] = float32(sum)
	}
}

// DotsQ8_0Queries is DotsQ8_0 for the len(q)/hd queries q[j·hd:(j+1)·hd]
// against the same n rows (a GQA group's heads, a tile of prefill):
// out[j·os+i] is the score of row i for query j, bit for bit what
// DotsQ8_0(k, stride, q_j, out[j·os:j·os+n]) gives on the same tier. The
// reference is that loop; the assembly tiers take two to four queries at a
// time, widening each row once for them all.
func DotsQ8_0Queries(k []byte, stride int, q []float32, hd int, out []float32, os, n int) {
	if hd%32 != 0 {
		panic(fmt.Sprintf("kernels: DotsQ8_0Queries: rows of %d values are not whole q8_0 blocks", hd))
	}
	if checkQueries("DotsQ8_0Queries", hd/32*34, k, stride, q, hd, out, os, n) {
		kern.dotsQ8Queries(k, stride, q, hd, out, os, n)
	}
}

// dotsQ8QueriesGeneric is dotsQ8Generic query by query.
func dotsQ8QueriesGeneric(k []byte, stride int, q []float32, hd int, out []float32, os, n int) {
	queryByQuery(dotsQ8Generic, k, stride, q, hd, out, os, n)
}

// queryByQuery runs a one-query score kernel for each query in turn.
func queryByQuery(dots func(k []byte, stride int, q, out []float32), k []byte, stride int, q []float32, hd int, out []float32, os, n int) {
	for j := range len(q) / hd {
		dots(k, stride, q[j*hd:(j+1)*hd], out[j*os:j*os+n])
	}
}

// checkQueries panics unless the n rows of rb bytes at stride fit in k and
// the queries' scores at stride os fit in out; it reports whether there is
// anything to score.
func checkQueries(name string, rb int, k []byte, stride int, q []float32, hd int, out []float32, os, n int) bool {
	if hd <= 0 || len(q)%hd != 0 {
		panic(fmt.Sprintf("kernels: %s: %d query values are not whole queries of %d", name, len(q), hd))
	}
	nq := len(q) / hd
	if n < 0 || nq > 0 && n > 0 && (stride < rb || len(k) < (n-1)*stride+rb || os < n || len(out) < (nq-1)*os+n) {
		panic(fmt.Sprintf("kernels: %s: %d rows of %d bytes at stride %d in %d, %d queries' scores at stride %d in %d",
			name, n, rb, stride, len(k), nq, os, len(out)))
	}
	return nq > 0 && n > 0
}

// KeyGroup is how many positions of an f16 cache's head are stored keys in
// lanes: element d of the KeyGroup keys side by side (DotsF16Keys).
const KeyGroup = 8

// DotsF16Keys sets out[j·os+8t+l] to the score of query j (q[j·hd:(j+1)·hd])
// against key l of group t, for t < groups and l < 8: an f16 cache's keys
// stored in lanes, element d of the eight keys of group t at
// k[16·hd·t+16·d:], two bytes a key. Each score is one chain of fused
// multiply-adds, s = fma(q_j[d], key[d], s) for d = 0..hd-1 in order from
// s = 0, in float32: no horizontal sum, and the same bits on every tier,
// whatever else the call scores (keys in lanes, issue 17).
func DotsF16Keys(k []byte, groups int, q []float32, hd int, out []float32, os int) {
	if hd <= 0 || len(q)%hd != 0 {
		panic(fmt.Sprintf("kernels: DotsF16Keys: %d query values are not whole queries of %d", len(q), hd))
	}
	nq := len(q) / hd
	if nq == 0 || groups == 0 {
		return
	}
	if groups < 0 || len(k) < groups*16*hd || nq > 1 && os < 8*groups || len(out) < (nq-1)*os+8*groups {
		panic(fmt.Sprintf("kernels: DotsF16Keys: %d groups of keys of %d in %d bytes, %d queries' scores at stride %d in %d",
			groups, hd, len(k), nq, os, len(out)))
	}
	kern.dotsF16Keys(k, groups, q, hd, out, os)
}

// dotsF16KeysGeneric is each score's chain, a fused multiply-add as
// float64's (exact product, one rounding of the sum) rounded to float32:
// the float32 fused multiply-add's result unless the float64 sum falls
// exactly on a float32 tie it did not start on (TestDotsF16Keys compares
// the tiers bit for bit).
func dotsF16KeysGeneric(k []byte, groups int, q []float32, hd int, out []float32, os int) {
	for j := range len(q) / hd {
		qj := q[j*hd : (j+1)*hd]
		for t := range groups {
			g := k[t*16*hd : (t+1)*16*hd]
			for l := range 8 {
				var s float32
				for d, x := range qj {
					h := uint16(g[16*d+2*l]) | uint16(g[16*d+2*l+1])<<8
					s = float32(math.FMA(float64(x), float64(F16ToF32(h)), float64(s)))
				}
				out[j*os+8*t+l] = s
			}
		}
	}
}
