package telemetry

import (
	"context"
	"net"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/emptypb"
)

// TestGRPCOptions: with the handlers built from GRPCOptions, a call carries
// the client's trace to the server (one trace, client → server span), and
// health checks make no spans.
func TestGRPCOptions(t *testing.T) {
	h := newHarness(t, nil)
	lis := bufconn.Listen(1 << 20)
	var handlerSpan trace.SpanContext
	srv := grpc.NewServer(
		grpc.StatsHandler(otelgrpc.NewServerHandler(h.tel.GRPCOptions()...)),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			handlerSpan = trace.SpanContextFromContext(stream.Context())
			var in emptypb.Empty
			if err := stream.RecvMsg(&in); err != nil {
				return err
			}
			return stream.SendMsg(&emptypb.Empty{})
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(h.tel.GRPCOptions()...)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	ctx, root := h.tel.Tracer("test").Start(context.Background(), "client work")
	if err := conn.Invoke(ctx, "/corelm.test.Svc/Do", &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	root.End()
	spans := h.ended(t)
	if len(spans) != 3 {
		for _, s := range spans {
			t.Logf("span %q", s.Name)
		}
		t.Fatalf("%d spans, want the root, the client's and the server's call (no health check)", len(spans))
	}
	calls := named(spans, "corelm.test.Svc/Do")
	if len(calls) != 2 {
		t.Fatalf("%d spans of the call, want a client's and a server's", len(calls))
	}
	client, server := calls[0], calls[1]
	if client.SpanKind != trace.SpanKindClient {
		client, server = server, client
	}
	if client.Parent.SpanID() != root.SpanContext().SpanID() || server.Parent.SpanID() != client.SpanContext.SpanID() ||
		server.SpanContext.TraceID() != root.SpanContext().TraceID() || server.SpanKind != trace.SpanKindServer {
		t.Errorf("client span under %v, server span under %v in trace %v", client.Parent.SpanID(), server.Parent.SpanID(), server.SpanContext.TraceID())
	}
	if handlerSpan.SpanID() != server.SpanContext.SpanID() {
		t.Error("the handler's context does not carry the server span")
	}
}
