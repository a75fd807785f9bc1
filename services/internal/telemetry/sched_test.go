package telemetry

import (
	"context"
	"io"
	"testing"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/llama"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sched"
)

// TestRealScheduler runs the hooks on the scheduler itself with the
// embedded stories model (5 layers): a layer-level and a step-level
// generation batched together.
func TestRealScheduler(t *testing.T) {
	f, err := gguf.Parse(models.Stories)
	if err != nil {
		t.Fatal(err)
	}
	pool := kernels.NewPool(1)
	defer pool.Close()
	m, err := llama.New(model.FromGGUF(f), model.Env{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	layers := m.Config().Layers
	h := newHarness(t, nil)
	s := sched.New(m, sched.Config{MaxSeqs: 2, StepTokens: 8, Hooks: h.tel.SchedulerHooks("stories")})
	defer s.Shutdown(context.Background())

	run := func(level Level, prompt []int32, done chan<- struct{}) *Generation {
		ctx, gen := h.tel.StartGeneration(context.Background(), GenerationStart{Model: "stories", Level: level})
		req := sched.Request{Prompt: prompt, MaxTokens: 6}
		gen.Attach(&req)
		hd, err := s.Submit(ctx, req)
		gen.Submitted(err)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer close(done)
			defer gen.End()
			for {
				if _, err := hd.Recv(ctx); err == io.EOF {
					return
				}
			}
		}()
		return gen
	}
	prompt := []int32{1, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130} // 11 tokens: two prefill chunks
	doneA, doneB := make(chan struct{}), make(chan struct{})
	gA := run(LevelLayer, prompt, doneA)
	gB := run(LevelStep, prompt[:4], doneB)
	<-doneA
	<-doneB
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	spans := h.ended(t)
	gens := named(spans, "text_completion stories")
	if len(gens) != 2 {
		t.Fatalf("%d generation spans", len(gens))
	}
	for _, g := range []*Generation{gA, gB} {
		stub := gens[0]
		if stub.SpanContext.SpanID() != g.Span().SpanContext().SpanID() {
			stub = gens[1]
		}
		nSteps, _ := attrOf(stub.Attributes, keySteps)
		out, _ := attrOf(stub.Attributes, keyUsageOutputTokens)
		if out.AsInt64() != 6 || nSteps.AsInt64() < 6 {
			t.Errorf("level %v: %d tokens out in %d steps", g.Level(), out.AsInt64(), nSteps.AsInt64())
		}
		// A's steps are all in its trace (it has the higher level); B's
		// own trace has those it took part in without A.
		under := childrenOf(spans, stub.SpanContext.SpanID())
		for _, st := range under {
			kids := childrenOf(spans, st.SpanContext.SpanID())
			if g == gA && len(kids) != layers {
				t.Errorf("A's step %s has %d layer spans, want %d", st.Name, len(kids), layers)
			}
			if g == gB && len(kids) != 0 {
				t.Errorf("B's step %s has layer spans", st.Name)
			}
		}
		if g == gA && int64(len(under)) != nSteps.AsInt64() {
			t.Errorf("A: %d step spans, took part in %d steps", len(under), nSteps.AsInt64())
		}
	}
	if n := len(named(spans, "layer")); n == 0 || n%layers != 0 {
		t.Errorf("%d layer spans for %d layers", n, layers)
	}
	dur := h.metrics(t)["corelm.scheduler.step.duration"]
	if dur.Name == "" {
		t.Error("no step durations recorded")
	}
}
