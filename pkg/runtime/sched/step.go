package sched

import "github.com/corelm/corelm/pkg/runtime/model"

// batchBuilder chooses what one step computes. Its slices are reused from
// step to step.
type batchBuilder struct {
	batch   model.Batch
	seqs    []*seq // seqs[i] owns batch.Seqs[i]
	fill    []*seq // prefilling sequences of this step, in round-robin order
	give    []int  // prompt tokens granted to fill[i]
	cursor  int    // rotates which prefilling sequence is served first
	decode  int
	prefill int
	traced  bool
}

// build assembles the step: every decoding sequence with room in its event
// buffer adds its last token; the prefilling ones share the rest of the
// step's token budget, evenly, with the remainder going round-robin.
//
// A sequence that will sample in this step (decoding, or finishing its
// prompt) needs two free buffer slots: one for the token and one kept for
// the final event, so the loop never blocks on a slow reader. Without them
// it is paused: left out until its reader drains the buffer (Recv wakes the
// loop when it sees the pause flag, which is set before the check so the
// wake-up cannot be missed).
func (b *batchBuilder) build(active []*seq, budget int) {
	b.reset()
	var prefilling []*seq
	for _, q := range active {
		if q.done < len(q.feed) {
			prefilling = append(prefilling, q)
			continue
		}
		if !q.hasRoom() {
			continue
		}
		q.tok[0] = q.next
		b.add(q, q.tok[:], 1)
		b.decode++
	}
	budget -= b.decode
	if len(prefilling) == 0 || budget <= 0 {
		return
	}
	n := len(prefilling)
	b.cursor %= n
	b.fill = append(b.fill[:0], prefilling[b.cursor:]...)
	b.fill = append(b.fill, prefilling[:b.cursor]...)
	b.cursor++
	b.give = b.give[:0]
	share := max(budget/n, 1)
	for _, q := range b.fill {
		g := min(q.remaining(), share, budget)
		b.give = append(b.give, g)
		budget -= g
	}
	for i, q := range b.fill {
		if budget == 0 {
			break
		}
		more := min(q.remaining()-b.give[i], budget)
		b.give[i] += more
		budget -= more
	}
	for i, q := range b.fill {
		g := b.give[i]
		if g == q.remaining() && !q.hasRoom() {
			g-- // finish the prompt once the reader has caught up
		}
		if g <= 0 {
			continue
		}
		logits := 0
		if g == q.remaining() && q.gen == 0 && !q.req.embeds() {
			logits = 1
		}
		b.add(q, q.feed[q.done:q.done+g], logits)
		b.prefill += g
	}
}

func (b *batchBuilder) add(q *seq, toks []int32, logits int) {
	b.seqs = append(b.seqs, q)
	b.batch.Seqs = append(b.batch.Seqs, model.SeqBatch{State: q.state, Tokens: toks, Logits: logits, Out: q.out,
		Hidden: q.req.embeds(), HiddenOut: q.hidden})
	if q.req.TraceLayers {
		b.traced = true
	}
}

// reset forgets the last step, keeping the slices' memory.
func (b *batchBuilder) reset() {
	clear(b.seqs)
	b.seqs = b.seqs[:0]
	clear(b.batch.Seqs)
	b.batch.Seqs = b.batch.Seqs[:0]
	clear(b.fill)
	b.decode, b.prefill, b.traced = 0, 0, false
}

func (q *seq) remaining() int { return len(q.feed) - q.done }

// hasRoom reports whether q's buffer can take a token and still keep a slot
// for the final event; when not, q is marked paused.
func (q *seq) hasRoom() bool {
	q.paused.Store(true)
	if cap(q.events)-len(q.events) >= 2 {
		q.paused.Store(false)
		return true
	}
	return false
}
