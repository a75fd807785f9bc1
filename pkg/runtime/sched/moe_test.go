package sched

import (
	"bytes"
	"slices"
	"sync"
	"testing"

	"github.com/corelm/corelm/internal/leakcheck"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/runtime/granitemoe"
	"github.com/corelm/corelm/pkg/runtime/internal/runtimetest"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/olmoe"
	"github.com/corelm/corelm/pkg/runtime/quantize"
	"github.com/corelm/corelm/pkg/runtime/qwen2moe"
	"github.com/corelm/corelm/pkg/runtime/synth"
)

// TestMixtureOfExpertsThroughScheduler generates from tiny mixtures of
// experts (synth's golden shapes in Q8_0) with several requests at once and
// chunked prefill: each request's tokens must equal its solo run, so
// grouping the rows of different sequences by expert in one step changes
// nothing.
func TestMixtureOfExpertsThroughScheduler(t *testing.T) {
	builds := map[string]func(model.Source, model.Env) (model.Model, error){
		"olmoe":      func(s model.Source, e model.Env) (model.Model, error) { return olmoe.New(s, e) },
		"qwen2moe":   func(s model.Source, e model.Env) (model.Model, error) { return qwen2moe.New(s, e) },
		"granitemoe": func(s model.Source, e model.Env) (model.Model, error) { return granitemoe.New(s, e) },
	}
	for arch, build := range builds {
		t.Run(arch, func(t *testing.T) {
			leakcheck.Check(t)
			var buf bytes.Buffer
			if _, err := synth.Write(&buf, synth.Presets["golden-"+arch], arch, quantize.Schemes["Q8_0"], 5); err != nil {
				t.Fatal(err)
			}
			f, err := gguf.Parse(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			m, err := build(model.FromGGUF(f), model.Env{Pool: runtimetest.Pool(t, 2)})
			if err != nil {
				t.Fatal(err)
			}
			reqs := make([]Request, 4)
			for i := range reqs {
				reqs[i] = Request{Prompt: testPrompt(i, 3+17*i), MaxTokens: 12}
			}
			want := make([][]int32, len(reqs))
			for i, r := range reqs {
				want[i] = solo(t, m, r)
				if len(want[i]) != r.MaxTokens {
					t.Fatalf("request %d generated %d tokens, want %d", i, len(want[i]), r.MaxTokens)
				}
			}
			s := New(m, Config{MaxSeqs: len(reqs), StepTokens: 16})
			defer shutdown(t, s)
			got := make([][]int32, len(reqs))
			var wg sync.WaitGroup
			for i := range reqs {
				wg.Go(func() { got[i], _ = collect(t, s, reqs[i]) })
			}
			wg.Wait()
			for i := range reqs {
				if !slices.Equal(got[i], want[i]) {
					t.Errorf("request %d:\nbatched %v\nsolo    %v", i, got[i], want[i])
				}
			}
		})
	}
}
