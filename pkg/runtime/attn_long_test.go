package runtime_test

import (
	"testing"

	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// TestLongContextChunkedMatchesOneBatch: past kvcache.RangeLen positions a
// token's attention is computed in ranges, merged — within one task in a
// step of many rows, split over the threads in a decode step of a model
// with few KV heads (the golden models have two). How a token's attention
// is split must depend on its position only, so 640 tokens in one batch
// and 512 then one at a time agree as closely as TestChunkedMatchesOneBatch
// asks.
func TestLongContextChunkedMatchesOneBatch(t *testing.T) {
	const n, first = 640, 512
	if n <= kvcache.RangeLen {
		t.Fatalf("%d tokens never reach a second range of %d positions", n, kvcache.RangeLen)
	}
	for _, c := range goldenF32(t) {
		t.Run(c.arch, func(t *testing.T) {
			m := c.l.Model
			ids := make([]int32, n)
			for i := range ids {
				ids[i] = c.ids[i%len(c.ids)]
			}
			opts := model.StateOptions{Context: n + 32, Chunk: n}
			one := evalSteps(t, m, ids, opts, n)
			chunked := evalSteps(t, m, ids, opts, first, 1)
			nrmse, _, _ := compare(chunked, one, m.Config().Vocab, 0)
			t.Logf("NRMSE %d then one at a time vs one batch of %d: %.3e", first, n, nrmse)
			if nrmse > 1e-6 {
				t.Errorf("%d then one token at a time differ from one batch of %d: NRMSE %.3e", first, n, nrmse)
			}
		})
	}
}

// evalSteps evaluates ids in steps of the given sizes, the last repeated,
// and returns the logits of every position.
func evalSteps(t *testing.T, m model.Model, ids []int32, opts model.StateOptions, steps ...int) []float32 {
	t.Helper()
	st, err := m.NewState(opts)
	if err != nil {
		t.Fatal(err)
	}
	var out []float32
	b := &model.Batch{Seqs: []model.SeqBatch{{State: st}}}
	for i, k := 0, 0; i < len(ids); k = min(k+1, len(steps)-1) {
		toks := ids[i:min(i+steps[k], len(ids))]
		b.Seqs[0].Tokens, b.Seqs[0].Logits = toks, len(toks)
		if err := m.Forward(b); err != nil {
			t.Fatal(err)
		}
		out = append(out, b.Seqs[0].Out...)
		i += len(toks)
	}
	return out
}
