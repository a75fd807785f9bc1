package sched

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
)

var _ Decoder = (*tokenizer.StreamDecoder)(nil)

// loadStories binds the embedded stories260K model on its own pool.
func loadStories(tb testing.TB, threads int) model.Model {
	tb.Helper()
	pool := kernels.NewPool(threads)
	tb.Cleanup(pool.Close)
	l, err := runtime.ParseGGUF(models.Stories260K, model.Env{Pool: pool})
	if err != nil {
		tb.Fatal(err)
	}
	return l.Model
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

// reference runs req through runtime.Generate, the single-sequence loop.
func reference(t *testing.T, m model.Model, req Request) ([]int32, runtime.FinishReason) {
	t.Helper()
	var toks []int32
	res, err := runtime.Generate(context.Background(), m, runtime.GenerateRequest{
		Prompt: req.Prompt, MaxTokens: req.MaxTokens, Sampling: req.Sampling, StopTokens: req.StopTokens,
	}, func(tok int32) error { toks = append(toks, tok); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return toks, res.Finish
}

func TestStoriesGreedyEqualsGenerate(t *testing.T) {
	checkGoroutines(t)
	m := loadStories(t, 2)
	req := Request{Prompt: []int32{1}, MaxTokens: 200}
	want, _ := reference(t, m, req)
	s := New(m, Config{MaxSeqs: 4})
	defer shutdown(t, s)
	got, f := collect(t, s, req)
	if !slices.Equal(got, want) {
		t.Fatalf("scheduler %v\nGenerate  %v", got, want)
	}
	if f.Reason != FinishLength || f.Usage.CompletionTokens != 200 {
		t.Errorf("final %+v", f)
	}
}

func TestStoriesConcurrentEqualSolo(t *testing.T) {
	for _, n := range []int{2, 8} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			checkGoroutines(t)
			m := loadStories(t, 2)
			reqs := storiesRequests(n)
			want := make([][]int32, n)
			for i, r := range reqs {
				want[i], _ = reference(t, m, r)
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
	checkGoroutines(t)
	m := loadStories(t, 2)
	tok, err := tokenizer.New(storiesMetadata(t))
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

func storiesMetadata(t *testing.T) model.Source {
	t.Helper()
	l, err := runtime.ParseGGUF(models.Stories260K, model.Env{})
	if err != nil {
		t.Fatal(err)
	}
	return l.Source
}

// BenchmarkDecode measures aggregate decode throughput with 1, 4 and 8
// concurrent streams on stories260K (tokens/s over all streams).
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

// BenchmarkGenerateReference is runtime.Generate on the same work as
// BenchmarkDecode/seqs=1: the scheduler's overhead is the difference.
func BenchmarkGenerateReference(b *testing.B) {
	m := loadStories(b, 2)
	const perSeq = 128
	start := time.Now()
	for range b.N {
		if _, err := runtime.Generate(context.Background(), m, runtime.GenerateRequest{Prompt: []int32{1}, MaxTokens: perSeq},
			func(int32) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*perSeq)/time.Since(start).Seconds(), "tok/s")
}
