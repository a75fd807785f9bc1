//go:build !purego

package kernels

import "sync"

// headsKernel is the assembly of a value kernel for a fixed number of
// heads: o[h·hd+j] = fma(w[h·ws+i], v_i[j], o[h·hd+j]) over the n rows.
type headsKernel func(w *float32, ws int, n int, v *byte, stride int, o *float32, hd int)

// byFour runs the heads four at a time through ks[G-1], the kernel of G
// heads; rb is the bytes of a row's hd values, hd a multiple of 64 (every
// kernel's step).
func byFour(ks *[4]headsKernel, w []float32, ws, n int, v []byte, stride, rb int, o []float32, hd int) {
	g := len(o) / hd
	_ = v[(n-1)*stride+rb-1]
	_ = w[(g-1)*ws+n-1]
	for h := 0; h < g; h += 4 {
		ks[min(4, g-h)-1](&w[h*ws], ws, n, &v[0], stride, &o[h*hd], hd)
	}
}

// The AVX2 tier's one-head kernels as headsKernels.
func axpysF16Heads1AVX2Asm(w *float32, _ int, n int, v *byte, stride int, o *float32, hd int) {
	axpysF16AVX2Asm(w, v, stride, n, o, hd)
}

func axpysQ8Heads1AVX2Asm(w *float32, _ int, n int, v *byte, stride int, o *float32, hd int) {
	axpysQ8AVX2Asm(w, v, stride, n, o, hd)
}

var (
	axpysF16HeadsAVX2Asm   = [4]headsKernel{axpysF16Heads1AVX2Asm, axpysF16Heads2AVX2Asm, axpysF16Heads3AVX2Asm, axpysF16Heads4AVX2Asm}
	axpysQ8HeadsAVX2Asm    = [4]headsKernel{axpysQ8Heads1AVX2Asm, axpysQ8Heads2AVX2Asm, axpysQ8Heads3AVX2Asm, axpysQ8Heads4AVX2Asm}
	axpysF16HeadsAVX512Asm = [4]headsKernel{axpysF16Heads1AVX512Asm, axpysF16Heads2AVX512Asm, axpysF16Heads3AVX512Asm, axpysF16Heads4AVX512Asm}
	axpysQ8HeadsAVX512Asm  = [4]headsKernel{axpysQ8Heads1AVX512Asm, axpysQ8Heads2AVX512Asm, axpysQ8Heads3AVX512Asm, axpysQ8Heads4AVX512Asm}
)

// axpysF16HeadsAVX2 takes the heads four at a time (twelve of the sixteen
// registers hold 48 columns of two heads' outputs, 32 of three, 24 of
// four); heads not a multiple of 64 wide go head by head through
// axpysF16AVX2.
func axpysF16HeadsAVX2(w []float32, ws, n int, v []byte, stride int, o []float32, hd int) {
	if hd%64 != 0 {
		for h := range len(o) / hd {
			axpysF16AVX2(w[h*ws:h*ws+n], v, stride, o[h*hd:(h+1)*hd])
		}
		return
	}
	byFour(&axpysF16HeadsAVX2Asm, w, ws, n, v, stride, 2*hd, o, hd)
}

// axpysF16HeadsAVX512 is axpysF16HeadsAVX2 with 64 columns of four heads
// in thirty-two registers.
func axpysF16HeadsAVX512(w []float32, ws, n int, v []byte, stride int, o []float32, hd int) {
	if hd%64 != 0 {
		axpysF16HeadsAVX2(w, ws, n, v, stride, o, hd)
		return
	}
	byFour(&axpysF16HeadsAVX512Asm, w, ws, n, v, stride, 2*hd, o, hd)
}

// axpysQ8HeadsAVX2 and axpysQ8HeadsAVX512 take the heads four at a time;
// heads not a multiple of 64 wide go through the reference.
func axpysQ8HeadsAVX2(w []float32, ws, n int, v []byte, stride int, o []float32, hd int) {
	if hd%64 != 0 {
		axpysQ8HeadsGeneric(w, ws, n, v, stride, o, hd)
		return
	}
	byFour(&axpysQ8HeadsAVX2Asm, w, ws, n, v, stride, hd/32*34, o, hd)
}

func axpysQ8HeadsAVX512(w []float32, ws, n int, v []byte, stride int, o []float32, hd int) {
	if hd%64 != 0 {
		axpysQ8HeadsGeneric(w, ws, n, v, stride, o, hd)
		return
	}
	byFour(&axpysQ8HeadsAVX512Asm, w, ws, n, v, stride, hd/32*34, o, hd)
}

// dotsQ8AVX512 runs the rows through the assembly sixteen at a time, the
// last fewer than sixteen copied into a block of their own: a row's score
// must not depend on where in a call it falls (a cache's runs break at
// other places in a ring than in a flat cache, and chunked prefill must
// equal one batch), and every row of a block gets the same arithmetic.
// Heads wider than 256 go through the reference.
func dotsQ8AVX512(k []byte, stride int, q, out []float32) {
	hd := len(q)
	if len(out) == 0 || hd == 0 || hd > 256 {
		dotsQ8Generic(k, stride, q, out)
		return
	}
	rb := hd / 32 * 34
	nb := len(out) &^ 15
	if nb > 0 {
		_ = k[(nb-1)*stride+rb-1]
		dotsQ8AVX512Asm(&k[0], stride, &q[0], hd, nb, &out[0])
	}
	if nb == len(out) {
		return
	}
	var tail [16 * 8 * 34]byte
	var sums [16]float32
	for i := range len(out) - nb {
		copy(tail[i*rb:(i+1)*rb], k[(nb+i)*stride:(nb+i)*stride+rb])
	}
	dotsQ8AVX512Asm(&tail[0], rb, &q[0], hd, 16, &sums[0])
	copy(out[nb:], sums[:])
}

// queriesKernel is the assembly of a score kernel for a fixed number of
// queries: out[j·os+i] for the n rows at k, stride apart.
type queriesKernel func(k *byte, stride int, q *float32, hd int, n int, out *float32, os int)

var (
	dotsQ8QsAVX2Asm = [3]queriesKernel{dotsQ8Q2AVX2Asm, dotsQ8Q3AVX2Asm, dotsQ8Q4AVX2Asm}
)

// queriesAVX2 runs the queries through ks[Q-2], the kernel of Q queries,
// four at a time and the last two or three together, and a last one
// through one; the n rows of rb bytes at stride and the scores at stride
// os were checked by checkQueries.
func queriesAVX2(ks *[3]queriesKernel, one func(k []byte, stride int, q, out []float32),
	rb int, k []byte, stride int, q []float32, hd int, out []float32, os, n int) {
	nq := len(q) / hd
	_ = k[(n-1)*stride+rb-1]
	_ = out[(nq-1)*os+n-1]
	j := 0
	for ; nq-j > 1; j += 4 {
		ks[min(4, nq-j)-2](&k[0], stride, &q[j*hd], hd, n, &out[j*os], os)
	}
	if j < nq {
		one(k, stride, q[j*hd:], out[j*os:j*os+n])
	}
}

var (
	dotsQ8QsAVX512Asm = [3]queriesKernel{dotsQ8Q2AVX512Asm, dotsQ8Q3AVX512Asm, dotsQ8Q4AVX512Asm}
)

// dotsQ8QueriesAVX512 scores the queries four at a time and the last two
// or three together (dotsQ8QsAVX512Asm), a last one through dotsQ8AVX512:
// the same arithmetic for every score. Heads wider than 256 go query by
// query (dotsQ8AVX512 sends them to the reference).
func dotsQ8QueriesAVX512(k []byte, stride int, q []float32, hd int, out []float32, os, n int) {
	if hd > 256 {
		queryByQuery(dotsQ8AVX512, k, stride, q, hd, out, os, n)
		return
	}
	queriesAVX512(&dotsQ8QsAVX512Asm, dotsQ8AVX512, hd/32*34, k, stride, q, hd, out, os, n)
}

// qsRowsAVX512 is the rows the Q-query AVX-512 kernels take at a time
// (internal/asmgen's qsRows): eight for two queries, four for three or
// four.
func qsRowsAVX512(Q int) int {
	if Q == 2 {
		return 8
	}
	return 4
}

// queriesAVX512 runs the queries through ks[Q-2], the kernel of Q queries,
// four at a time and the last two or three together, and a last one
// through one; the n rows of rb bytes (at most 512) at stride and the
// scores at stride os were checked by checkQueries. A kernel takes whole
// blocks of qsRowsAVX512(Q) rows; the last fewer are copied into a block
// of their own, which gets the same arithmetic, as the one-query kernel's
// last rows do.
func queriesAVX512(ks *[3]queriesKernel, one func(k []byte, stride int, q, out []float32),
	rb int, k []byte, stride int, q []float32, hd int, out []float32, os, n int) {
	nq := len(q) / hd
	_ = k[(n-1)*stride+rb-1]
	_ = out[(nq-1)*os+n-1]
	for j := 0; j < nq; {
		Q := min(4, nq-j)
		if Q == 1 {
			one(k, stride, q[j*hd:(j+1)*hd], out[j*os:j*os+n])
			return
		}
		R := qsRowsAVX512(Q)
		nb := n &^ (R - 1)
		if nb > 0 {
			ks[Q-2](&k[0], stride, &q[j*hd], hd, nb, &out[j*os], os)
		}
		if nb < n {
			t := qsTails.Get().(*qsTail)
			for i := range n - nb {
				copy(t.rows[i*rb:(i+1)*rb], k[(nb+i)*stride:(nb+i)*stride+rb])
			}
			ks[Q-2](&t.rows[0], rb, &q[j*hd], hd, R, &t.sums[0], R)
			for jj := range Q {
				copy(out[(j+jj)*os+nb:(j+jj)*os+n], t.sums[jj*R:])
			}
			qsTails.Put(t)
		}
		j += Q
	}
}

// qsTail is queriesAVX512's block for the last rows. It comes from a pool:
// on the stack it would escape through the kernel's function value, and a
// 4 KiB allocation per call made the garbage collector's heap target, and
// so a server's resident memory, grow by the size of the KV cache.
type qsTail struct {
	rows [8 * 512]byte
	sums [16]float32
}

var qsTails = sync.Pool{New: func() any { return new(qsTail) }}

// dotsQ8AVX2 checks that the last row is in bounds; DotsQ8_0 checked the
// arguments.
func dotsQ8AVX2(k []byte, stride int, q, out []float32) {
	if len(out) == 0 || len(q) == 0 {
		return
	}
	_ = k[(len(out)-1)*stride+len(q)/32*34-1]
	dotsQ8AVX2Asm(&k[0], stride, &q[0], len(q), len(out), &out[0])
}

// dotsQ8QueriesAVX2 scores the queries four at a time (dotsQ8Q4AVX2Asm),
// the last two or three together, a last one through dotsQ8AVX2: each
// score the one-query kernel's bits (DotsQ8_0Queries checked that
// hd % 32 == 0).
func dotsQ8QueriesAVX2(k []byte, stride int, q []float32, hd int, out []float32, os, n int) {
	queriesAVX2(&dotsQ8QsAVX2Asm, dotsQ8AVX2, hd/32*34, k, stride, q, hd, out, os, n)
}

// keysKernel is the assembly of a keys-in-lanes score kernel for a fixed
// number of queries and of groups a step.
type keysKernel func(k *byte, groups int, q *float32, hd int, out *float32, os int)

// dotsF16KeysAVX2Asm is the kernels of Q queries: [Q-1][0] takes
// keysGroupsAVX2[Q-1] groups a step, [Q-1][1] one.
var (
	dotsF16KeysAVX2Asm = [4][2]keysKernel{
		{dotsF16KeysQ1T8AVX2Asm, dotsF16KeysQ1T1AVX2Asm},
		{dotsF16KeysQ2T4AVX2Asm, dotsF16KeysQ2T1AVX2Asm},
		{dotsF16KeysQ3T3AVX2Asm, dotsF16KeysQ3T1AVX2Asm},
		{dotsF16KeysQ4T2AVX2Asm, dotsF16KeysQ4T1AVX2Asm},
	}
	keysGroupsAVX2 = [4]int{8, 4, 3, 2} // internal/asmgen's keysT
)

// dotsF16KeysAVX2 scores the queries four at a time, the last one to
// three together, each set over the groups keysGroupsAVX2 at a time and
// the rest one by one; every score is the same chain (DotsF16Keys checked
// the bounds).
func dotsF16KeysAVX2(k []byte, groups int, q []float32, hd int, out []float32, os int) {
	nq := len(q) / hd
	_ = k[groups*16*hd-1]
	_ = out[(nq-1)*os+8*groups-1]
	for j := 0; j < nq; j += 4 {
		Q := min(4, nq-j)
		ks, T := &dotsF16KeysAVX2Asm[Q-1], keysGroupsAVX2[Q-1]
		nb := groups / T * T
		if nb > 0 {
			ks[0](&k[0], nb, &q[j*hd], hd, &out[j*os], os)
		}
		if nb < groups {
			ks[1](&k[nb*16*hd], groups-nb, &q[j*hd], hd, &out[j*os+8*nb], os)
		}
	}
}
