package telemetry

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/corelm/corelm/internal/jaegertest"
	"github.com/corelm/corelm/pkg/runtime/sched"
)

// TestJaeger exports a layer-level generation to a real Jaeger over OTLP
// and reads the tree back from its query API, as an operator would see it.
func TestJaeger(t *testing.T) {
	j := jaegertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tel, err := Setup(ctx, Options{ServiceName: "corelm-inference", Getenv: env("OTEL_EXPORTER_OTLP_ENDPOINT", j.OTLPEndpoint())})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)
	if !tel.Exporting() {
		t.Fatal("not exporting with an endpoint set")
	}

	// A client's trace, continued by a layer-level generation; a second,
	// step-level generation shares the steps.
	client := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0xc0, 0x4e, 0x1a, 1}, SpanID: trace.SpanID{0xc1}, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	_, gen := tel.StartGeneration(trace.ContextWithRemoteSpanContext(ctx, client),
		GenerationStart{Model: "stories", Operation: OperationChat, RequestID: "r1", Level: LevelLayer})
	_, other := tel.StartGeneration(ctx, GenerationStart{Model: "stories", RequestID: "r2", Level: LevelStep})
	fs := newFakeSched(tel.SchedulerHooks("stories"))
	a := fs.submit(gen, 6, 0)
	b := fs.submit(other, 4, 0)
	const layers = 5
	fs.step(0, 10, 3*time.Millisecond, stepTrace(layers), a, b)
	fs.first(a)
	fs.first(b)
	fs.step(2, 0, 2*time.Millisecond, stepTrace(layers), a, b)
	fs.step(1, 0, 2*time.Millisecond, stepTrace(layers), a)
	fs.finish(a, sched.Final{Reason: sched.FinishLength, Usage: sched.Usage{PromptTokens: 6, CompletionTokens: 3}})
	fs.finish(b, sched.Final{Reason: sched.FinishStop, Usage: sched.Usage{PromptTokens: 4, CompletionTokens: 2}})
	gen.End()
	other.End()
	if err := tel.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}

	const want = 1 + 3 + 3*layers*3 // generation, steps, layers with attention and ffn
	tr, err := j.Trace(ctx, client.TraceID().String(), want)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Spans) != want {
		t.Fatalf("%d spans, want %d", len(tr.Spans), want)
	}
	gens := tr.Named("chat stories")
	if len(gens) != 1 {
		t.Fatalf("%d generation spans", len(gens))
	}
	g := gens[0]
	if g.Parent() != client.SpanID().String() || tr.Service(g) != "corelm-inference" {
		t.Errorf("generation: parent %s (client %s), service %q", g.Parent(), client.SpanID(), tr.Service(g))
	}
	for k, v := range map[string]string{
		"gen_ai.operation.name": "chat", "gen_ai.request.model": "stories", "gen_ai.usage.output_tokens": "3",
		"gen_ai.usage.input_tokens": "6", "corelm.request_id": "r1", "corelm.steps": "3",
	} {
		if got := g.TagString(k); got != v {
			t.Errorf("generation tag %s = %q, want %q", k, got, v)
		}
	}
	if g.Event("first_token") == nil {
		t.Error("no first_token event")
	}
	steps := tr.Children(g.SpanID)
	if len(steps) != 3 {
		t.Fatalf("%d steps under the generation", len(steps))
	}
	otherID := other.Span().SpanContext().SpanID().String()
	for _, s := range steps {
		// Steps 1 and 2 had both generations, step 3 only the first.
		links := s.Links()
		if i, _ := s.TagInt("corelm.step.index"); (i < 3) != (len(links) == 1 && links[0].SpanID == otherID) || i == 3 && len(links) != 0 {
			t.Errorf("step %d (%s): links %+v, other generation's span %s", i, s.OperationName, links, otherID)
		}
		ls := tr.Children(s.SpanID)
		if len(ls) != layers {
			t.Fatalf("step %s: %d layer spans", s.OperationName, len(ls))
		}
		for _, l := range ls {
			kids := tr.Children(l.SpanID)
			if l.OperationName != "layer" || len(kids) != 2 {
				t.Fatalf("%s with %d children", l.OperationName, len(kids))
			}
			if kids[0].Start().Before(l.Start()) || kids[0].Elapsed()+kids[1].Elapsed() != l.Elapsed() {
				t.Errorf("layer %s: children %v + %v, layer %v", l.TagString("corelm.layer"), kids[0].Elapsed(), kids[1].Elapsed(), l.Elapsed())
			}
		}
	}
}
