package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/internal/syncbuf"
	"github.com/corelm/corelm/models"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/internal/telemetry"
	loader "github.com/corelm/corelm/services/loader/server"
)

// TestLoadOnDemand: with a loader, generations for a model that is not
// served make the inference service load it by id, once for all of them,
// and then serve them; the load is in the trace of the request that
// started it (the others' "load model" spans link to it); a model the
// loader cannot find is NotFound.
func TestLoadOnDemand(t *testing.T) {
	x := &traced{spans: tracetest.NewInMemoryExporter(), logs: &syncbuf.Buffer{}}
	var err error
	x.tel, err = telemetry.Setup(t.Context(), telemetry.Options{ServiceName: "corelm", Getenv: func(string) string { return "" }, SpanExporter: x.spans})
	if err != nil {
		t.Fatal(err)
	}
	defer x.tel.Shutdown(context.Background())
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// A loader with two files: warm (loaded before the inference service
	// starts, so that it is ready) and stories (loaded on demand).
	src, shm := t.TempDir(), t.TempDir()
	for _, name := range []string{"warm.gguf", "stories.gguf"} {
		if err := os.WriteFile(filepath.Join(src, name), models.Stories, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	loaderConn, _ := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return loader.Serve(ctx, lis, loader.Config{
			Options:       loader.Options{SourceDir: src, ShmDir: shm, Logger: quiet, Telemetry: x.tel},
			Grace:         5 * time.Second,
			ServerOptions: []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(x.tel.GRPCOptions()...))},
		})
	})
	lc := corelmv1.NewLoaderServiceClient(loaderConn)
	stream, err := lc.LoadModel(t.Context(), &corelmv1.LoadModelRequest{ModelId: "warm"})
	if err != nil {
		t.Fatal(err)
	}
	if err := servicetest.RecvAll(stream.Recv, func(*corelmv1.LoadModelResponse) {}); err != nil {
		t.Fatal(err)
	}
	loaderAddr := loaderConn.Target()
	conn, _ := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return Serve(ctx, lis, Config{Loader: loaderAddr, Grace: 5 * time.Second, Options: Options{Threads: 1, Logger: quiet,
			Tracing: Tracing{Telemetry: x.tel, Level: telemetry.LevelRequest, Max: telemetry.LevelLayer}}})
	})
	client := corelmv1.NewInferenceServiceClient(conn)

	// Three at once, each in a trace of its own.
	const n = 3
	traces := make([]trace.TraceID, n)
	var wg sync.WaitGroup
	for i := range n {
		traces[i] = trace.TraceID{0x10, byte(i + 1)}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", fmt.Sprintf("00-%s-%s-01", traces[i], trace.SpanID{0x20, byte(i + 1)}))
			s, err := client.GenerateStream(ctx, &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 3,
				Prompt: &corelmv1.GenerateStart_Text{Text: "Once upon a time"}})
			if err != nil {
				t.Error(err)
				return
			}
			if f := lastFinal(s); f == nil || f.GetUsage().GetCompletionTokens() != 3 {
				t.Errorf("request %d on demand: final %v", i, f)
			}
		})
	}
	wg.Wait()

	// The LoadModel client span ends when its stream is over, which may be
	// just after the generations: wait for it.
	var all tracetest.SpanStubs
	var loads, clientCalls []tracetest.SpanStub
	var loaderLoad *tracetest.SpanStub
	for deadline := time.Now().Add(10 * time.Second); ; {
		if err := x.tel.ForceFlush(t.Context()); err != nil {
			t.Fatal(err)
		}
		all = x.spans.GetSpans()
		loads, clientCalls, loaderLoad = nil, nil, nil
		for i, s := range all {
			switch {
			case s.Name == "load model":
				loads = append(loads, s)
			case s.Name == "corelm.v1.LoaderService/LoadModel" && s.SpanKind == trace.SpanKindClient:
				clientCalls = append(clientCalls, s)
			case s.Name == "load":
				loaderLoad = &all[i]
			}
		}
		if len(clientCalls) > 0 && loaderLoad != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A request that came after the load (a slow goroutine) is served
	// without one: up to n waits, one load.
	if len(loads) == 0 || len(loads) > n || len(clientCalls) != 1 || loaderLoad == nil {
		t.Fatalf("%d \"load model\" spans, %d LoadModel calls, loader load %v; want 1 to %d, 1 and one load", len(loads), len(clientCalls), loaderLoad != nil, n)
	}
	var leader tracetest.SpanStub
	for _, s := range loads {
		if shared(s) {
			continue
		}
		if leader.SpanContext.IsValid() {
			t.Fatal("two loads were not shared")
		}
		leader = s
	}
	for _, s := range loads {
		if shared(s) && (len(s.Links) != 1 || s.Links[0].SpanContext.SpanID() != leader.SpanContext.SpanID()) {
			t.Errorf("a shared load's links %v, want the load of %v", s.Links, leader.SpanContext.SpanID())
		}
	}
	call := clientCalls[0]
	if call.Parent.SpanID() != leader.SpanContext.SpanID() || loaderLoad.SpanContext.TraceID() != leader.SpanContext.TraceID() {
		t.Errorf("the loader call is not under the load of the request that started it")
	}

	// The loader does not have it.
	s, err := client.GenerateStream(t.Context(), &corelmv1.GenerateStart{ModelId: "nope", Prompt: &corelmv1.GenerateStart_Text{Text: "x"}})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Errorf("a model the loader does not have: %v, want NotFound", err)
	}
}

func shared(s tracetest.SpanStub) bool {
	for _, kv := range s.Attributes {
		if kv.Key == keyShared {
			return kv.Value.AsBool()
		}
	}
	return false
}
