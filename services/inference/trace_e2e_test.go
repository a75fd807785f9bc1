package main

// End-to-end tests of the telemetry: the two binaries exporting their
// traces to a real Jaeger and serving Prometheus metrics.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/corelm/corelm/internal/jaegertest"
	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/models"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// tracedStack is a loader and an inference service with their telemetry:
// env is added to both processes' environment, and both serve /metrics.
// The loader publishes "warm" before the inference service starts (it is
// ready once a model is served); "stories" is in the loader's source
// directory, loaded when a request asks for it.
type tracedStack struct {
	loader, inference *servicetest.Proc
	client            corelmv1.InferenceServiceClient
	loaderClient      corelmv1.LoaderServiceClient
}

func startTracedStack(t *testing.T, env []string, inferenceArgs ...string) *tracedStack {
	t.Helper()
	src, shm := t.TempDir(), t.TempDir()
	for _, name := range []string{"stories.gguf", "warm.gguf"} {
		if err := os.WriteFile(filepath.Join(src, name), models.Stories, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) *servicetest.Proc {
		pkg := map[string]string{"loader": "../loader", "inference": "."}[name]
		cmd := exec.Command(servicetest.Binary(t, pkg), append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"}, args...)...)
		cmd.Env = append(append(os.Environ(), "CORELM_THREADS=1"), env...)
		return servicetest.Start(t, cmd, servicetest.ServingAddr)
	}
	st := &tracedStack{loader: run("loader", "--source-dir", src, "--shm-dir", shm)}
	st.loaderClient = corelmv1.NewLoaderServiceClient(st.loader.Conn)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	stream, err := st.loaderClient.LoadModel(ctx, &corelmv1.LoadModelRequest{ModelId: "warm", Path: "warm.gguf"})
	if err != nil {
		t.Fatal(err)
	}
	if err := servicetest.RecvAll(stream.Recv, func(*corelmv1.LoadModelResponse) {}); err != nil {
		t.Fatal(err)
	}
	st.inference = run("inference", append([]string{"--loader", st.loader.Addr}, inferenceArgs...)...)
	st.client = corelmv1.NewInferenceServiceClient(st.inference.Conn)
	return st
}

// logLines are a process's JSON log records with msg.
func logLines(p *servicetest.Proc, msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.Logs()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// metricsURL is the /metrics address a process logged at start.
func metricsURL(t *testing.T, p *servicetest.Proc) string {
	t.Helper()
	lines := logLines(p, "serving metrics")
	if len(lines) != 1 {
		t.Fatalf("%d \"serving metrics\" lines:\n%s", len(lines), p.Logs())
	}
	return lines[0]["addr"].(string)
}

// traceparent is a new client trace: the W3C header and its ids.
func traceparent(t *testing.T) (header, traceID, spanID string) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	traceID, spanID = hex.EncodeToString(b[:16]), hex.EncodeToString(b[16:])
	return "00-" + traceID + "-" + spanID + "-01", traceID, spanID
}

// TestE2ETraceInJaeger runs the two binaries exporting to a real Jaeger
// and reads back the trace of a generation asked for at layer level under
// a client's traceparent, for a model it made the loader load: the
// client's trace id; the RPC span, the generation span with its GenAI
// attributes equal to what the response says, a span per step with the
// stories model's 5 layers each (attention and feed-forward under each),
// and the loader's validate, pack, checksum and publish spans under the
// load the request caused. A second generation at request level has no
// step spans. The log lines of the generation carry its trace.
func TestE2ETraceInJaeger(t *testing.T) {
	const layers = 5
	j := jaegertest.Start(t)
	st := startTracedStack(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + j.OTLPEndpoint(), "OTEL_METRICS_EXPORTER=none"},
		"--trace-level", "request", "--trace-level-max", "layer")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	tp, traceID, clientSpan := traceparent(t)
	temp, topP, seed := float32(0.8), float32(0.9), uint64(42)
	req := &corelmv1.GenerateStart{ModelId: "stories", RequestId: "traced", MaxTokens: 6,
		Prompt:   &corelmv1.GenerateStart_Text{Text: "Once upon a time"},
		Sampling: &corelmv1.SamplingParams{Temperature: &temp, TopP: &topP, Seed: &seed}}
	r, err := generateStream(metadata.AppendToOutgoingContext(ctx, "traceparent", tp,
		"corelm-trace-level", "layer", "corelm-trace-content", "true"), st.client, req)
	if err != nil || r.final == nil || r.final.GetErrorCode() != 0 {
		t.Fatalf("traced generation: %v, final %v", err, r.final)
	}
	usage := r.final.GetUsage()

	// Read until the generation's steps are all there: its span says how
	// many (corelm.steps), and every step has 1 + 3×layers spans.
	tr, err := j.Trace(ctx, traceID, 1)
	var gen *jaegertest.Span
	for err == nil {
		gens := tr.Named("text_completion stories")
		if len(gens) == 1 {
			gen = gens[0]
			steps, _ := gen.TagInt("corelm.steps")
			// RPC + generation + steps×(step + layers×3) + the load:
			// load model, the LoadModel client and server spans, load,
			// and its 4 stages.
			want := 2 + int(steps)*(1+3*layers) + 8
			if len(tr.Spans) >= want {
				break
			}
			tr, err = j.Trace(ctx, traceID, want)
			continue
		}
		tr, err = j.Trace(ctx, traceID, len(tr.Spans)+1)
	}
	if err != nil {
		t.Fatalf("reading the trace back: %v", err)
	}
	t.Logf("trace %s: %d spans from %d services", traceID, len(tr.Spans), len(tr.Processes))
	if tr.TraceID != traceID {
		t.Errorf("trace id %s, want the client's %s", tr.TraceID, traceID)
	}

	// The RPC span continues the client's span; the generation is under it.
	rpc := tr.SpanByID(gen.Parent())
	if rpc == nil || rpc.OperationName != "corelm.v1.InferenceService/GenerateStream" || rpc.Parent() != clientSpan {
		t.Fatalf("generation's parent %+v, want the GenerateStream server span under the client's %s", rpc, clientSpan)
	}
	if s := tr.Service(gen); s != "corelm-inference" {
		t.Errorf("generation span from service %q", s)
	}
	for k, want := range map[string]string{
		"gen_ai.operation.name": "text_completion", "gen_ai.provider.name": "corelm", "gen_ai.request.model": "stories",
		"gen_ai.request.max_tokens": "6", "gen_ai.request.seed": "42", "corelm.request_id": "traced", "corelm.trace_level": "layer",
		"gen_ai.usage.input_tokens":     fmt.Sprint(usage.GetPromptTokens()),
		"gen_ai.usage.output_tokens":    fmt.Sprint(usage.GetCompletionTokens()),
		"corelm.cached_tokens":          fmt.Sprint(usage.GetCachedTokens()),
		"corelm.queue_ns":               fmt.Sprint(r.final.GetTimings().GetQueueNs()),
		"corelm.time_to_first_token_ns": fmt.Sprint(r.final.GetTimings().GetTimeToFirstTokenNs()),
	} {
		if got := gen.TagString(k); got != want {
			t.Errorf("generation tag %s = %q, want %q", k, got, want)
		}
	}
	for k, want := range map[string]float32{"gen_ai.request.temperature": temp, "gen_ai.request.top_p": topP} {
		var got float64
		fmt.Sscan(gen.TagString(k), &got)
		if math.Abs(got-float64(want)) > 1e-6 {
			t.Errorf("generation tag %s = %q, want %v", k, gen.TagString(k), want)
		}
	}
	wantReason := map[corelmv1.FinishReason]string{corelmv1.FinishReason_FINISH_REASON_LENGTH: "length",
		corelmv1.FinishReason_FINISH_REASON_STOP: "stop"}[r.final.GetFinishReason()]
	if got := gen.TagString("gen_ai.response.finish_reasons"); wantReason == "" || !strings.Contains(got, `"`+wantReason+`"`) {
		t.Errorf("finish reasons %q, response says %v", got, r.final.GetFinishReason())
	}
	if in, out := gen.TagString("gen_ai.input.messages"), gen.TagString("gen_ai.output.messages"); !strings.Contains(in, "Once upon a time") ||
		!strings.Contains(out, jsonString(t, r.text)) {
		t.Errorf("content asked for: input %s, output %s (generated %q)", in, out, r.text)
	}
	if gen.Event("first_token") == nil {
		t.Error("no first_token event")
	}

	// request → steps → layers → attention, ffn.
	steps := tr.Find(func(s *jaegertest.Span) bool {
		return s.Parent() == gen.SpanID && (s.OperationName == "prefill" || s.OperationName == "decode" || s.OperationName == "prefill+decode")
	})
	nsteps, _ := gen.TagInt("corelm.steps")
	if int64(len(steps)) != nsteps || len(steps) != int(usage.GetCompletionTokens()) {
		t.Errorf("%d step spans, the generation says %d steps, %d tokens", len(steps), nsteps, usage.GetCompletionTokens())
	}
	prefills := 0
	for _, s := range steps {
		if s.OperationName == "prefill" {
			prefills++
			if n, _ := s.TagInt("corelm.step.prefill_tokens"); n != int64(usage.GetPromptTokens()) {
				t.Errorf("prefill step of %d tokens, the prompt has %d", n, usage.GetPromptTokens())
			}
		}
		ls := tr.Children(s.SpanID)
		if len(ls) != layers {
			t.Fatalf("step %s: %d layer spans, want %d", s.OperationName, len(ls), layers)
		}
		seen := map[int64]bool{}
		for _, l := range ls {
			i, _ := l.TagInt("corelm.layer")
			seen[i] = true
			kids := tr.Children(l.SpanID)
			if l.OperationName != "layer" || len(kids) != 2 || kids[0].OperationName == kids[1].OperationName {
				t.Fatalf("%s %d with %d children", l.OperationName, i, len(kids))
			}
			for _, k := range kids {
				if k.OperationName != "attention" && k.OperationName != "ffn" {
					t.Errorf("layer child %q", k.OperationName)
				}
			}
		}
		if len(seen) != layers || !seen[0] || !seen[layers-1] {
			t.Errorf("step %s: layers %v", s.OperationName, seen)
		}
	}
	if prefills != 1 {
		t.Errorf("%d prefill steps, want 1", prefills)
	}

	// The load the request caused: the loader's spans in this trace,
	// descendants of the generation.
	under := func(s *jaegertest.Span, ancestor string) bool {
		for p := s.Parent(); p != ""; {
			if p == ancestor {
				return true
			}
			ps := tr.SpanByID(p)
			if ps == nil {
				return false
			}
			p = ps.Parent()
		}
		return false
	}
	loads := tr.Named("load")
	if len(loads) != 1 || tr.Service(loads[0]) != "corelm-loader" || !under(loads[0], gen.SpanID) {
		t.Fatalf("%d loader load spans in the trace (want 1, from corelm-loader, under the generation)", len(loads))
	}
	for _, name := range []string{"validate", "pack", "checksum", "publish"} {
		s := tr.Named(name)
		if len(s) != 1 || s[0].Parent() != loads[0].SpanID || tr.Service(s[0]) != "corelm-loader" {
			t.Errorf("loader %s span: %d, want one under the load", name, len(s))
		}
	}
	if m := tr.Named("map model"); len(m) == 1 && !under(m[0], gen.SpanID) {
		t.Error("the mapping of the generation is in the trace but not under it")
	}
	for _, call := range tr.Named("corelm.v1.LoaderService/LoadModel") {
		if !under(call, gen.SpanID) {
			t.Errorf("LoadModel span (%s) not under the generation", tr.Service(call))
		}
	}

	// At request level: the generation, no steps.
	tp2, traceID2, _ := traceparent(t)
	if _, err := generateStream(metadata.AppendToOutgoingContext(ctx, "traceparent", tp2, "corelm-trace-level", "request"),
		st.client, greedy("Once upon a time", 4)); err != nil {
		t.Fatal(err)
	}
	tr2, err := j.Trace(ctx, traceID2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if g := tr2.Named("text_completion stories"); len(g) != 1 || g[0].TagString("corelm.trace_level") != "request" {
		t.Errorf("request level: %d generation spans", len(g))
	}
	for _, name := range []string{"prefill", "decode", "prefill+decode", "layer"} {
		if n := len(tr2.Named(name)); n != 0 {
			t.Errorf("request level: %d %s spans", n, name)
		}
	}

	// The log joins the trace: the finished line and the on-demand load.
	var finished map[string]any
	for _, rec := range logLines(st.inference, "generation finished") {
		if rec["request_id"] == "traced" {
			finished = rec
		}
	}
	if finished == nil {
		t.Fatalf("no \"generation finished\" line for the request:\n%s", st.inference.Logs())
	}
	for k, want := range map[string]any{"trace_id": traceID, "span_id": gen.SpanID, "model_id": "stories",
		"prompt_tokens": float64(usage.GetPromptTokens()), "completion_tokens": float64(usage.GetCompletionTokens()), "finish_reason": wantReason} {
		if finished[k] != want {
			t.Errorf("finished line: %s = %v, want %v", k, finished[k], want)
		}
	}
	if lines := logLines(st.inference, "loading model on demand"); len(lines) != 1 || lines[0]["trace_id"] != traceID {
		t.Errorf("on-demand load log lines %v, want one in the trace %s", lines, traceID)
	}
	if lines := logLines(st.loader, "published"); len(lines) != 2 || lines[1]["trace_id"] != traceID {
		t.Errorf("loader's published lines %v, want the second in the trace %s", lines, traceID)
	}
}

func jsonString(t *testing.T, s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Trim(string(b), `"`)
}

// TestE2EMetrics scrapes both services' /metrics after one generation (of
// a model the inference service had the loader load): the GenAI server
// histograms, the token counters equal to the response's usage, the
// scheduler's gauges, and the loader's load duration and bytes.
func TestE2EMetrics(t *testing.T) {
	st := startTracedStack(t, nil)
	r, err := generateStream(t.Context(), st.client, greedy("Once upon a time", 5))
	if err != nil || r.final.GetErrorCode() != 0 {
		t.Fatalf("generation: %v, %v", err, r.final)
	}
	u := r.final.GetUsage()
	// otelgrpc records the call's duration after the status has reached
	// the client, so the scrape waits for it.
	m := servicetest.ScrapeUntil(t, metricsURL(t, st.inference), 10*time.Second, func(m servicetest.Metrics) bool {
		_, _, a := m.Histogram("rpc_server_call_duration_seconds")
		_, _, b := m.Histogram("rpc_server_duration_milliseconds")
		return a+b > 0
	})
	model := []string{"gen_ai_request_model", "stories"}
	for _, h := range []string{"gen_ai_server_request_duration_seconds", "gen_ai_server_time_to_first_token_seconds", "gen_ai_server_time_per_output_token_seconds"} {
		if count, sum, n := m.Histogram(h, model...); count != 1 || sum <= 0 || n != 1 {
			t.Errorf("%s: count %d, sum %v in %d series; want one generation", h, count, sum, n)
		}
	}
	if count, _, _ := m.Histogram("corelm_scheduler_step_duration_seconds", model...); count < uint64(u.GetCompletionTokens()) {
		t.Errorf("%d steps recorded for %d tokens", count, u.GetCompletionTokens())
	}
	for typ, want := range map[string]int32{"input": u.GetPromptTokens(), "output": u.GetCompletionTokens()} {
		if v, n := m.Value("corelm_tokens_total", append(model, "gen_ai_token_type", typ)...); n != 1 || v != float64(want) {
			t.Errorf("%s tokens %v (%d series), want %d", typ, v, n, want)
		}
	}
	// Idle again: nothing queued, no sequence, no KV cache held.
	for _, name := range []string{"corelm_scheduler_queue_depth", "corelm_scheduler_active_sequences", "corelm_kv_cache_usage_bytes"} {
		if v, n := m.Value(name, model...); n != 1 || v != 0 {
			t.Errorf("%s = %v (%d series), want 0", name, v, n)
		}
	}
	if v, n := m.Value("corelm_kv_cache_budget_bytes", model...); n != 1 || v <= 0 {
		t.Errorf("KV budget %v (%d series), want the model's (> 0)", v, n)
	}
	if _, n := m.Value("corelm_kv_cache_budget_bytes", "gen_ai_request_model", "warm"); n != 1 {
		t.Error("no KV budget gauge for the other model served")
	}
	if _, _, n := m.Histogram("rpc_server_call_duration_seconds"); n == 0 {
		if _, _, n := m.Histogram("rpc_server_duration_milliseconds"); n == 0 {
			t.Error("no otelgrpc server metrics")
		}
	}

	published, err := st.loaderClient.ListModels(t.Context(), &corelmv1.LoaderServiceListModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	for _, pm := range published.GetModels() {
		if pm.GetModelId() == "stories" {
			size = pm.GetSizeBytes()
		}
	}
	lm := servicetest.Scrape(t, metricsURL(t, st.loader))
	if count, sum, n := lm.Histogram("corelm_loader_load_duration_seconds", "corelm_model", "stories"); count != 1 || sum <= 0 || n != 1 {
		t.Errorf("loader load duration: count %d, sum %v (%d series)", count, sum, n)
	}
	if v, n := lm.Value("corelm_loader_load_bytes_total", "corelm_model", "stories"); n != 1 || v != float64(size) || size == 0 {
		t.Errorf("loader bytes %v (%d series), the published file has %d", v, n, size)
	}
	// The generation read the weights through the inference service's
	// mapping of the published file: they are resident (whole pages, the
	// last one past the end of the file), in whatever pages the test's
	// directory gives.
	pages := (size + int64(os.Getpagesize()) - 1) / int64(os.Getpagesize()) * int64(os.Getpagesize())
	resident, n := m.Value("corelm_model_resident_bytes", model...)
	if huge, nh := m.Value("corelm_model_resident_huge_pages_bytes", model...); n != 1 || nh != 1 || resident <= 0 || resident > float64(pages) || huge < 0 || huge > resident {
		t.Errorf("model resident %v bytes (%d series), %v in huge pages (%d series); the published file has %d", resident, n, huge, nh, size)
	}
}
