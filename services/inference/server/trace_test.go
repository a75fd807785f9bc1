package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/syncbuf"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/internal/telemetry"
)

// traced is an in-process server with the embedded model whose telemetry
// exports to memory and whose log is kept.
type traced struct {
	client corelmv1.InferenceServiceClient
	tel    *telemetry.Telemetry
	spans  *tracetest.InMemoryExporter
	reader *sdkmetric.ManualReader
	logs   *syncbuf.Buffer
	n      int // calls made, for distinct trace ids
}

func newTraced(t *testing.T, tr Tracing) *traced {
	t.Helper()
	x := &traced{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader(), logs: &syncbuf.Buffer{}}
	var err error
	x.tel, err = telemetry.Setup(t.Context(), telemetry.Options{ServiceName: "corelm-inference",
		Getenv: func(string) string { return "" }, SpanExporter: x.spans, MetricReader: x.reader})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.tel.Shutdown(context.Background()) })
	log, err := telemetry.NewLogger(x.logs, "json", nil)
	if err != nil {
		t.Fatal(err)
	}
	tr.Telemetry = x.tel
	x.client, _ = serveInProcess(t, Options{Threads: 1, Tracing: tr, Logger: log})
	return x
}

// generate runs a greedy generation of 4 tokens in a trace of the
// client's (traceparent), with the metadata pairs md, and returns the
// trace id, the client's span id and the final frame.
func (x *traced) generate(t *testing.T, md ...string) (trace.TraceID, trace.SpanID, *corelmv1.GenerateFinal) {
	t.Helper()
	x.n++
	tid := trace.TraceID{0xc0, 0x4e, 0x1a, byte(x.n)}
	sid := trace.SpanID{0xc1, byte(x.n)}
	ctx := metadata.AppendToOutgoingContext(t.Context(),
		append([]string{"traceparent", fmt.Sprintf("00-%s-%s-01", tid, sid)}, md...)...)
	temp := float32(0)
	stream, err := x.client.GenerateStream(ctx, &corelmv1.GenerateStart{ModelId: "stories", RequestId: fmt.Sprintf("r%d", x.n),
		Prompt: &corelmv1.GenerateStart_Text{Text: "Once upon a time"}, MaxTokens: 4, Sampling: &corelmv1.SamplingParams{Temperature: &temp}})
	if err != nil {
		t.Fatal(err)
	}
	final := lastFinal(stream)
	if final == nil || final.GetErrorCode() != 0 {
		t.Fatalf("generation ended with %v", final)
	}
	return tid, sid, final
}

// trace returns the spans of one trace once its RPC span has ended: the
// last to end, a moment after the client has seen the call's status.
func (x *traced) trace(t *testing.T, id trace.TraceID) tracetest.SpanStubs {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := x.tel.ForceFlush(t.Context()); err != nil {
			t.Fatal(err)
		}
		var out tracetest.SpanStubs
		rpc := false
		for _, s := range x.spans.GetSpans() {
			if s.SpanContext.TraceID() == id {
				out = append(out, s)
				rpc = rpc || s.SpanKind == trace.SpanKindServer
			}
		}
		if rpc || time.Now().After(deadline) {
			return out
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func countNamed(spans tracetest.SpanStubs) map[string]int {
	n := map[string]int{}
	for _, s := range spans {
		n[s.Name]++
	}
	return n
}

// TestTraceLevels: a generation's spans follow the level its call asks for
// (metadata corelm-trace-level), else the server's, never above the
// server's maximum; a value that does not parse is ignored.
func TestTraceLevels(t *testing.T) {
	const layers = 5 // the stories model's
	tests := []struct {
		name        string
		level, max  telemetry.Level
		md          string // the call's corelm-trace-level ("": none)
		gen         bool
		steps, lays bool
	}{
		{"server default request", telemetry.LevelRequest, telemetry.LevelLayer, "", true, false, false},
		{"call asks for layer", telemetry.LevelRequest, telemetry.LevelLayer, "layer", true, true, true},
		{"call asks for step", telemetry.LevelRequest, telemetry.LevelLayer, "step", true, true, false},
		{"call lowers to off", telemetry.LevelStep, telemetry.LevelLayer, "off", false, false, false},
		{"layer capped at step", telemetry.LevelRequest, telemetry.LevelStep, "layer", true, true, false},
		{"layer capped at request", telemetry.LevelRequest, telemetry.LevelRequest, "layer", true, false, false},
		{"server off", telemetry.LevelOff, telemetry.LevelLayer, "", false, false, false},
		{"server default capped", telemetry.LevelLayer, telemetry.LevelRequest, "", true, false, false},
		{"typo ignored", telemetry.LevelStep, telemetry.LevelLayer, "layers", true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newTraced(t, Tracing{Level: tt.level, Max: tt.max})
			var md []string
			if tt.md != "" {
				md = []string{telemetry.MetadataKey, tt.md}
			}
			tid, _, final := x.generate(t, md...)
			n := countNamed(x.trace(t, tid))
			if n["corelm.v1.InferenceService/GenerateStream"] != 1 {
				t.Errorf("no RPC span in the client's trace: %v", n)
			}
			if got := n["text_completion stories"] == 1; got != tt.gen {
				t.Errorf("generation span: %v, want %v (%v)", got, tt.gen, n)
			}
			steps := n["prefill"] + n["decode"] + n["prefill+decode"]
			if wantSteps := int(final.GetUsage().GetCompletionTokens()); tt.steps && steps != wantSteps || !tt.steps && steps != 0 {
				t.Errorf("%d step spans, want %v (%d tokens; %v)", steps, tt.steps, wantSteps, n)
			}
			if wantLayers := steps * layers; tt.lays && (n["layer"] != wantLayers || n["attention"] != wantLayers || n["ffn"] != wantLayers) ||
				!tt.lays && n["layer"]+n["attention"]+n["ffn"] != 0 {
				t.Errorf("layer spans %d, attention %d, ffn %d; want %v (%d each)", n["layer"], n["attention"], n["ffn"], tt.lays, wantLayers)
			}
		})
	}
}

// TestTraceContentAndLogs: prompts and outputs are on the span only when
// asked (the call's metadata or the server's --trace-content); the
// generation's log lines carry the trace, the request and the model, and
// the "finished" one the usage and speed.
func TestTraceContentAndLogs(t *testing.T) {
	for _, tt := range []struct {
		name    string
		server  bool
		md      []string
		content bool
	}{
		{"not asked", false, nil, false},
		{"call asks", false, []string{ContentMetadataKey, "true"}, true},
		{"call says false", false, []string{ContentMetadataKey, "false"}, false},
		{"server records all", true, nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			x := newTraced(t, Tracing{Level: telemetry.LevelRequest, Max: telemetry.LevelLayer, Content: tt.server})
			tid, _, final := x.generate(t, tt.md...)
			var gen *tracetest.SpanStub
			spans := x.trace(t, tid)
			for i := range spans {
				if spans[i].Name == "text_completion stories" {
					gen = &spans[i]
				}
			}
			if gen == nil {
				t.Fatalf("no generation span: %v", countNamed(spans))
			}
			attrs := map[string]string{}
			for _, kv := range gen.Attributes {
				attrs[string(kv.Key)] = kv.Value.String()
			}
			in, out := attrs["gen_ai.input.messages"], attrs["gen_ai.output.messages"]
			if tt.content {
				if !strings.Contains(in, `"content":"Once upon a time"`) || !strings.Contains(in, `"role":"user"`) ||
					!strings.Contains(out, `"role":"assistant"`) || !strings.Contains(out, `"finish_reason":"length"`) {
					t.Errorf("content not recorded as asked: input %s, output %s", in, out)
				}
			} else if in != "" || out != "" {
				t.Errorf("content recorded unasked: input %q, output %q", in, out)
			}

			// The log: "generation finished" stamped with the generation span.
			var finished map[string]any
			sc := bufio.NewScanner(strings.NewReader(x.logs.String()))
			for sc.Scan() {
				var rec map[string]any
				if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "generation finished" {
					finished = rec
				}
			}
			if finished == nil {
				t.Fatalf("no \"generation finished\" line:\n%s", x.logs.String())
			}
			u := final.GetUsage()
			for k, v := range map[string]any{
				"trace_id": tid.String(), "span_id": gen.SpanContext.SpanID().String(), "request_id": "r1", "model_id": "stories",
				"finish_reason": "length", "prompt_tokens": float64(u.GetPromptTokens()), "completion_tokens": float64(u.GetCompletionTokens()),
			} {
				if finished[k] != v {
					t.Errorf("finished line: %s = %v, want %v", k, finished[k], v)
				}
			}
			for _, k := range []string{"ttft_ms", "tok_s"} {
				if v, _ := finished[k].(float64); v <= 0 {
					t.Errorf("finished line: %s = %v, want > 0", k, finished[k])
				}
			}
		})
	}
}

// TestUnknownModelTraced: a generation for a model that is not served
// (and no loader to ask) is NotFound, its span says so, and it is not in
// the request metrics (every unknown id would be a series of its own).
func TestUnknownModelTraced(t *testing.T) {
	x := newTraced(t, Tracing{Level: telemetry.LevelRequest, Max: telemetry.LevelLayer})
	tid := trace.TraceID{0xbe, 0xef}
	ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", fmt.Sprintf("00-%s-%s-01", tid, trace.SpanID{1}))
	stream, err := x.client.GenerateStream(ctx, &corelmv1.GenerateStart{ModelId: "nope", Prompt: &corelmv1.GenerateStart_Text{Text: "x"}})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unknown model: %v, want NotFound", err)
	}
	spans := x.trace(t, tid)
	var found bool
	for _, s := range spans {
		if s.Name == "text_completion nope" {
			found = true
			if s.Status.Code.String() != "Error" {
				t.Errorf("generation span status %v, want Error", s.Status)
			}
		}
	}
	if !found {
		t.Errorf("no generation span: %v", countNamed(spans))
	}
	var rm metricdata.ResourceMetrics
	if err := x.reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == "gen_ai.server.request.duration" {
				for _, p := range h.DataPoints {
					if v, _ := p.Attributes.Value("gen_ai.request.model"); v.AsString() == "nope" {
						t.Errorf("request duration recorded for the unknown model: %v", p.Attributes)
					}
				}
			}
		}
	}
}
