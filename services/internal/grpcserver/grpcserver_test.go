package grpcserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/syncbuf"
)

// testService panics in EmptyCall and holds FullDuplexCall open until the
// client goes.
type testService struct {
	testpb.UnimplementedTestServiceServer
	entered chan struct{}
}

func (testService) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	panic("secret detail")
}

func (s testService) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	close(s.entered)
	<-stream.Context().Done()
	return stream.Context().Err()
}

// start serves a testService with opts on loopback and returns a client
// connection; the server stops at the test's end.
func start(t *testing.T, opts Options) (*Server, *grpc.ClientConn, *testService) {
	t.Helper()
	svc := &testService{entered: make(chan struct{})}
	s := New(opts)
	testpb.RegisterTestServiceServer(s, svc)
	return s, dial(t, listen(t, s)), svc
}

// listen starts s on a loopback port, stopped at the test's end, and
// returns the address.
func listen(t *testing.T, s *Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Start(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// dial is a plaintext connection to addr, closed at the test's end.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func healthOf(t *testing.T, cc *grpc.ClientConn, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health of %q: %v", service, err)
	}
	return resp.GetStatus()
}

// TestHealth: NOT_SERVING until SetServing, for the server and each
// service; NOT_SERVING again once shutdown begins.
func TestHealth(t *testing.T) {
	s, cc, _ := start(t, Options{Services: []string{"a.A", "b.B"}})
	want := func(st healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for _, svc := range []string{"", "a.A", "b.B"} {
			if got := healthOf(t, cc, svc); got != st {
				t.Errorf("health of %q = %v, want %v", svc, got, st)
			}
		}
	}
	want(healthpb.HealthCheckResponse_NOT_SERVING)
	s.SetServing()
	want(healthpb.HealthCheckResponse_SERVING)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.AwaitShutdown(ctx); err != nil {
		t.Errorf("AwaitShutdown after ctx ended: %v", err)
	}
	want(healthpb.HealthCheckResponse_NOT_SERVING)
}

// TestAuth: every call but health needs the token; refusals go through
// the service's ToStatus.
func TestAuth(t *testing.T) {
	var mapped []error
	var mu sync.Mutex
	toStatus := func(err error) error {
		mu.Lock()
		mapped = append(mapped, err)
		mu.Unlock()
		return defaultStatus(err)
	}
	_, cc, _ := start(t, Options{AuthToken: "s3cret", ToStatus: toStatus})
	healthOf(t, cc, "") // no token needed
	client := testpb.NewTestServiceClient(cc)
	tests := []struct {
		name, header string
		want         codes.Code
	}{
		{"no token", "", codes.Unauthenticated},
		{"wrong token", "Bearer nope", codes.Unauthenticated},
		{"wrong scheme", "Basic s3cret", codes.Unauthenticated},
		{"token", "Bearer s3cret", codes.Internal}, // through to the panicking handler
	}
	for _, tt := range tests {
		ctx := t.Context()
		if tt.header != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tt.header)
		}
		_, err := client.EmptyCall(ctx, &testpb.Empty{})
		if status.Code(err) != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if len(mapped) < 3 || !errors.Is(mapped[0], ErrUnauthenticated) {
		t.Errorf("ToStatus saw %v, want ErrUnauthenticated", mapped)
	}
}

// TestPanic: a panicking handler gives the client Internal without the
// panic's text, and logs the panic with its stack.
func TestPanic(t *testing.T) {
	var logs syncbuf.Buffer
	for _, toStatus := range []func(error) error{nil, func(err error) error { return status.Error(codes.Internal, err.Error()) }} {
		_, cc, _ := start(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), ToStatus: toStatus})
		_, err := testpb.NewTestServiceClient(cc).EmptyCall(t.Context(), &testpb.Empty{})
		st, _ := status.FromError(err)
		if st.Code() != codes.Internal || st.Message() != ErrInternal.Error() {
			t.Errorf("panic gave %v %q, want Internal %q", st.Code(), st.Message(), ErrInternal)
		}
	}
	for _, want := range []string{"panic in handler", "secret detail", "grpc.testing.TestService/EmptyCall", "goroutine", "code=Internal"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
}

// TestStopWithin: a call that does not end is cut after the grace period.
func TestStopWithin(t *testing.T) {
	s, cc, svc := start(t, Options{})
	stream, err := testpb.NewTestServiceClient(cc).FullDuplexCall(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	<-svc.entered
	begin := time.Now()
	s.StopWithin(50 * time.Millisecond)
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("StopWithin(50ms) took %v", d)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("the cut stream ended with %v, want Unavailable", err)
	}
}

// TestAwaitShutdownServeError: a listener that fails ends the wait with
// its error.
func TestAwaitShutdownServeError(t *testing.T) {
	s := New(Options{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis.Close()
	s.Start(lis)
	if err := s.AwaitShutdown(t.Context()); err == nil {
		t.Error("AwaitShutdown on a closed listener: nil error")
	}
	s.StopWithin(time.Second)
}
