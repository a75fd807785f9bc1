package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/sched"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// harness is a Telemetry exporting to memory, with a manual metric reader.
type harness struct {
	tel    *Telemetry
	spans  *tracetest.InMemoryExporter
	reader *sdkmetric.ManualReader
}

func newHarness(t *testing.T, getenv func(string) string) *harness {
	t.Helper()
	h := &harness{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader()}
	if getenv == nil {
		getenv = env()
	}
	tel, err := Setup(context.Background(), Options{
		ServiceName:  "corelm-test",
		Getenv:       getenv,
		SpanExporter: h.spans,
		MetricReader: h.reader,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) })
	h.tel = tel
	return h
}

// ended flushes and returns the spans exported so far.
func (h *harness) ended(t *testing.T) tracetest.SpanStubs {
	t.Helper()
	if err := h.tel.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return h.spans.GetSpans()
}

func (h *harness) metrics(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

func attrOf(kvs []attribute.KeyValue, k attribute.Key) (attribute.Value, bool) {
	for _, kv := range kvs {
		if kv.Key == k {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func named(spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func childrenOf(spans tracetest.SpanStubs, parent trace.SpanID) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Parent.SpanID() == parent && s.Parent.IsValid() {
			out = append(out, s)
		}
	}
	return out
}

// fakeSched replays hook calls as the scheduler would make them.
type fakeSched struct {
	hooks sched.Hooks
	infos map[uint64]*sched.RequestInfo
	next  uint64
}

func newFakeSched(hooks sched.Hooks) *fakeSched {
	return &fakeSched{hooks: hooks, infos: map[uint64]*sched.RequestInfo{}}
}

// submit attaches gen to a request and starts it.
func (f *fakeSched) submit(gen *Generation, prompt int, queue time.Duration) uint64 {
	req := sched.Request{Prompt: make([]int32, prompt), MaxTokens: 16, Sampling: sample.Params{Temperature: 0.7, TopP: 0.9, TopK: 40, Seed: 42}}
	gen.Attach(&req)
	gen.Submitted(nil)
	f.next++
	info := &sched.RequestInfo{ID: f.next, Tag: req.Tag, PromptTokens: prompt, Queue: queue}
	f.infos[f.next] = info
	f.hooks.RequestStarted(info)
	return f.next
}

func (f *fakeSched) step(decode, prefill int, d time.Duration, tr *model.StepTrace, ids ...uint64) {
	f.hooks.Step(&sched.StepInfo{Seqs: len(ids), DecodeTokens: decode, PrefillTokens: prefill, Duration: d, Trace: tr, Requests: ids})
}

func (f *fakeSched) first(id uint64) { f.hooks.FirstToken(f.infos[id]) }

func (f *fakeSched) finish(id uint64, fin sched.Final) { f.hooks.RequestFinished(f.infos[id], &fin) }

// stepTrace makes the layer timings of a step that ends now, as the model
// would have recorded them.
func stepTrace(layers int) *model.StepTrace {
	st := &model.StepTrace{}
	for l := range layers {
		lt := model.LayerTiming{
			Attention: time.Duration(100+l) * time.Microsecond,
			FFN:       time.Duration(200+l) * time.Microsecond,
		}
		st.Layers = append(st.Layers, lt)
		st.Total += lt.Attention + lt.FFN
	}
	st.Start = time.Now().Add(-st.Total)
	return st
}

func TestObserverSpanTree(t *testing.T) {
	h := newHarness(t, nil)
	fs := newFakeSched(h.tel.SchedulerHooks("stories"))
	start := func(level Level, id string) *Generation {
		_, g := h.tel.StartGeneration(context.Background(), GenerationStart{Model: "stories", RequestID: id, Level: level})
		return g
	}
	gA, gB, gC, gD := start(LevelLayer, "a"), start(LevelStep, "b"), start(LevelRequest, "c"), start(LevelOff, "d")
	if !gA.TraceLayers() || gB.TraceLayers() {
		t.Fatalf("TraceLayers: A %v B %v", gA.TraceLayers(), gB.TraceLayers())
	}
	a := fs.submit(gA, 7, 3*time.Millisecond)
	b := fs.submit(gB, 5, 0)
	c := fs.submit(gC, 3, 0)
	d := fs.submit(gD, 2, 0)

	// Step 1: every prompt at once, layers timed (A asked).
	tr := stepTrace(4)
	fs.step(0, 17, 12*time.Millisecond, tr, a, b, c, d)
	for _, id := range []uint64{a, b, c, d} {
		fs.first(id)
	}
	// Step 2: A paused; B is the highest traced level left.
	fs.step(3, 0, 2*time.Millisecond, nil, b, c, d)
	// Step 3: nobody traces steps.
	fs.step(2, 0, 2*time.Millisecond, nil, c, d)

	// A's server ends first: its span waits for the scheduler.
	gA.End()
	if got := named(h.ended(t), "text_completion stories"); len(got) != 0 {
		t.Fatalf("%d generation spans ended before the scheduler finished them", len(got))
	}
	fin := func(out int, r sched.FinishReason) sched.Final {
		return sched.Final{Reason: r, Usage: sched.Usage{PromptTokens: 7, CompletionTokens: out},
			Timings: sched.Timings{Queue: 3 * time.Millisecond, TTFT: 15 * time.Millisecond}}
	}
	fs.finish(a, fin(4, sched.FinishLength))
	fs.finish(b, fin(3, sched.FinishStop))
	fs.finish(c, fin(2, sched.FinishStop))
	fs.finish(d, fin(2, sched.FinishStop))
	// B, C, D: the scheduler first, then the server.
	if got := named(h.ended(t), "text_completion stories"); len(got) != 1 {
		t.Fatalf("after the scheduler: %d generation spans, want A's only", len(got))
	}
	gB.End()
	gC.End()
	gD.End()
	gD.End() // twice is fine

	spans := h.ended(t)
	gens := named(spans, "text_completion stories")
	if len(gens) != 3 {
		t.Fatalf("%d generation spans, want 3 (level off makes none)", len(gens))
	}
	byID := map[string]tracetest.SpanStub{}
	for _, s := range gens {
		id, _ := attrOf(s.Attributes, keyRequestID)
		byID[id.AsString()] = s
	}
	spanA, spanB := byID["a"], byID["b"]
	wantAttrs := map[attribute.Key]any{
		keyOperationName:     "text_completion",
		keyRequestModel:      "stories",
		keyRequestMaxTokens:  int64(16),
		keyRequestSeed:       int64(42),
		keyRequestTopK:       int64(40),
		keyUsageInputTokens:  int64(7),
		keyUsageOutputTokens: int64(4),
		keyQueueNS:           int64(3 * time.Millisecond),
		keyTTFTNS:            int64(15 * time.Millisecond),
		keyCachedTokens:      int64(0),
		keySteps:             int64(1),
		keyTraceLevel:        "layer",
	}
	for k, want := range wantAttrs {
		v, ok := attrOf(spanA.Attributes, k)
		if !ok || v.AsInterface() != want {
			t.Errorf("A's %s = %v (set %v), want %v", k, v.AsInterface(), ok, want)
		}
	}
	if v, _ := attrOf(spanA.Attributes, keyFinishReasons); len(v.AsStringSlice()) != 1 || v.AsStringSlice()[0] != "length" {
		t.Errorf("A's finish reasons = %v", v.AsStringSlice())
	}
	if v, _ := attrOf(spanA.Attributes, keyRequestTemperature); v.AsFloat64() < 0.69 || v.AsFloat64() > 0.71 {
		t.Errorf("A's temperature = %v", v.AsFloat64())
	}
	var events []string
	for _, e := range spanA.Events {
		events = append(events, e.Name)
	}
	if strings.Join(events, ",") != "admitted,first_token" {
		t.Errorf("A's events = %v", events)
	}
	if v, _ := attrOf(byID["c"].Attributes, keySteps); v.AsInt64() != 3 {
		t.Errorf("C took part in %d steps, want 3", v.AsInt64())
	}

	// Steps: the prefill under A, linked to B (C traces no steps); the
	// decode step under B; step 3 has no span.
	steps := append(named(spans, "prefill"), named(spans, "decode")...)
	if len(steps) != 2 || len(named(spans, "prefill+decode")) != 0 {
		t.Fatalf("step spans: %d prefill+decode, want 2", len(steps))
	}
	pre := named(spans, "prefill")[0]
	if pre.Parent.SpanID() != spanA.SpanContext.SpanID() {
		t.Errorf("prefill step's parent is not A's span")
	}
	if len(pre.Links) != 1 || pre.Links[0].SpanContext.SpanID() != spanB.SpanContext.SpanID() {
		t.Errorf("prefill step links = %+v, want B's span", pre.Links)
	}
	for k, want := range map[attribute.Key]int64{keyStepSeqs: 4, keyStepPrefill: 17, keyStepDecode: 0, keyStepIndex: 1, keyStepLinked: 2} {
		if v, _ := attrOf(pre.Attributes, k); v.AsInt64() != want {
			t.Errorf("prefill step %s = %d, want %d", k, v.AsInt64(), want)
		}
	}
	if d := pre.EndTime.Sub(pre.StartTime); d != 12*time.Millisecond {
		t.Errorf("prefill step lasted %v, want the step's 12ms", d)
	}
	dec := named(spans, "decode")[0]
	if dec.Parent.SpanID() != spanB.SpanContext.SpanID() || len(dec.Links) != 0 {
		t.Errorf("decode step: parent %v (B %v), %d links", dec.Parent.SpanID(), spanB.SpanContext.SpanID(), len(dec.Links))
	}
	if len(childrenOf(spans, dec.SpanContext.SpanID())) != 0 {
		t.Errorf("the decode step has children: B traces steps, not layers")
	}

	// Layers: 4 under the prefill step, back to back from the trace's
	// start, each with attention then ffn.
	layers := childrenOf(spans, pre.SpanContext.SpanID())
	if len(layers) != 4 || len(named(spans, "layer")) != 4 {
		t.Fatalf("%d layer spans under the step (%d in all), want 4", len(layers), len(named(spans, "layer")))
	}
	at := tr.Start
	for l := range 4 {
		var ls tracetest.SpanStub
		for _, s := range layers {
			if v, _ := attrOf(s.Attributes, keyLayer); v.AsInt64() == int64(l) {
				ls = s
			}
		}
		lt := tr.Layers[l]
		if ls.Name != "layer" || !ls.StartTime.Equal(at) || !ls.EndTime.Equal(at.Add(lt.Attention+lt.FFN)) {
			t.Fatalf("layer %d: %q %v–%v, want from %v for %v", l, ls.Name, ls.StartTime, ls.EndTime, at, lt.Attention+lt.FFN)
		}
		kids := childrenOf(spans, ls.SpanContext.SpanID())
		if len(kids) != 2 {
			t.Fatalf("layer %d has %d children", l, len(kids))
		}
		for _, k := range kids {
			switch k.Name {
			case "attention":
				if !k.StartTime.Equal(at) || k.EndTime.Sub(k.StartTime) != lt.Attention {
					t.Errorf("layer %d attention %v–%v", l, k.StartTime, k.EndTime)
				}
			case "ffn":
				if !k.StartTime.Equal(at.Add(lt.Attention)) || k.EndTime.Sub(k.StartTime) != lt.FFN {
					t.Errorf("layer %d ffn %v–%v", l, k.StartTime, k.EndTime)
				}
			default:
				t.Errorf("layer %d child %q", l, k.Name)
			}
		}
		at = at.Add(lt.Attention + lt.FFN)
	}
	if n := len(spans); n != 3+2+4*3 {
		t.Errorf("%d spans in all, want 17", n)
	}
	for _, s := range spans {
		if s.SpanContext.TraceID() != spanA.SpanContext.TraceID() && s.SpanContext.TraceID() != spanB.SpanContext.TraceID() &&
			s.SpanContext.TraceID() != byID["c"].SpanContext.TraceID() {
			t.Errorf("span %q in a trace of its own", s.Name)
		}
	}
}

func TestGenerationContinuesIncomingTrace(t *testing.T) {
	h := newHarness(t, nil)
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), parent)
	ctx, g := h.tel.StartGeneration(ctx, GenerationStart{Model: "m", Operation: OperationChat, Level: LevelRequest})
	if trace.SpanContextFromContext(ctx).SpanID() == parent.SpanID() {
		t.Fatal("the context does not carry the generation's span")
	}
	g.End() // never submitted: ends at once
	spans := h.ended(t)
	if len(spans) != 1 || spans[0].Name != "chat m" || spans[0].Parent.SpanID() != parent.SpanID() ||
		spans[0].SpanContext.TraceID() != parent.TraceID() {
		t.Fatalf("spans = %+v", spans)
	}
}

func TestGenerationSubmitFailure(t *testing.T) {
	h := newHarness(t, nil)
	_, g := h.tel.StartGeneration(context.Background(), GenerationStart{Model: "m", Level: LevelRequest})
	var req sched.Request
	g.Attach(&req)
	g.Submitted(&sched.OverloadError{Reason: "full", RetryAfter: time.Second})
	g.End()
	spans := h.ended(t)
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	if v, _ := attrOf(spans[0].Attributes, keyErrorType); v.AsString() != "overloaded" || spans[0].Status.Code != otelcodes.Error {
		t.Errorf("error.type %q, status %v", v.AsString(), spans[0].Status)
	}
	m := h.metrics(t)["gen_ai.server.request.duration"]
	dps := m.Data.(metricdata.Histogram[float64]).DataPoints
	if len(dps) != 1 || dps[0].Count != 1 {
		t.Fatalf("request duration points: %+v", dps)
	}
	if v, _ := dps[0].Attributes.Value(keyErrorType); v.AsString() != "overloaded" {
		t.Errorf("request duration error.type = %q", v.AsString())
	}
}

func TestErrorType(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{context.Canceled, "cancelled"},
		{errors.Join(errors.New("x"), context.DeadlineExceeded), "deadline_exceeded"},
		{&sched.OverloadError{}, "overloaded"},
		{sched.ErrClosed, "shutting_down"},
		{sched.ErrPromptTooLong, "prompt_too_long"},
		{errors.New("boom"), "_OTHER"},
	}
	for _, tt := range tests {
		if got := errorType(tt.err); got != tt.want {
			t.Errorf("errorType(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, nil)
	fs := newFakeSched(h.tel.SchedulerHooks("stories"))
	var stats sched.Stats
	var mu sync.Mutex
	pages := func() (int64, int64) { return 3 << 20, 2 << 20 }
	unregister := h.tel.RegisterModel("stories", func() sched.Stats { mu.Lock(); defer mu.Unlock(); return stats }, pages)
	mu.Lock()
	stats = sched.Stats{Active: 2, Queued: 1, KVBytesInUse: 1 << 20, KVBudget: 1 << 30, Rejected: 5}
	mu.Unlock()

	// Two successful generations, one cancelled, all at level off: metrics
	// do not depend on tracing.
	for i, r := range []sched.FinishReason{sched.FinishStop, sched.FinishLength, sched.FinishCancelled} {
		_, g := h.tel.StartGeneration(context.Background(), GenerationStart{Model: "stories", Operation: OperationChat})
		id := fs.submit(g, 10, 0)
		fs.step(0, 10, time.Millisecond, nil, id)
		fs.first(id)
		fs.step(1, 0, time.Millisecond, nil, id)
		f := sched.Final{Reason: r, Usage: sched.Usage{PromptTokens: 10, CompletionTokens: 3 + i}}
		if r == sched.FinishCancelled {
			f.Err = context.Canceled
		}
		fs.finish(id, f)
		g.End()
	}
	if spans := h.ended(t); len(spans) != 0 {
		t.Errorf("%d spans at level off", len(spans))
	}
	m := h.metrics(t)
	hist := func(name string) []metricdata.HistogramDataPoint[float64] {
		t.Helper()
		got, ok := m[name]
		if !ok {
			t.Fatalf("no %s", name)
		}
		return got.Data.(metricdata.Histogram[float64]).DataPoints
	}
	dur := hist("gen_ai.server.request.duration")
	var ok, cancelled uint64
	for _, dp := range dur {
		if v, has := dp.Attributes.Value(keyErrorType); has && v.AsString() == "cancelled" {
			cancelled += dp.Count
		} else if !has {
			ok += dp.Count
		}
		if v, _ := dp.Attributes.Value(keyOperationName); v.AsString() != "chat" {
			t.Errorf("request duration operation = %q", v.AsString())
		}
	}
	if ok != 2 || cancelled != 1 {
		t.Errorf("request durations: %d ok, %d cancelled; want 2, 1", ok, cancelled)
	}
	if dp := hist("gen_ai.server.time_to_first_token"); len(dp) != 1 || dp[0].Count != 2 {
		t.Errorf("TTFT points %+v, want 2 (successes only)", dp)
	}
	if dp := hist("gen_ai.server.time_per_output_token"); len(dp) != 1 || dp[0].Count != 2 {
		t.Errorf("TPOT points %+v, want 2", dp)
	}
	if dp := hist("corelm.scheduler.step.duration"); len(dp) != 2 {
		t.Errorf("step duration points %d, want prefill and decode", len(dp))
	}
	tokens := map[string]int64{}
	for _, dp := range m["corelm.tokens"].Data.(metricdata.Sum[int64]).DataPoints {
		v, _ := dp.Attributes.Value(keyTokenType)
		tokens[v.AsString()] += dp.Value
	}
	if tokens["input"] != 30 || tokens["output"] != 3+4+5 {
		t.Errorf("tokens %v, want input 30 output 12", tokens)
	}
	gauge := func(name string) int64 {
		t.Helper()
		switch d := m[name].Data.(type) {
		case metricdata.Gauge[int64]:
			if len(d.DataPoints) != 1 {
				t.Fatalf("%s: %d points", name, len(d.DataPoints))
			}
			return d.DataPoints[0].Value
		case metricdata.Sum[int64]:
			if len(d.DataPoints) != 1 {
				t.Fatalf("%s: %d points", name, len(d.DataPoints))
			}
			return d.DataPoints[0].Value
		}
		t.Fatalf("%s: %T", name, m[name].Data)
		return 0
	}
	for name, want := range map[string]int64{
		"corelm.scheduler.queue.depth":      1,
		"corelm.scheduler.active_sequences": 2,
		"corelm.kv_cache.usage":             1 << 20,
		"corelm.kv_cache.budget":            1 << 30,
		"corelm.model.resident":             3 << 20,
		"corelm.model.resident.huge_pages":  2 << 20,
		"corelm.scheduler.rejected":         5,
		"corelm.telemetry.spans.dropped":    0,
		"corelm.telemetry.spans.exported":   0,
	} {
		if got := gauge(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	unregister()
	if d, ok := h.metrics(t)["corelm.scheduler.queue.depth"]; ok && len(d.Data.(metricdata.Gauge[int64]).DataPoints) != 0 {
		t.Errorf("gauge reported after unregister")
	}

	h.tel.RecordLoad(context.Background(), "stories", 2*time.Second, 4096, nil)
	h.tel.RecordLoad(context.Background(), "broken", time.Second, 0, errors.New("bad file"))
	m = h.metrics(t)
	if dp := m["corelm.loader.load.duration"].Data.(metricdata.Histogram[float64]).DataPoints; len(dp) != 2 {
		t.Errorf("load duration points %d, want 2", len(dp))
	}
	if dp := m["corelm.loader.load.bytes"].Data.(metricdata.Sum[int64]).DataPoints; len(dp) != 1 || dp[0].Value != 4096 {
		t.Errorf("load bytes %+v", dp)
	}
}

func TestNoEndpointExportsNothing(t *testing.T) {
	tel, err := Setup(context.Background(), Options{Getenv: env("OTEL_SERVICE_NAME", "x")})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	if tel.Exporting() || tel.MetricsAddr() != nil || tel.PrometheusGatherer() != nil {
		t.Fatalf("exporting %v, metrics %v", tel.Exporting(), tel.MetricsAddr())
	}
	// A client's trace still passes through the no-op spans.
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{9}, SpanID: trace.SpanID{9}, TraceFlags: trace.FlagsSampled})
	ctx, g := tel.StartGeneration(trace.ContextWithSpanContext(context.Background(), parent), GenerationStart{Model: "m", Level: LevelLayer})
	if g.Span().IsRecording() || g.TraceLayers() {
		t.Error("a span records with nothing to export to")
	}
	if trace.SpanContextFromContext(ctx).TraceID() != parent.TraceID() {
		t.Error("the incoming trace id is lost")
	}
	hooks := tel.SchedulerHooks("m")
	fs := newFakeSched(hooks)
	id := fs.submit(g, 3, 0)
	fs.step(0, 3, time.Millisecond, stepTrace(2), id)
	fs.finish(id, sched.Final{})
	g.End()
	if tel.ServiceName() != "x" {
		t.Errorf("service name %q", tel.ServiceName())
	}
}

func TestDisabled(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tel, err := Setup(context.Background(), Options{
		Getenv:        env("OTEL_SDK_DISABLED", "true", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"),
		SpanExporter:  exp,
		MetricsListen: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	_, g := tel.StartGeneration(context.Background(), GenerationStart{Model: "m", Level: LevelRequest})
	g.End()
	tel.ForceFlush(context.Background())
	if tel.Exporting() || tel.MetricsAddr() != nil || len(exp.GetSpans()) != 0 {
		t.Fatalf("OTEL_SDK_DISABLED: exporting %v, metrics at %v, %d spans", tel.Exporting(), tel.MetricsAddr(), len(exp.GetSpans()))
	}
}

func TestSetupEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		wantErr string
	}{
		{"bad sampler", []string{"OTEL_TRACES_SAMPLER", "sometimes"}, "OTEL_TRACES_SAMPLER"},
		{"bad ratio", []string{"OTEL_TRACES_SAMPLER", "traceidratio", "OTEL_TRACES_SAMPLER_ARG", "2"}, "OTEL_TRACES_SAMPLER_ARG"},
		{"bad exporter", []string{"OTEL_TRACES_EXPORTER", "zipkin"}, "OTEL_TRACES_EXPORTER"},
		{"bad metrics exporter", []string{"OTEL_METRICS_EXPORTER", "otlp,none"}, "OTEL_METRICS_EXPORTER"},
		{"bad disabled", []string{"OTEL_SDK_DISABLED", "yes please"}, "OTEL_SDK_DISABLED"},
		{"bad resource", []string{"OTEL_RESOURCE_ATTRIBUTES", "novalue"}, "OTEL_RESOURCE_ATTRIBUTES"},
		{"http protocol", []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{"fine", []string{"OTEL_TRACES_SAMPLER", "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG", "0.5"}, ""},
	}
	for _, tt := range tests {
		tel, err := Setup(context.Background(), Options{Getenv: env(tt.env...), SpanExporter: tracetest.NewNoopExporter()})
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			} else {
				tel.Shutdown(context.Background())
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: err %v, want one naming %s", tt.name, err, tt.wantErr)
		}
	}
}

func TestSampler(t *testing.T) {
	sampled := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled, Remote: true})
	unsampled := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{2}, SpanID: trace.SpanID{2}, Remote: true})
	tests := []struct {
		env    []string
		parent trace.SpanContext
		want   bool
	}{
		{nil, trace.SpanContext{}, true},
		{nil, unsampled, false}, // parent-based: the caller decided
		{[]string{"OTEL_TRACES_SAMPLER", "always_on"}, unsampled, true},
		{[]string{"OTEL_TRACES_SAMPLER", "always_off"}, sampled, false},
		{[]string{"OTEL_TRACES_SAMPLER", "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG", "0"}, sampled, true},
		{[]string{"OTEL_TRACES_SAMPLER", "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG", "0"}, trace.SpanContext{}, false},
		{[]string{"OTEL_TRACES_SAMPLER", "parentbased_always_off"}, trace.SpanContext{}, false},
	}
	for _, tt := range tests {
		h := newHarness(t, env(tt.env...))
		ctx := trace.ContextWithRemoteSpanContext(context.Background(), tt.parent)
		_, g := h.tel.StartGeneration(ctx, GenerationStart{Model: "m", Level: LevelRequest})
		if got := g.Span().IsRecording(); got != tt.want {
			t.Errorf("%v, parent sampled %v: recording %v, want %v", tt.env, tt.parent.IsSampled(), got, tt.want)
		}
		g.End()
	}
}

func TestServiceName(t *testing.T) {
	tests := []struct {
		env  []string
		want string
	}{
		{nil, "corelm-test"},
		{[]string{"OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,deployment.environment=ci"}, "from-attrs"},
		{[]string{"OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs", "OTEL_SERVICE_NAME", "from-name"}, "from-name"},
	}
	for _, tt := range tests {
		h := newHarness(t, env(tt.env...))
		if got := h.tel.ServiceName(); got != tt.want {
			t.Errorf("%v: service %q, want %q", tt.env, got, tt.want)
		}
	}
}

// blockingExporter holds every export until released.
type blockingExporter struct {
	release chan struct{}
	got     chan int
}

func (e *blockingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.got <- len(spans)
	<-e.release
	return nil
}

func (e *blockingExporter) Shutdown(context.Context) error { return nil }

func TestSpanQueueDropsAndCounts(t *testing.T) {
	exp := &blockingExporter{release: make(chan struct{}), got: make(chan int, 16)}
	reader := sdkmetric.NewManualReader()
	tel, err := Setup(context.Background(), Options{Getenv: env(), SpanExporter: exp, MetricReader: reader,
		SpanQueue: 4, SpanBatch: 4, SpanDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tr := tel.Tracer("test")
	for range 4 {
		_, s := tr.Start(context.Background(), "x")
		s.End()
	}
	if n := <-exp.got; n != 4 { // the first batch is in the (stuck) exporter
		t.Fatalf("first batch of %d", n)
	}
	done := make(chan struct{})
	go func() { // ending spans never waits, even with the exporter stuck
		defer close(done)
		for range 10 {
			_, s := tr.Start(context.Background(), "y")
			s.End()
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ending a span blocked on a full queue")
	}
	if d := tel.DroppedSpans(); d != 10 {
		t.Errorf("dropped %d, want 10", d)
	}
	var rm metricdata.ResourceMetrics
	reader.Collect(context.Background(), &rm)
	found := false
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "corelm.telemetry.spans.dropped" {
				found = m.Data.(metricdata.Sum[int64]).DataPoints[0].Value == 10
			}
		}
	}
	if !found {
		t.Error("corelm.telemetry.spans.dropped does not say 10")
	}
	close(exp.release)
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if tel.spans.exported.Load() != 4 || tel.spans.pending.Load() != 0 {
		t.Errorf("exported %d, pending %d", tel.spans.exported.Load(), tel.spans.pending.Load())
	}
}

func TestMetricsEndpoint(t *testing.T) {
	tel, err := Setup(context.Background(), Options{ServiceName: "corelm-inference", Getenv: env(), MetricsListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	// The loader of serve-all shares the endpoint.
	loader, err := Setup(context.Background(), Options{ServiceName: "corelm-loader", Getenv: env(), ShareMetrics: tel})
	if err != nil {
		t.Fatal(err)
	}
	defer loader.Shutdown(context.Background())
	loader.RecordLoad(context.Background(), "stories", time.Second, 1234, nil)
	fs := newFakeSched(tel.SchedulerHooks("stories"))
	defer tel.RegisterModel("stories", func() sched.Stats { return sched.Stats{KVBudget: 77} }, nil)()
	_, g := tel.StartGeneration(context.Background(), GenerationStart{Model: "stories"})
	id := fs.submit(g, 4, 0)
	fs.step(0, 4, time.Millisecond, nil, id)
	fs.first(id)
	fs.step(1, 0, time.Millisecond, nil, id)
	fs.finish(id, sched.Final{Reason: sched.FinishStop, Usage: sched.Usage{PromptTokens: 4, CompletionTokens: 2}})
	g.End()

	resp, err := http.Get("http://" + tel.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`gen_ai_server_request_duration_seconds_count{gen_ai_operation_name="text_completion",gen_ai_provider_name="corelm",gen_ai_request_model="stories"`,
		"gen_ai_server_time_to_first_token_seconds_bucket",
		"gen_ai_server_time_per_output_token_seconds_sum",
		`corelm_tokens_total{gen_ai_operation_name="text_completion",gen_ai_provider_name="corelm",gen_ai_request_model="stories",gen_ai_token_type="output"`,
		`corelm_kv_cache_budget_bytes{gen_ai_request_model="stories"`,
		"corelm_scheduler_step_duration_seconds_bucket",
		`corelm_loader_load_bytes_total{corelm_model="stories"`,
		"go_goroutines",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

func TestLogHandler(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "json", slog.LevelDebug)
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0xab}, SpanID: trace.SpanID{0xcd}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	log.With("request_id", "r1").InfoContext(ctx, "finished", "completion_tokens", 3)
	log.Info("no trace")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["trace_id"] != sc.TraceID().String() || rec["span_id"] != sc.SpanID().String() || rec["request_id"] != "r1" {
		t.Errorf("record %v", rec)
	}
	if strings.Contains(lines[1], "trace_id") {
		t.Errorf("untraced record has a trace id: %s", lines[1])
	}
	buf.Reset()
	text, _ := NewLogger(&buf, "text", slog.LevelWarn)
	text.InfoContext(ctx, "hidden")
	text.WarnContext(ctx, "shown")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, "trace_id="+sc.TraceID().String()) {
		t.Errorf("text log: %q", out)
	}
	if _, err := NewLogger(&buf, "yaml", slog.LevelInfo); err == nil {
		t.Error("yaml log format accepted")
	}
}
