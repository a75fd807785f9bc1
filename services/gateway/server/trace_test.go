package server

import (
	"context"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/corelm/corelm/internal/servicetest"
	inference "github.com/corelm/corelm/services/inference/server"
	"github.com/corelm/corelm/services/internal/telemetry"
)

func newTelemetry(t *testing.T, service string) (*telemetry.Telemetry, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tel, err := telemetry.Setup(t.Context(), telemetry.Options{ServiceName: service, Getenv: func(string) string { return "" },
		SpanExporter: exp, SpanDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) })
	return tel, exp
}

// TestTraceParent: the trace of an HTTP request's traceparent header goes
// on through the gateway's HTTP span, its gRPC client span and into the
// inference service's spans, each the parent of the next.
func TestTraceParent(t *testing.T) {
	gwTel, gwSpans := newTelemetry(t, "corelm-gateway")
	infTel, infSpans := newTelemetry(t, "corelm-inference")
	conn, stop := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return inference.Serve(ctx, lis, inference.Config{ModelFile: inference.EmbeddedModel, ModelID: "stories",
			Options: inference.Options{Threads: 1, Tracing: inference.Tracing{Telemetry: infTel, Level: telemetry.LevelRequest, Max: telemetry.LevelRequest}}})
	})
	gw, err := New(Config{Inference: conn.Target(), Telemetry: gwTel})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(gw)
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	resp := post(t, ts.URL+"/v1/completions", map[string]any{"model": "stories", "prompt": prompt, "max_tokens": 4},
		"traceparent", "00-"+traceID+"-"+parentID+"-01")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	resp.Body.Close()
	ts.Close()
	gw.Close()
	stop()
	// The gRPC client span ends when the gateway's stream learns the call
	// is over, which may be just after the HTTP response: wait for it.
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	var httpSpan, clientSpan, serverSpan sdktrace.ReadOnlySpan
	for deadline := time.Now().Add(10 * time.Second); ; {
		gwTel.ForceFlush(t.Context())
		infTel.ForceFlush(t.Context())
		clear(byID)
		httpSpan, clientSpan, serverSpan = nil, nil, nil
		for _, s := range append(gwSpans.GetSpans().Snapshots(), infSpans.GetSpans().Snapshots()...) {
			byID[s.SpanContext().SpanID()] = s
			switch {
			case s.Name() == "POST /v1/completions":
				httpSpan = s
			case s.SpanKind() == trace.SpanKindClient && strings.HasSuffix(s.Name(), "/GenerateStream"):
				clientSpan = s
			case s.SpanKind() == trace.SpanKindServer && strings.HasSuffix(s.Name(), "/GenerateStream"):
				serverSpan = s
			}
		}
		if httpSpan != nil && clientSpan != nil && serverSpan != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if httpSpan == nil || clientSpan == nil || serverSpan == nil {
		t.Fatalf("spans: http %v, client %v, server %v (of %d)", httpSpan != nil, clientSpan != nil, serverSpan != nil, len(byID))
	}
	for _, s := range []sdktrace.ReadOnlySpan{httpSpan, clientSpan, serverSpan} {
		if s.SpanContext().TraceID().String() != traceID {
			t.Errorf("%s: trace %s, want %s", s.Name(), s.SpanContext().TraceID(), traceID)
		}
	}
	if httpSpan.Parent().SpanID().String() != parentID || clientSpan.Parent().SpanID() != httpSpan.SpanContext().SpanID() ||
		serverSpan.Parent().SpanID() != clientSpan.SpanContext().SpanID() {
		t.Errorf("parents: http %s, client %s, server %s", httpSpan.Parent().SpanID(), clientSpan.Parent().SpanID(), serverSpan.Parent().SpanID())
	}
	var children int
	for _, s := range byID {
		if s.Parent().SpanID() == serverSpan.SpanContext().SpanID() {
			children++
		}
	}
	if children == 0 {
		t.Error("the inference call's span has no generation span under it")
	}
}
