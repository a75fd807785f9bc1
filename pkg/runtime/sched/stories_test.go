package sched

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/corelm/corelm/internal/leakcheck"
	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/runtime/internal/runtimetest"
	"github.com/corelm/corelm/pkg/runtime/llama"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/phi3"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
)

var _ Decoder = (*tokenizer.StreamDecoder)(nil)

// loadStories binds the embedded stories model on its own pool.
func loadStories(tb testing.TB, threads int) model.Model {
	tb.Helper()
	m, err := llama.New(storiesSource(tb), model.Env{Pool: runtimetest.Pool(tb, threads)})
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func storiesSource(tb testing.TB) model.Source {
	tb.Helper()
	f, err := gguf.Parse(models.Stories)
	if err != nil {
		tb.Fatal(err)
	}
	return model.FromGGUF(f)
}

// storiesRequests are prompts of different lengths (BOS + varied ids) with
// greedy and seeded sampling.
func storiesRequests(n int) []Request {
	reqs := make([]Request, n)
	for i := range reqs {
		p := []int32{1}
		for j := range 3 + 29*i {
			p = append(p, int32(3+(i*97+j*13)%500))
		}
		reqs[i] = Request{Prompt: p, MaxTokens: 24 + 5*i}
		if i%2 == 1 {
			reqs[i].Sampling = sample.Params{Temperature: 0.8, TopK: 40, TopP: 0.95, Seed: uint64(100 + i), RepeatPenalty: 1.1}
		}
		reqs[i].StopTokens = []int32{2}
	}
	return reqs
}

// solo runs req alone on m: a scheduler of one sequence and the default
// step.
func solo(t *testing.T, m model.Model, req Request) []int32 {
	t.Helper()
	s := New(m, Config{MaxSeqs: 1})
	defer shutdown(t, s)
	toks, _ := collect(t, s, req)
	return toks
}

func TestStoriesConcurrentEqualSolo(t *testing.T) {
	for _, n := range []int{2, 8} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			leakcheck.Check(t)
			m := loadStories(t, 2)
			reqs := storiesRequests(n)
			want := make([][]int32, n)
			for i, r := range reqs {
				want[i] = solo(t, m, r)
			}
			// A small step budget forces chunked prefill mixed with decoding.
			s := New(m, Config{MaxSeqs: n, StepTokens: 48})
			defer shutdown(t, s)
			got := make([][]int32, n)
			var wg sync.WaitGroup
			for i := range reqs {
				wg.Go(func() { got[i], _ = collect(t, s, reqs[i]) })
			}
			wg.Wait()
			for i := range reqs {
				if !slices.Equal(got[i], want[i]) {
					t.Errorf("request %d (prompt %d, temp %g):\nbatched %v\nsolo    %v", i, len(reqs[i].Prompt), reqs[i].Sampling.Temperature, got[i], want[i])
				}
			}
		})
	}
}

func TestStoriesStopStringAndText(t *testing.T) {
	leakcheck.Check(t)
	m := loadStories(t, 2)
	tok, err := tokenizer.New(storiesSource(t))
	if err != nil {
		t.Fatal(err)
	}
	prompt, err := tok.Encode("Once upon a time", tokenizer.EncodeOptions{AddBOS: tokenizer.BOSModel})
	if err != nil {
		t.Fatal(err)
	}
	s := New(m, Config{})
	defer shutdown(t, s)
	text := func(req Request) (string, *Final) {
		h, err := s.Submit(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		var out string
		for {
			ev, err := h.Recv(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			out += ev.Text
			if ev.Kind == EventFinal {
				return out + ev.Final.Text, ev.Final
			}
		}
	}
	full, _ := text(Request{Prompt: prompt, MaxTokens: 40, Decoder: tok.NewDecoder()})
	if len(full) < 20 {
		t.Fatalf("generated text too short: %q", full)
	}
	stop := full[10:14]
	got, f := text(Request{Prompt: prompt, MaxTokens: 40, Decoder: tok.NewDecoder(), StopStrings: []string{stop}})
	want := full[:indexOf(full, stop)]
	if got != want || f.Reason != FinishStopSequence {
		t.Errorf("with stop %q: %q (%v), want %q", stop, got, f.Reason, want)
	}
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// BenchmarkDecode measures aggregate decode throughput with 1, 4 and 8
// concurrent streams on the stories model (tokens/s over all streams).
func BenchmarkDecode(b *testing.B) {
	for _, n := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("stories/seqs=%d", n), func(b *testing.B) {
			m := loadStories(b, 2)
			s := New(m, Config{MaxSeqs: n})
			defer s.Shutdown(context.Background())
			const perSeq = 128
			total := 0
			start := time.Now()
			for range b.N {
				var wg sync.WaitGroup
				for range n {
					wg.Go(func() {
						h, err := s.Submit(context.Background(), Request{Prompt: []int32{1}, MaxTokens: perSeq})
						if err != nil {
							b.Error(err)
							return
						}
						for {
							ev, err := h.Recv(context.Background())
							if err != nil || ev.Kind == EventFinal {
								return
							}
						}
					})
				}
				wg.Wait()
				total += n * perSeq
			}
			b.ReportMetric(float64(total)/time.Since(start).Seconds(), "tok/s")
		})
	}
}

// TestLogprobsDoNotDependOnMaxTokens: the scheduler sizes a request's cache
// to its prompt plus max_tokens, but the request runs as served at the
// scheduler's context, so its logits — here the logprobs of its tokens —
// are the same whatever max_tokens it asks for. Phi-3's LongRoPE factors
// are the case in point: the golden model is served at 8192 positions, past
// its original 4096, so every request rotates with the long factors, even
// one whose cache holds a few positions.
func TestLogprobsDoNotDependOnMaxTokens(t *testing.T) {
	leakcheck.Check(t)
	m, err := phi3.New(runtimetest.GoldenSource(t, "phi3-F32.gguf"), model.Env{Pool: runtimetest.Pool(t, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := New(m, Config{Context: 8192})
	defer shutdown(t, s)
	prompt := runtimetest.GoldenTokens(t, "phi3")[:16]
	// The logprobs of the first 4 tokens (and their top 5 alternatives).
	logprobs := func(maxTokens int) []sample.TokenLogprob {
		h, err := s.Submit(t.Context(), Request{Prompt: prompt, MaxTokens: maxTokens, TopLogprobs: 5})
		if err != nil {
			t.Fatal(err)
		}
		defer drain(t, h)
		defer h.Cancel()
		var out []sample.TokenLogprob
		for n := 0; n < 4; {
			ev, err := h.Recv(t.Context())
			if err != nil || ev.Kind == EventFinal {
				t.Fatalf("ended after %d tokens: %v", n, err)
			}
			if ev.Kind == EventToken {
				out = append(append(out, *ev.Logprob), ev.Top...)
				n++
			}
		}
		return out
	}
	if short, long := logprobs(4), logprobs(5000); !slices.Equal(short, long) {
		t.Errorf("max_tokens 4 and 5000 give different logprobs:\n%v\n%v", short, long)
	}
}
