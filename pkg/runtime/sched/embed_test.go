package sched

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/corelm/corelm/internal/leakcheck"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// hiddenStates runs prompt through m in one forward step and returns the
// last hidden state of every token.
func hiddenStates(t *testing.T, m model.Model, prompt []int32) [][]float32 {
	t.Helper()
	st, err := m.NewState(model.StateOptions{Context: len(prompt), Pool: kvcache.NewPool(kvcache.PoolConfig{})})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Cache.Release(nil, false)
	b := model.Batch{Seqs: []model.SeqBatch{{State: st, Tokens: prompt, Hidden: true}}}
	if err := m.Forward(&b); err != nil {
		t.Fatal(err)
	}
	dim := m.Config().Dim
	out := b.Seqs[0].HiddenOut
	if len(out) != len(prompt)*dim {
		t.Fatalf("HiddenOut has %d floats, want %d", len(out), len(prompt)*dim)
	}
	rows := make([][]float32, len(prompt))
	for i := range rows {
		rows[i] = out[i*dim : (i+1)*dim]
	}
	return rows
}

// TestEmbeddingPooling checks each pooling against the hidden states of one
// forward step over the whole input, while the scheduler reads it in
// chunks of 16 beside a generation whose tokens must not change.
func TestEmbeddingPooling(t *testing.T) {
	leakcheck.Check(t)
	m := loadStories(t, 2)
	prompt := storiesRequests(3)[2].Prompt // 62 tokens: four chunks
	rows := hiddenStates(t, m, prompt)
	dim := len(rows[0])
	mean := make([]float32, dim)
	for i := range mean {
		var sum float64
		for _, r := range rows {
			sum += float64(r[i])
		}
		mean[i] = float32(sum / float64(len(rows)))
	}
	want := map[model.Pooling][]float32{model.PoolMean: mean, model.PoolCLS: rows[0], model.PoolLast: rows[len(rows)-1]}

	gen := storiesRequests(2)[0]
	alone := solo(t, m, gen)
	s := New(m, Config{MaxSeqs: 4, StepTokens: 16})
	defer shutdown(t, s)
	var wg sync.WaitGroup
	var together []int32
	wg.Go(func() { together, _ = collect(t, s, gen) })
	for _, p := range []model.Pooling{model.PoolMean, model.PoolCLS, model.PoolLast} {
		toks, f := collect(t, s, Request{Prompt: prompt, Pooling: p})
		if len(toks) != 0 || f.Reason != FinishStop || f.Usage.PromptTokens != len(prompt) || f.Usage.CompletionTokens != 0 {
			t.Fatalf("%v: %d tokens, final %+v", p, len(toks), f)
		}
		if !slices.Equal(f.Embedding, want[p]) {
			t.Errorf("%v pooling in chunks differs from one step over the input", p)
		}
	}
	wg.Wait()
	if !slices.Equal(together, alone) {
		t.Errorf("a generation beside embeddings gave %v, alone %v", together, alone)
	}
}

// TestEmbeddingLimits: an embedding may fill the whole context but no more,
// asks for nothing a generation does, and takes a known pooling.
func TestEmbeddingLimits(t *testing.T) {
	leakcheck.Check(t)
	m := loadStories(t, 1)
	s := New(m, Config{MaxSeqs: 2, Context: 32})
	defer shutdown(t, s)
	full := make([]int32, 32)
	for i := range full {
		full[i] = int32(3 + i)
	}
	if _, f := collect(t, s, Request{Prompt: full, Pooling: model.PoolLast}); len(f.Embedding) != m.Config().Dim {
		t.Errorf("a whole-context input: embedding of %d values, want %d", len(f.Embedding), m.Config().Dim)
	}
	for _, c := range []struct {
		req  Request
		want error
	}{
		{Request{Prompt: append(full, 5), Pooling: model.PoolMean}, ErrPromptTooLong},
		{Request{Prompt: full[:4], Pooling: model.PoolMean, MaxTokens: 1}, ErrInvalidRequest},
		{Request{Prompt: full[:4], Pooling: model.PoolMean, Logprobs: true}, ErrInvalidRequest},
		{Request{Prompt: full[:4], Pooling: model.PoolRank}, ErrInvalidRequest},
		{Request{Prompt: full[:4], Pooling: 9}, ErrInvalidRequest},
	} {
		if _, err := s.Submit(t.Context(), c.req); !errors.Is(err, c.want) {
			t.Errorf("%+v: %v, want %v", c.req, err, c.want)
		}
	}
}

func TestNormalize(t *testing.T) {
	v := []float32{3, 4}
	Normalize(v)
	if v[0] != 0.6 || v[1] != 0.8 {
		t.Errorf("Normalize(3, 4) = %v", v)
	}
	z := []float32{0, 0}
	Normalize(z)
	if z[0] != 0 || z[1] != 0 {
		t.Errorf("Normalize(0, 0) = %v", z)
	}
}
