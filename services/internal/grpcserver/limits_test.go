package grpcserver

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// echoService answers UnaryCall and holds StreamingOutputCall open (after
// its headers) until the client goes.
type echoService struct {
	testpb.UnimplementedTestServiceServer
}

func (echoService) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{}, nil
}

func (echoService) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func serveLimits(t *testing.T, l Limits) (addr string, cc *grpc.ClientConn) {
	t.Helper()
	s := New(Options{Limits: l})
	testpb.RegisterTestServiceServer(s, echoService{})
	s.SetServing()
	addr = listen(t, s)
	return addr, dial(t, addr)
}

// TestMaxRecvMsgSize: a message over the limit is ResourceExhausted for
// that call; the connection serves the next calls.
func TestMaxRecvMsgSize(t *testing.T) {
	_, cc := serveLimits(t, Limits{MaxRecvMsgSize: 1 << 10})
	c := testpb.NewTestServiceClient(cc)
	big := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: bytes.Repeat([]byte{1}, 2<<10)}}
	if _, err := c.UnaryCall(t.Context(), big); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("2 KiB message under a 1 KiB limit: %v, want ResourceExhausted", err)
	}
	small := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("ok")}}
	if _, err := c.UnaryCall(t.Context(), small); err != nil {
		t.Fatalf("the next call on the connection: %v", err)
	}
	if cc.GetState() != connectivity.Ready {
		t.Errorf("connection %v after the refused message", cc.GetState())
	}
}

// TestDefaultLimits: a zero Limits takes the defaults (4 MiB messages).
func TestDefaultLimits(t *testing.T) {
	if got := (Limits{}).withDefaults(); got != DefaultLimits {
		t.Errorf("zero limits = %+v, want %+v", got, DefaultLimits)
	}
	_, cc := serveLimits(t, Limits{})
	c := testpb.NewTestServiceClient(cc)
	if _, err := c.UnaryCall(t.Context(), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 5<<20)}}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("5 MiB message: %v, want ResourceExhausted", err)
	}
}

// TestMaxConcurrentStreams: with 1 stream per connection, a second call
// waits (here: until its deadline) while the first is open, and goes
// through once it ends.
func TestMaxConcurrentStreams(t *testing.T) {
	_, cc := serveLimits(t, Limits{MaxConcurrentStreams: 1})
	c := testpb.NewTestServiceClient(cc)
	ctx, cancel := context.WithCancel(t.Context())
	first, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The first call's headers: the server has its stream.
	if _, err := first.Header(); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancelShort()
	if _, err := c.UnaryCall(short, &testpb.SimpleRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("second call while the first is open: %v, want it to wait (DeadlineExceeded)", err)
	}
	cancel()
	if _, err := c.UnaryCall(t.Context(), &testpb.SimpleRequest{}); err != nil {
		t.Errorf("after the first call ended: %v", err)
	}
}

// TestKeepaliveEnforcement: a client pinging more often than
// KeepaliveMinTime is sent GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
// (grpc-go clients cannot ping more often than every 10s, so this one
// speaks HTTP/2 itself.)
func TestKeepaliveEnforcement(t *testing.T) {
	addr, _ := serveLimits(t, Limits{KeepaliveMinTime: time.Hour})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := range 10 {
			if fr.WritePing(false, [8]byte{byte(i)}) != nil {
				return
			}
		}
	}()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || !bytes.Contains(ga.DebugData(), []byte("too_many_pings")) {
				t.Errorf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", ga.ErrCode, ga.DebugData())
			}
			return
		}
	}
}

// TestMaxConnectionIdle: a connection without calls is closed after
// MaxConnectionIdle; the client reconnects on its next call.
func TestMaxConnectionIdle(t *testing.T) {
	_, cc := serveLimits(t, Limits{MaxConnectionIdle: 100 * time.Millisecond})
	h := healthpb.NewHealthClient(cc)
	if _, err := h.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for s := cc.GetState(); s == connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(ctx, s) {
			t.Fatal(errors.New("the idle connection was not closed within 10s"))
		}
	}
	if _, err := h.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("the call after the idle close: %v", err)
	}
}
