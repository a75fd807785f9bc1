package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/internal/telemetry"
	"github.com/corelm/corelm/services/loader/internal/loadertest"
)

// TestLoadByIDTraced: a LoadModel without a path loads <id>.gguf, then
// answers with the published generation; a model with no file is
// NotFound. The load is in the caller's trace (a load span under the
// LoadModel server span, its validate, pack, checksum and publish stages
// under it, in order) and in the loader metrics.
func TestLoadByIDTraced(t *testing.T) {
	spans, reader := tracetest.NewInMemoryExporter(), sdkmetric.NewManualReader()
	tel, err := telemetry.Setup(t.Context(), telemetry.Options{ServiceName: "corelm-loader",
		Getenv: func(string) string { return "" }, SpanExporter: spans, MetricReader: reader})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	src, shm := loadertest.SourceDir(t), t.TempDir()
	conn, _ := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return Serve(ctx, lis, Config{
			Options:       Options{SourceDir: src, ShmDir: shm, Telemetry: tel, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
			Grace:         5 * time.Second,
			ServerOptions: []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(tel.GRPCOptions()...))},
		})
	})
	client := corelmv1.NewLoaderServiceClient(conn)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if _, err := loadertest.LoadAll(t, client, &corelmv1.LoadModelRequest{ModelId: "stories"}); err != nil {
		t.Fatal(err)
	}
	// Loaded: the same id without a path is the published generation,
	// whatever file it came from.
	again, err := loadertest.LoadAll(t, client, &corelmv1.LoadModelRequest{ModelId: "stories"})
	if err != nil || len(again) != 1 || !again[0].GetReused() || again[0].GetModel().GetSourcePath() != "stories.gguf" {
		t.Fatalf("second load by id: %v, %v; want the published generation, reused", again, err)
	}
	_, err = loadertest.LoadAll(t, client, &corelmv1.LoadModelRequest{ModelId: "nope"})
	loadertest.WantCode(t, err, codes.NotFound, "nope.gguf")

	// A traced load (tiny, by id) from a client's trace.
	stream, err := client.LoadModel(ctx, &corelmv1.LoadModelRequest{ModelId: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	var ready *corelmv1.PublishedModel
	if err := servicetest.RecvAll(stream.Recv, func(r *corelmv1.LoadModelResponse) { ready = r.GetModel() }); err != nil || ready == nil {
		t.Fatalf("traced load: %v, %v", ready, err)
	}
	// The server's RPC span ends just after the client has read the
	// stream's end: wait for it (a few seconds at most) before looking.
	byID := map[trace.SpanID]tracetest.SpanStub{}
	var load tracetest.SpanStub
	for deadline := time.Now().Add(5 * time.Second); ; {
		if err := tel.ForceFlush(t.Context()); err != nil {
			t.Fatal(err)
		}
		clear(byID)
		load = tracetest.SpanStub{}
		for _, s := range spans.GetSpans() {
			if s.SpanContext.TraceID().String() != traceID {
				continue
			}
			byID[s.SpanContext.SpanID()] = s
			if s.Name == "load" {
				load = s
			}
		}
		if _, ok := byID[load.Parent.SpanID()]; (ok && load.SpanContext.IsValid()) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !load.SpanContext.IsValid() {
		t.Fatalf("no load span in the client's trace; spans: %v", names(spans.GetSpans()))
	}
	if rpc := byID[load.Parent.SpanID()]; rpc.Name != "corelm.v1.LoaderService/LoadModel" || rpc.SpanKind != trace.SpanKindServer {
		t.Errorf("load span's parent is %q (%v), want the LoadModel server span", rpc.Name, rpc.SpanKind)
	}
	var stages []tracetest.SpanStub
	for _, s := range byID {
		if s.Parent.SpanID() == load.SpanContext.SpanID() {
			stages = append(stages, s)
		}
	}
	want := []string{"validate", "pack", "checksum", "publish"}
	if len(stages) != len(want) {
		t.Fatalf("load span has %d children %v, want %v", len(stages), names(stages), want)
	}
	for i, name := range want {
		var s *tracetest.SpanStub
		for j := range stages {
			if stages[j].Name == name {
				s = &stages[j]
			}
		}
		if s == nil {
			t.Fatalf("no %s stage among %v", name, names(stages))
		}
		if s.StartTime.Before(load.StartTime) || s.EndTime.After(load.EndTime) {
			t.Errorf("stage %s [%v, %v] outside the load [%v, %v]", name, s.StartTime, s.EndTime, load.StartTime, load.EndTime)
		}
		if i > 0 {
			for _, prev := range stages {
				if prev.Name == want[i-1] && s.StartTime.Before(prev.EndTime) {
					t.Errorf("stage %s starts before %s ends", name, prev.Name)
				}
			}
		}
	}

	// Metrics: two loads published (stories, tiny), their bytes.
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	var loads uint64
	var bytes int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				if m.Name == "corelm.loader.load.duration" {
					for _, p := range d.DataPoints {
						if _, failed := p.Attributes.Value("error.type"); !failed {
							loads += p.Count
						}
					}
				}
			case metricdata.Sum[int64]:
				if m.Name == "corelm.loader.load.bytes" {
					for _, p := range d.DataPoints {
						bytes += p.Value
					}
				}
			}
		}
	}
	if loads != 2 || bytes != again[0].GetModel().GetSizeBytes()+ready.GetSizeBytes() {
		t.Errorf("metrics: %d successful loads, %d bytes; want 2 and %d", loads, bytes, again[0].GetModel().GetSizeBytes()+ready.GetSizeBytes())
	}
}

func names(spans []tracetest.SpanStub) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}
