package telemetry

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sched"
)

// SchedulerHooks returns the hooks for one scheduler serving model (install
// them in sched.Config.Hooks; a new scheduler gets new hooks). They turn the
// scheduler's callbacks into the spans and metrics of the generations whose
// Request.Tag is a *Generation (Attach):
//
//   - on each step, the scheduler's step-duration histogram; and, when a
//     generation of the step traces at LevelStep or more, one span for the
//     step, a child of the generation with the highest level (the first of
//     the step on a tie) and linked to the others that trace steps; spans
//     are made after the fact, with the step's own start and end;
//   - under it, when that generation traces at LevelLayer, a span per
//     transformer layer with an attention and a feed-forward child
//     (docs/tracing.md has the measured cost and why spans, not events);
//   - admission and first token as events of the generation's span; at the
//     end, usage and timings on it and the request metrics.
//
// The hooks run on the scheduler's goroutine: they only record, never wait.
func (t *Telemetry) SchedulerHooks(model string) sched.Hooks {
	return newObserver(t, model).hooks()
}

func newObserver(t *Telemetry, model string) *observer {
	o := &observer{t: t, live: map[uint64]*Generation{}, layers: layerSpans}
	for i, kind := range stepKinds {
		o.stepAttrs[i] = metric.WithAttributeSet(attribute.NewSet(keyRequestModel.String(model), keyStepKind.String(kind)))
	}
	return o
}

func (o *observer) hooks() sched.Hooks {
	return sched.Hooks{
		Step:            o.step,
		RequestStarted:  o.started,
		FirstToken:      o.firstToken,
		RequestFinished: o.finished,
	}
}

// The kinds of step: only decoding sequences, only prompt chunks, or both.
// They are the step spans' names too.
const (
	stepDecode = iota
	stepPrefill
	stepMixed
)

var stepKinds = [...]string{stepDecode: "decode", stepPrefill: "prefill", stepMixed: "prefill+decode"}

// observer is the state of one scheduler's hooks; only its goroutine
// touches it.
type observer struct {
	t         *Telemetry
	live      map[uint64]*Generation // started, not finished, by scheduler id
	steps     int64                  // steps seen
	stepAttrs [len(stepKinds)]metric.RecordOption
	traced    []*Generation // scratch: the step's generations that trace steps
	links     []trace.Link  // scratch
	// layers records a step's layer timings under ctx's span (the step's):
	// layerSpans; the benchmark swaps in the alternatives it measured.
	layers func(ctx context.Context, tr trace.Tracer, st *model.StepTrace)
}

func (o *observer) started(info *sched.RequestInfo) {
	g, _ := info.Tag.(*Generation)
	if g == nil {
		return
	}
	o.live[info.ID] = g
	if g.recording {
		g.span.AddEvent("admitted", trace.WithAttributes(keyQueueNS.Int64(int64(info.Queue))))
	}
}

func (o *observer) firstToken(info *sched.RequestInfo) {
	g, _ := info.Tag.(*Generation)
	if g == nil {
		return
	}
	g.first = time.Now()
	if g.recording {
		g.span.AddEvent("first_token", trace.WithTimestamp(g.first))
	}
}

func (o *observer) finished(info *sched.RequestInfo, f *sched.Final) {
	g, _ := info.Tag.(*Generation)
	if g == nil {
		return
	}
	delete(o.live, info.ID)
	g.finish(f)
}

func (o *observer) step(info *sched.StepInfo) {
	end := time.Now()
	o.steps++
	kind := stepMixed
	switch {
	case info.PrefillTokens == 0:
		kind = stepDecode
	case info.DecodeTokens == 0:
		kind = stepPrefill
	}
	o.t.inst.stepDuration.Record(context.Background(), info.Duration.Seconds(), o.stepAttrs[kind])
	if len(o.live) == 0 {
		return
	}
	var parent *Generation
	o.traced = o.traced[:0]
	for _, id := range info.Requests {
		g := o.live[id]
		if g == nil {
			continue
		}
		g.steps++
		if !g.recording || g.level < LevelStep {
			continue
		}
		o.traced = append(o.traced, g)
		if parent == nil || g.level > parent.level {
			parent = g
		}
	}
	if parent == nil {
		return
	}
	o.links = o.links[:0]
	for _, g := range o.traced {
		if g != parent {
			o.links = append(o.links, trace.Link{SpanContext: g.span.SpanContext()})
		}
	}
	clear(o.traced)
	ctx := trace.ContextWithSpan(context.Background(), parent.span)
	ctx, sp := o.t.tracer.Start(ctx, stepKinds[kind],
		trace.WithTimestamp(end.Add(-info.Duration)),
		trace.WithLinks(o.links...),
		trace.WithAttributes(
			keyStepIndex.Int64(o.steps),
			keyStepSeqs.Int(info.Seqs),
			keyStepDecode.Int(info.DecodeTokens),
			keyStepPrefill.Int(info.PrefillTokens),
			keyStepLinked.Int(len(o.links)+1),
		))
	if parent.level >= LevelLayer && info.Trace != nil {
		o.layers(ctx, o.t.tracer, info.Trace)
	}
	sp.End(trace.WithTimestamp(end))
}

// layerSpans records a step's layers as spans under ctx's: one per layer
// ("layer", attribute corelm.layer) with two children, "attention" and
// "ffn", laid end to end from the trace's start (the layers run back to
// back; the two clock reads between them are the only gap left out).
func layerSpans(ctx context.Context, tr trace.Tracer, st *model.StepTrace) {
	at := st.Start
	for l, lt := range st.Layers {
		mid := at.Add(lt.Attention)
		end := mid.Add(lt.FFN)
		lctx, ls := tr.Start(ctx, "layer", trace.WithTimestamp(at), trace.WithAttributes(keyLayer.Int(l)))
		_, a := tr.Start(lctx, "attention", trace.WithTimestamp(at))
		a.End(trace.WithTimestamp(mid))
		_, f := tr.Start(lctx, "ffn", trace.WithTimestamp(mid))
		f.End(trace.WithTimestamp(end))
		ls.End(trace.WithTimestamp(end))
		at = end
	}
}
