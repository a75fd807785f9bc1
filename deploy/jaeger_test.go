package deploy

import (
	"context"
	"os"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/corelm/corelm/internal/jaegertest"
)

// TestJaegerConfig runs docker-compose's Jaeger configuration through the
// pinned Jaeger release (the binary the image's tag is built from), on
// loopback, and checks that a span sent over OTLP/gRPC comes back from the
// query API: the file compose mounts is one this Jaeger accepts and serves.
func TestJaegerConfig(t *testing.T) {
	cfg, err := os.ReadFile("jaeger/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	j := jaegertest.StartConfig(t, string(cfg))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(j.OTLPEndpoint()))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	_, span := tp.Tracer("deploy-test").Start(ctx, "compose-jaeger-check")
	span.End()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	tr, err := j.Trace(ctx, span.SpanContext().TraceID().String(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.Named("compose-jaeger-check"); len(got) != 1 {
		t.Fatalf("spans named compose-jaeger-check: %d, want 1", len(got))
	}
}
