package kernels

import (
	"fmt"
	"slices"
)

// Scratch is the per-caller state of MatMul: the activation rows re-encoded
// to the weight's vec-dot type and the work description handed to the pool.
// Keep one per goroutine that issues matmuls and reuse it: after the largest
// call it no longer allocates, which matters in decode, where a step is a few
// hundred small matmuls. The zero value is ready to use; a Scratch must not be
// shared by concurrent MatMul calls.
type Scratch struct {
	q   []byte
	job matmulJob
	// Bound once to &job so that handing them to Pool.Run allocates nothing.
	quantRows, dotRows, dotGroups func(lo, hi int)
	batch                         batch // MatMuls'
}

// matmulJob is one MatMul's operands; workers read it, nobody writes it while
// a Run is in flight.
type matmulJob struct {
	t, vt      DType
	r16        bool // weights in LayoutR16
	r16x       bool // activations encoded by quantQ8R16 (LayoutR16 Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
	r16f       bool // activations rounded by roundR16 (LayoutR16 F16, BF16)
	w          []byte
	wrb, xrb   int // bytes per weight row, per encoded activation row
	rows, cols int
	x          []float32
	n          int
	xq         []byte
	out        []float32
}

// MatMul computes out[j*rows+r] = dot(row r of w, x[j*cols:(j+1)*cols]) for
// the n activation rows of x (n×cols, row-major) and the rows×cols weight
// matrix w of type t (each row t.RowBytes(cols) bytes). Like llama.cpp it
// encodes each activation row once to VecDotType(t) (so F16 and BF16 weights
// see activations rounded to F16/BF16, F32 weights the activations as they
// are) and takes DotQ of every weight row with every encoded row. Weight rows
// are split over the pool; each worker streams its rows once, dotting each
// with all n activations while the row is in cache. s may be nil, at the cost
// of allocating. It panics on inconsistent sizes.
func MatMul(p *Pool, t DType, w []byte, rows, cols int, x []float32, n int, out []float32, s *Scratch) {
	MatMulLayout(p, t, LayoutRows, w, rows, cols, x, n, out, s)
}

// MatMulLayout is MatMul for a weight matrix in layout l. In LayoutR16 the
// pool's unit of work is a group of 16 rows; the results equal dotR16Generic's,
// which differ from LayoutRows' in the float order only (Q4_0, Q5_0 and
// Q8_0 weights see the same Q8_0 activations, re-encoded with their block
// sums; Q4_1 and Q5_1 weights the same Q8_1 ones; F16 and BF16 weights the same
// rounded activations, as float32).
func MatMulLayout(p *Pool, t DType, l Layout, w []byte, rows, cols int, x []float32, n int, out []float32, s *Scratch) {
	j := newMatmulJob(Product{T: t, L: l, W: w, Rows: rows, Cols: cols, X: x, N: n, Out: out})
	if rows == 0 || n == 0 {
		return
	}
	if s == nil {
		s = new(Scratch)
	}
	if s.dotRows == nil {
		s.quantRows, s.dotRows, s.dotGroups = s.job.quantRows, s.job.dotRows, s.job.dotGroups
	}
	if cap(s.q) < n*j.xrb {
		s.q = make([]byte, n*j.xrb)
	}
	j.xq = s.q[:n*j.xrb]
	s.job = j
	defer func() { s.job = matmulJob{} }() // do not pin the caller's buffers
	if t != F32 {
		if n > 1 {
			p.Run(n, s.quantRows)
		} else {
			s.job.quantRows(0, 1)
		}
	}
	if j.r16 {
		p.Run(rows/R16, s.dotGroups)
		return
	}
	p.Run(rows, s.dotRows)
}

// Product is one matrix product of a batch MatMuls runs: Out (N×Rows) =
// X (N×Cols) times the Rows×Cols matrix W of type T in layout L, as
// MatMulLayout computes it.
type Product struct {
	T          DType
	L          Layout
	W          []byte
	Rows, Cols int
	X          []float32
	N          int
	Out        []float32
}

// MatMuls computes every product of ps, with the same results as one
// MatMulLayout call each, but in two pool passes for the whole batch
// instead of two per product: one encodes the activations (once for
// products that share the same X and encoding, such as a feed-forward's
// gate and up), one walks every product's weight rows. A step of a
// mixture of experts is a few dozen small products, and on two cores the
// pool's barriers between them cost as much as the products themselves.
// It panics on inconsistent sizes.
func MatMuls(p *Pool, ps []Product, s *Scratch) {
	if s == nil {
		s = new(Scratch)
	}
	b := &s.batch
	if b.quant == nil {
		b.quant, b.dot = b.quantRows, b.dotUnits
	}
	defer b.reset() // do not pin the caller's buffers
	nq := 0         // bytes of encoded activations
	for i := range ps {
		j := newMatmulJob(ps[i])
		if j.rows == 0 || j.n == 0 {
			continue
		}
		k, by := len(b.jobs), -1
		if j.t != F32 {
			by = k
			for _, e := range b.enc {
				if sameEncoding(&b.jobs[e], &j) {
					by = e
					break
				}
			}
			if by == k {
				b.enc = append(b.enc, k)
				b.encRows += j.n
				b.encEnd = append(b.encEnd, b.encRows)
				nq += j.n * j.xrb
			}
		}
		b.jobs, b.encBy = append(b.jobs, j), append(b.encBy, by)
		b.units += j.units()
		b.unitEnd = append(b.unitEnd, b.units)
	}
	if cap(s.q) < nq {
		s.q = make([]byte, nq)
	}
	off := 0
	for _, e := range b.enc {
		j := &b.jobs[e]
		j.xq = s.q[off : off+j.n*j.xrb]
		off += j.n * j.xrb
	}
	for k, e := range b.encBy {
		if e >= 0 {
			b.jobs[k].xq = b.jobs[e].xq
		}
	}
	if b.encRows > 1 {
		p.Run(b.encRows, b.quant)
	} else if b.encRows == 1 {
		b.quantRows(0, 1)
	}
	p.Run(b.units, b.dot)
}

// sameEncoding says whether b's activations, encoded, are a's: the same
// rows of the same floats to the same vec-dot encoding.
func sameEncoding(a, b *matmulJob) bool {
	return a.n == b.n && a.cols == b.cols && a.vt == b.vt && a.r16x == b.r16x && a.r16f == b.r16f &&
		len(a.x) > 0 && &a.x[0] == &b.x[0]
}

// batch is the state of one MatMuls call.
type batch struct {
	jobs    []matmulJob
	unitEnd []int // unitEnd[i]: end of jobs[i]'s units in the batch's unit space
	units   int
	encBy   []int // encBy[i]: the job whose encoded activations jobs[i] takes (-1: F32, none)
	enc     []int // the jobs whose activations the batch encodes
	encEnd  []int // encEnd[i]: end of enc[i]'s rows in the encoding pass's space
	encRows int
	// Bound once to the batch so that handing them to Pool.Run allocates
	// nothing.
	quant, dot func(lo, hi int)
}

func (b *batch) reset() {
	clear(b.jobs)
	b.jobs, b.unitEnd, b.encBy = b.jobs[:0], b.unitEnd[:0], b.encBy[:0]
	b.enc, b.encEnd = b.enc[:0], b.encEnd[:0]
	b.units, b.encRows = 0, 0
}

// quantRows encodes rows lo..hi-1 of the encoding pass: the activation rows
// of b.enc's jobs, one after the other.
func (b *batch) quantRows(lo, hi int) {
	i, _ := slices.BinarySearch(b.encEnd, lo+1)
	for lo < hi {
		j := &b.jobs[b.enc[i]]
		start := b.encEnd[i] - j.n
		end := min(hi, b.encEnd[i])
		j.quantRows(lo-start, end-start)
		lo = end
		i++
	}
}

// dotUnits computes units lo..hi-1 of the batch: row groups (LayoutR16) or
// rows of each job in turn.
func (b *batch) dotUnits(lo, hi int) {
	i, _ := slices.BinarySearch(b.unitEnd, lo+1)
	for lo < hi {
		j := &b.jobs[i]
		start := b.unitEnd[i] - j.units()
		end := min(hi, b.unitEnd[i])
		if j.r16 {
			j.dotGroups(lo-start, end-start)
		} else {
			j.dotRows(lo-start, end-start)
		}
		lo = end
		i++
	}
}

// units is the number of the job's units of work: 16-row groups in
// LayoutR16, else rows.
func (j *matmulJob) units() int {
	if j.r16 {
		return j.rows / R16
	}
	return j.rows
}

// newMatmulJob checks pr's sizes (it panics on inconsistent ones) and
// returns its job, without encoded activations.
func newMatmulJob(pr Product) matmulJob {
	t, l, rows, cols, n := pr.T, pr.L, pr.Rows, pr.Cols, pr.N
	size, ok := LayoutBytes(t, l, rows, cols)
	if !ok || !Supported(t) || t == Q8_1 || t == Q8_K {
		panic(fmt.Sprintf("kernels: MatMul: cannot multiply %v with %d columns in layout %v", t, cols, l))
	}
	if rows < 0 || n < 0 || len(pr.W) != size || len(pr.X) != n*cols || len(pr.Out) != n*rows {
		panic(fmt.Sprintf("kernels: MatMul: %v %dx%d weights (%d bytes), %d activations (%d floats), out %d",
			t, rows, cols, len(pr.W), n, len(pr.X), len(pr.Out)))
	}
	wrb, _ := t.RowBytes(cols)
	vt := VecDotType(t)
	xrb, _ := vt.RowBytes(cols)
	r16x := l == LayoutR16 && r16Legacy(t)
	r16f := l == LayoutR16 && r16Half(t)
	switch {
	case r16x:
		xrb = cols / qk * q8R16Bytes
	case r16f:
		xrb = cols / 32 * r16HalfXBlock
	}
	return matmulJob{t: t, vt: vt, r16: l == LayoutR16, r16x: r16x, r16f: r16f, w: pr.W, wrb: wrb, xrb: xrb, rows: rows, cols: cols, x: pr.X, n: n, out: pr.Out}
}

// dotGroups computes the LayoutR16 groups lo..hi-1: each group's weights
// (16 rows × cols) stay in cache while all n activation rows pass.
func (j *matmulJob) dotGroups(lo, hi int) {
	f := kern.r16[j.t]
	bc, gbb := r16Block(j.t)
	nb := j.cols / bc
	gb := nb * gbb
	for g := lo; g < hi; g++ {
		f(j.w[g*gb:(g+1)*gb], nb, j.xq, j.xrb, j.n, j.out[g*R16:], j.rows)
	}
}

func (j *matmulJob) quantRows(lo, hi int) {
	for k := lo; k < hi; k++ {
		if j.r16x {
			quantQ8R16(j.t, j.x[k*j.cols:(k+1)*j.cols], j.xq[k*j.xrb:(k+1)*j.xrb])
			continue
		}
		if j.r16f {
			roundR16(j.t, j.x[k*j.cols:(k+1)*j.cols], j.xq[k*j.xrb:(k+1)*j.xrb])
			continue
		}
		Quantize(j.vt, j.x[k*j.cols:(k+1)*j.cols], j.xq[k*j.xrb:(k+1)*j.xrb])
	}
}

func (j *matmulJob) dotRows(lo, hi int) {
	k := kern
	if j.t == F32 {
		j.dotRowsF32(lo, hi)
		return
	}
	if rows := k.rows[j.t]; rows.n > 0 && j.n >= rows.n {
		j.dotRowsMulti(lo, hi, rows.f, rows.n)
		return
	}
	if cols := k.cols[j.t]; cols.n > 0 {
		// Decode (few activation rows): cols.n weight rows per call share
		// each activation block; the tail rows go one by one below.
		C := cols.n
		for ; lo+C <= hi; lo += C {
			w := j.w[lo*j.wrb : (lo+C)*j.wrb]
			for i := range j.n {
				cols.f(w, j.wrb, j.xq[i*j.xrb:(i+1)*j.xrb], j.out[i*j.rows+lo:i*j.rows+lo+C])
			}
		}
	}
	for r := lo; r < hi; r++ {
		wr := j.w[r*j.wrb : (r+1)*j.wrb]
		for k := range j.n {
			j.out[k*j.rows+r] = dotQ(j.t, wr, j.xq[k*j.xrb:(k+1)*j.xrb])
		}
	}
}

// dotRowsF32 is dotRows of F32 weights, whose activations are their own
// encoding: the kernels read j.x, not a copy. Where the tier has a cols
// kernel, its C rows stay in cache while the n activation rows pass, R at
// a time through the tile kernel where it has one.
func (j *matmulJob) dotRowsF32(lo, hi int) {
	k := kern
	if cols := k.colsF32; cols.n > 0 {
		C, tile := cols.n, k.tileF32
		for ; lo+C <= hi; lo += C {
			w := j.w[lo*j.wrb : (lo+C)*j.wrb]
			i := 0
			for ; tile.r > 0 && i+tile.r <= j.n; i += tile.r {
				tile.f(w, j.wrb, j.x[i*j.cols:(i+tile.r)*j.cols], j.cols, j.out[i*j.rows+lo:], j.rows)
			}
			for ; i < j.n; i++ {
				cols.f(w, j.wrb, j.x[i*j.cols:(i+1)*j.cols], j.out[i*j.rows+lo:i*j.rows+lo+C])
			}
		}
	}
	for r := lo; r < hi; r++ {
		wr := j.w[r*j.wrb : (r+1)*j.wrb]
		for i := range j.n {
			j.out[i*j.rows+r] = k.f32F32(wr, j.x[i*j.cols:(i+1)*j.cols])
		}
	}
}

// mmTileRows is the number of weight rows that share one group of R
// activation rows in dotRowsMulti: a tile of Q4_K rows of 4096 columns is
// 37 KB, so it stays in L2 while the group (R·cols/256·292 bytes) is reused
// across it from L1/L2.
const mmTileRows = 16

// dotRowsMulti is dotRows with a kernel that takes R activation rows at
// once, so each weight block is decoded once per R tokens. The weight rows
// are walked in tiles of mmTileRows: each tile streams from memory once,
// and each activation group is read once per tile rather than once per row.
func (j *matmulJob) dotRowsMulti(lo, hi int, rows func(w, xq []byte, xrb int, out []float32, ostride int), R int) {
	nr := j.n - j.n%R
	for t0 := lo; t0 < hi; t0 += mmTileRows {
		t1 := min(t0+mmTileRows, hi)
		for k := 0; k < nr; k += R {
			xq := j.xq[k*j.xrb : (k+R)*j.xrb]
			for r := t0; r < t1; r++ {
				rows(j.w[r*j.wrb:(r+1)*j.wrb], xq, j.xrb, j.out[k*j.rows+r:], j.rows)
			}
		}
		for k := nr; k < j.n; k++ {
			xq := j.xq[k*j.xrb : (k+1)*j.xrb]
			for r := t0; r < t1; r++ {
				j.out[k*j.rows+r] = dotQ(j.t, j.w[r*j.wrb:(r+1)*j.wrb], xq)
			}
		}
	}
}
