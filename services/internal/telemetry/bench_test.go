package telemetry

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sched"
)

// BenchmarkStepHook measures what the Step hook costs the scheduler's
// goroutine for one step of an 8B-shaped model (32 layers), one generation
// traced at each level, with the real SDK provider and span queue. Export
// is included: every 64 steps the spans are flushed through the exporter
// (discard: the SDK's work only; otlp: protobuf over loopback gRPC to a
// sink that drops them), so ns/op is the whole cost of a step's telemetry.
// The layer-* variants are the ways of recording the layers that were
// weighed (docs/tracing.md); layer-spans is the one SchedulerHooks uses.
//
//	go test -run - -bench StepHook -benchtime 2000x ./services/internal/telemetry
func BenchmarkStepHook(b *testing.B) {
	const layers = 32
	variants := []struct {
		name   string
		level  Level
		layers func(context.Context, trace.Tracer, *model.StepTrace)
	}{
		{"off", LevelOff, nil},
		{"request", LevelRequest, nil},
		{"step", LevelStep, nil},
		{"layer-spans", LevelLayer, layerSpans},   // layer span + attention and ffn children: 3 spans a layer
		{"layer-flat", LevelLayer, layerFlat},     // attention and ffn spans under the step: 2 a layer
		{"layer-1span", LevelLayer, layerOneSpan}, // one span a layer, the halves as attributes
		{"layer-events", LevelLayer, layerEvents}, // two timed events a layer on the step span
		{"layer-folded", LevelLayer, layerFolded}, // two int64-slice attributes on the step span
	}
	for _, exporter := range []string{"discard", "otlp"} {
		for _, v := range variants {
			b.Run(exporter+"/"+v.name, func(b *testing.B) {
				o := Options{Getenv: env()}
				var sink *otlpSink
				if exporter == "discard" {
					o.SpanExporter = tracetest.NewNoopExporter()
				} else {
					sink = startSink(b)
					o.Getenv = env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+sink.addr, "OTEL_METRICS_EXPORTER", "none")
				}
				tel, err := Setup(context.Background(), o)
				if err != nil {
					b.Fatal(err)
				}
				defer tel.Shutdown(context.Background())
				obs := newObserver(tel, "bench")
				if v.layers != nil {
					obs.layers = v.layers
				}
				fs := newFakeSched(obs.hooks())
				_, g := tel.StartGeneration(context.Background(), GenerationStart{Model: "bench", Level: v.level})
				id := fs.submit(g, 8, 0)
				tr := stepTrace(layers)
				info := &sched.StepInfo{Seqs: 1, DecodeTokens: 1, Duration: 300 * time.Millisecond, Trace: tr, Requests: []uint64{id}}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					fs.hooks.Step(info)
					if i%64 == 63 {
						tel.ForceFlush(context.Background())
					}
				}
				tel.ForceFlush(context.Background())
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*layers), "ns/layer")
				if d := tel.DroppedSpans(); d != 0 {
					b.Errorf("%d spans dropped", d)
				}
				fs.finish(id, sched.Final{})
				g.End()
			})
		}
	}
}

func layerFlat(ctx context.Context, tr trace.Tracer, st *model.StepTrace) {
	at := st.Start
	for l, lt := range st.Layers {
		mid := at.Add(lt.Attention)
		end := mid.Add(lt.FFN)
		_, a := tr.Start(ctx, "attention", trace.WithTimestamp(at), trace.WithAttributes(keyLayer.Int(l)))
		a.End(trace.WithTimestamp(mid))
		_, f := tr.Start(ctx, "ffn", trace.WithTimestamp(mid), trace.WithAttributes(keyLayer.Int(l)))
		f.End(trace.WithTimestamp(end))
		at = end
	}
}

func layerOneSpan(ctx context.Context, tr trace.Tracer, st *model.StepTrace) {
	at := st.Start
	for l, lt := range st.Layers {
		end := at.Add(lt.Attention + lt.FFN)
		_, s := tr.Start(ctx, "layer", trace.WithTimestamp(at), trace.WithAttributes(keyLayer.Int(l),
			attributeNS("corelm.attention_ns", lt.Attention), attributeNS("corelm.ffn_ns", lt.FFN)))
		s.End(trace.WithTimestamp(end))
		at = end
	}
}

func layerEvents(ctx context.Context, _ trace.Tracer, st *model.StepTrace) {
	sp := trace.SpanFromContext(ctx)
	at := st.Start
	for l, lt := range st.Layers {
		sp.AddEvent("attention", trace.WithTimestamp(at), trace.WithAttributes(keyLayer.Int(l), attributeNS("corelm.duration_ns", lt.Attention)))
		at = at.Add(lt.Attention)
		sp.AddEvent("ffn", trace.WithTimestamp(at), trace.WithAttributes(keyLayer.Int(l), attributeNS("corelm.duration_ns", lt.FFN)))
		at = at.Add(lt.FFN)
	}
}

func layerFolded(ctx context.Context, _ trace.Tracer, st *model.StepTrace) {
	att := make([]int64, len(st.Layers))
	ffn := make([]int64, len(st.Layers))
	for l, lt := range st.Layers {
		att[l], ffn[l] = int64(lt.Attention), int64(lt.FFN)
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.Int64Slice("corelm.layers.attention_ns", att),
		attribute.Int64Slice("corelm.layers.ffn_ns", ffn))
}

func attributeNS(k string, d time.Duration) attribute.KeyValue {
	return attribute.Key(k).Int64(int64(d))
}

// otlpSink is an OTLP/gRPC trace receiver that counts spans and drops them.
type otlpSink struct {
	coltracepb.UnimplementedTraceServiceServer
	addr  string
	spans atomic.Int64
}

func (s *otlpSink) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			s.spans.Add(int64(len(ss.Spans)))
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func startSink(b *testing.B) *otlpSink {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &otlpSink{addr: ln.Addr().String()}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, s)
	go gs.Serve(ln)
	b.Cleanup(gs.Stop)
	return s
}

// BenchmarkGenerationNoEndpoint is a whole generation's telemetry (start,
// attach, the hooks of one step, finish, end) with no endpoint set: the
// no-op tracer, no meter provider. This is what every request pays when
// nothing is configured.
func BenchmarkGenerationNoEndpoint(b *testing.B) {
	tel, err := Setup(context.Background(), Options{Getenv: env()})
	if err != nil {
		b.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	fs := newFakeSched(tel.SchedulerHooks("bench"))
	tr := stepTrace(32)
	b.ReportAllocs()
	for b.Loop() {
		_, g := tel.StartGeneration(context.Background(), GenerationStart{Model: "bench", Level: LevelLayer})
		id := fs.submit(g, 8, 0)
		fs.step(0, 8, time.Millisecond, tr, id)
		fs.first(id)
		fs.finish(id, sched.Final{Usage: sched.Usage{PromptTokens: 8, CompletionTokens: 1}})
		delete(fs.infos, id)
		g.End()
	}
}
