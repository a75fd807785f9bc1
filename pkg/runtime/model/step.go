package model

import (
	"fmt"
	"sync"
	"time"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
)

// Step is the plumbing every architecture's forward pass shares around its
// own layers: checking the batch, numbering its rows, timing the layers and
// handing each sequence its logits. It lives in a Pass, reused from step to
// step.
type Step struct {
	Pos []int // position of each row of the batch
	Seq []int // index in Batch.Seqs of each row
	// Context is the context the batch's sequences are served at
	// (State.Context): one for the whole batch.
	Context int

	last      []float32   // (rows needing logits, dim)
	logits    []float32   // (rows needing logits, vocab)
	scratches sync.Pool   // *kvcache.Scratch, one per attention worker
	blocks    []attnBlock // Attend's blocks of rows (tiled prefill)
	tasks     []attnTask  // Attend's tasks when ranges are split over threads
	parts     []float32   // their partial states (kvcache.PartLen each)
	nparts    int
}

// Grow returns s resized to n, reallocating only when it is too small.
func Grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

// Begin checks b (room in every sequence, token ids inside the vocabulary,
// one served context) and numbers its rows: all sequences' tokens back to
// back. It returns the row count.
func (st *Step) Begin(b *Batch, vocab int) (int, error) {
	n := 0
	st.Context = 0
	for i := range b.Seqs {
		s := &b.Seqs[i]
		if err := s.State.CheckRoom(len(s.Tokens)); err != nil {
			return 0, err
		}
		if err := s.State.Cache.Prepare(s.State.Pos, len(s.Tokens)); err != nil {
			return 0, err
		}
		if st.Context == 0 {
			st.Context = s.State.Context
		} else if s.State.Context != st.Context {
			return 0, fmt.Errorf("model: one batch holds sequences served at contexts %d and %d", st.Context, s.State.Context)
		}
		for _, tok := range s.Tokens {
			if tok < 0 || int(tok) >= vocab {
				return 0, Invalidf("token id %d outside the vocabulary (0..%d)", tok, vocab-1)
			}
		}
		n += len(s.Tokens)
	}
	if cap(st.Pos) < n {
		st.Pos, st.Seq = make([]int, n), make([]int, n)
	}
	st.Pos, st.Seq = st.Pos[:n], st.Seq[:n]
	row := 0
	for si := range b.Seqs {
		s := &b.Seqs[si]
		for j := range s.Tokens {
			st.Pos[row], st.Seq[row] = s.State.Pos+j, si
			row++
		}
	}
	if b.Trace != nil {
		b.Trace.Start = time.Now()
		b.Trace.Layers = b.Trace.Layers[:0]
	}
	return n, nil
}

// Embed writes the embedding of every row's token into x (rows of
// emb.Cols).
func (st *Step) Embed(b *Batch, emb *Matrix, x []float32) {
	dim, row := emb.Cols, 0
	for si := range b.Seqs {
		for _, tok := range b.Seqs[si].Tokens {
			emb.Row(int(tok), x[row*dim:(row+1)*dim])
			row++
		}
	}
}

// Layers runs the two halves of each of the layers, timing them when the
// batch asks for a trace (a clock read per half: cheap enough to leave on).
func (st *Step) Layers(b *Batch, layers int, attention, ffn func(l int)) {
	for l := 0; l < layers; l++ {
		if b.Trace == nil {
			attention(l)
			ffn(l)
			continue
		}
		t0 := time.Now()
		attention(l)
		t1 := time.Now()
		ffn(l)
		b.Trace.Layers = append(b.Trace.Layers, LayerTiming{Attention: t1.Sub(t0), FFN: time.Since(t1)})
	}
}

// Attend runs causal attention of layer l for every row of the step and
// every query head, split over the pool: q holds the rows' query heads
// (heads×headDim each, already rotated), out receives the heads' outputs.
// Each row attends over its own sequence's KV cache.
//
// A task is a block of consecutive rows of a sequence with the query heads
// of one KV head, so each key and value row is read once per block and
// group (kvcache.AttendBlock; blocks shrink, down to single rows, until
// there are at least four tasks per thread). When
// there are fewer such tasks than twice the threads (decode of a sequence
// of a model with few KV heads), a long context's ranges
// (kvcache.RangeLen positions) are tasks too, merged at the end. The
// result is the same either way: how a token's attention is split into
// ranges depends on its position only.
func (st *Step) Attend(pool *kernels.Pool, b *Batch, l, heads, headDim int, q, out []float32, p kvcache.AttnParams) {
	rows := len(st.Pos)
	if rows == 0 {
		return
	}
	qDim := heads * headDim
	kvHeads := b.Seqs[st.Seq[0]].State.Cache.Geometry().KVHeads
	g := heads / kvHeads
	gDim := g * headDim
	if rows*kvHeads >= 2*pool.Threads() {
		st.blocks = st.blocks[:0]
		for br := blockRows(g, rows); ; br = (br + 1) / 2 {
			st.splitBlocks(br)
			if br == 1 || len(st.blocks)*kvHeads >= 4*pool.Threads() {
				break
			}
		}
		pool.Run(len(st.blocks)*kvHeads, func(lo, hi int) {
			s := st.scratch()
			for task := lo; task < hi; task++ {
				bl, kvh := st.blocks[task/kvHeads], task%kvHeads
				off := bl.row*qDim + kvh*gDim
				c := b.Seqs[st.Seq[bl.row]].State.Cache
				if bl.rows == 1 {
					c.AttendGroup(l, st.Pos[bl.row], kvh, heads, q[off:off+gDim], p, out[off:off+gDim], s)
					continue
				}
				c.AttendBlock(l, st.Pos[bl.row], bl.rows, kvh, heads, q[off:], qDim, p, out[off:], qDim, s)
			}
			st.scratches.Put(s)
		})
		return
	}
	st.tasks, st.nparts = st.tasks[:0], 0
	for r := range rows {
		k := b.Seqs[st.Seq[r]].State.Cache.Ranges(l, st.Pos[r])
		for kvh := range kvHeads {
			for rg := range k {
				st.tasks = append(st.tasks, attnTask{row: r, kvh: kvh, rng: rg, ranges: k, part: st.nparts + rg})
			}
			if k > 1 {
				st.nparts += k
			}
		}
	}
	pl := kvcache.PartLen(g, headDim)
	st.parts = Grow(st.parts, st.nparts*pl)
	pool.Run(len(st.tasks), func(lo, hi int) {
		s := st.scratch()
		for _, t := range st.tasks[lo:hi] {
			off := t.row*qDim + t.kvh*gDim
			c := b.Seqs[st.Seq[t.row]].State.Cache
			if t.ranges == 1 {
				c.AttendGroup(l, st.Pos[t.row], t.kvh, heads, q[off:off+gDim], p, out[off:off+gDim], s)
				continue
			}
			c.AttendRange(l, st.Pos[t.row], t.kvh, heads, t.rng, q[off:off+gDim], p, st.parts[t.part*pl:(t.part+1)*pl], s)
		}
		st.scratches.Put(s)
	})
	for _, t := range st.tasks {
		if t.ranges > 1 && t.rng == 0 {
			off := t.row*qDim + t.kvh*gDim
			kvcache.MergeRanges(st.parts[t.part*pl:(t.part+t.ranges)*pl], t.ranges, g, headDim, out[off:off+gDim])
		}
	}
}

// blockQueries is how many query vectors (rows × query heads of a GQA
// group) a block of tiled prefill attention aims for: a 64-position tile
// of keys is then read from L1 by 64 queries, while the block's scores
// (at most kvcache.RangeLen per query) stay within L2.
const blockQueries = 64

// blockRows is the rows of a block of tiled attention for g query heads
// per KV head.
func blockRows(g, rows int) int {
	return max(1, min(rows, blockQueries/g))
}

// splitBlocks cuts the step's rows into blocks of at most br consecutive
// rows of one sequence (st.blocks).
func (st *Step) splitBlocks(br int) {
	st.blocks = st.blocks[:0]
	for r := 0; r < len(st.Pos); {
		n := 1
		for n < br && r+n < len(st.Pos) && st.Seq[r+n] == st.Seq[r] {
			n++
		}
		st.blocks = append(st.blocks, attnBlock{row: r, rows: n})
		r += n
	}
}

// attnBlock is rows consecutive rows of one sequence, from row on, that
// attend together (kvcache.AttendBlock).
type attnBlock struct{ row, rows int }

// attnTask is one range of one row's GQA group; part indexes its partial
// state in Step.parts when the row's attention has several ranges.
type attnTask struct {
	row, kvh, rng, ranges, part int
}

func (st *Step) scratch() *kvcache.Scratch {
	s, _ := st.scratches.Get().(*kvcache.Scratch)
	if s == nil {
		s = new(kvcache.Scratch)
	}
	return s
}

// Outputs computes what the batch asks for from the residual stream x
// (dim wide): the rows needing logits are normalised with norm and
// projected all at once with project (rows in, rows×vocab out), each
// sequence's share copied into its Out; a sequence asking for Hidden gets
// every row of its tokens normalised into HiddenOut.
func (st *Step) Outputs(b *Batch, x []float32, dim, vocab int, norm func(dst, src []float32), project func(in []float32, rows int, out []float32)) {
	want, row := 0, 0
	for i := range b.Seqs {
		s := &b.Seqs[i]
		want += min(s.Logits, len(s.Tokens))
		if s.Hidden {
			s.HiddenOut = Grow(s.HiddenOut, len(s.Tokens)*dim)
			for j := range s.Tokens {
				norm(s.HiddenOut[j*dim:(j+1)*dim], x[(row+j)*dim:(row+j+1)*dim])
			}
		}
		row += len(s.Tokens)
	}
	if want == 0 {
		return
	}
	st.last = Grow(st.last, want*dim)
	st.logits = Grow(st.logits, want*vocab)
	row, k := 0, 0
	for i := range b.Seqs {
		s := &b.Seqs[i]
		nl := min(s.Logits, len(s.Tokens))
		for j := len(s.Tokens) - nl; j < len(s.Tokens); j++ {
			norm(st.last[k*dim:(k+1)*dim], x[(row+j)*dim:(row+j+1)*dim])
			k++
		}
		row += len(s.Tokens)
	}
	project(st.last, want, st.logits)
	k = 0
	for i := range b.Seqs {
		s := &b.Seqs[i]
		nl := min(s.Logits, len(s.Tokens))
		s.Out = Grow(s.Out, nl*vocab)
		copy(s.Out, st.logits[k*vocab:(k+nl)*vocab])
		k += nl
	}
}

// End advances every sequence past the tokens of the step.
func (st *Step) End(b *Batch) {
	for i := range b.Seqs {
		b.Seqs[i].State.Pos += len(b.Seqs[i].Tokens)
	}
	if b.Trace != nil {
		b.Trace.Total = time.Since(b.Trace.Start)
	}
}
