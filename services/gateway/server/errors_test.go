package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/corelm/corelm/internal/leakcheck"
	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

func TestToHTTP(t *testing.T) {
	withRetry := func(c codes.Code, d time.Duration) error {
		st, _ := status.New(c, "busy").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		return st.Err()
	}
	tests := []struct {
		err        error
		status     int
		typ        string
		retryAfter string
	}{
		{status.Error(codes.InvalidArgument, "bad"), 400, "invalid_request_error", ""},
		{status.Error(codes.Unauthenticated, "who"), 401, "authentication_error", ""},
		{status.Error(codes.PermissionDenied, "no"), 403, "permission_error", ""},
		{status.Error(codes.NotFound, "model not found"), 404, "invalid_request_error", ""},
		{withRetry(codes.ResourceExhausted, 1500*time.Millisecond), 429, "rate_limit_error", "2"},
		{status.Error(codes.ResourceExhausted, "full"), 429, "rate_limit_error", ""},
		{status.Error(codes.Canceled, "gone"), 499, "client_closed_request", ""},
		{context.Canceled, 499, "client_closed_request", ""},
		{status.Error(codes.DeadlineExceeded, "late"), 504, "timeout_error", ""},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), 504, "timeout_error", ""},
		{withRetry(codes.Unavailable, 5*time.Second), 503, "service_unavailable_error", "5"},
		{status.Error(codes.Unavailable, "down"), 503, "service_unavailable_error", ""},
		{status.Error(codes.Unimplemented, "no"), 501, "server_error", ""},
		{status.Error(codes.Internal, "boom"), 500, "server_error", ""},
		{errors.New("plain"), 500, "server_error", ""},
		{badParam("n", "n=2"), 400, "invalid_request_error", ""},
		{ErrUnauthenticated, 401, "authentication_error", ""},
		{&http.MaxBytesError{Limit: 1}, 413, "invalid_request_error", ""},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		writeError(rec, tt.err)
		he := toHTTP(tt.err)
		if rec.Code != tt.status || he.body.Error.Type != tt.typ || rec.Header().Get("Retry-After") != tt.retryAfter {
			t.Errorf("%v: %d %s Retry-After %q, want %d %s %q", tt.err, rec.Code, he.body.Error.Type,
				rec.Header().Get("Retry-After"), tt.status, tt.typ, tt.retryAfter)
		}
		if !strings.Contains(rec.Body.String(), `"param":`) || !strings.Contains(rec.Body.String(), `"code":`) {
			t.Errorf("%v: body %s lacks param or code", tt.err, rec.Body)
		}
	}
}

// refusing is an inference service that refuses every generation with
// err, or, with err nil, holds it until the call ends.
type refusing struct {
	corelmv1.UnimplementedInferenceServiceServer
	err atomic.Value // of refusal
}

type refusal struct{ err error }

func (r *refusing) GenerateStream(_ *corelmv1.GenerateStart, stream grpc.ServerStreamingServer[corelmv1.GenerateResponse]) error {
	if err := r.err.Load().(refusal).err; err != nil {
		return err
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

// TestStatusesEndToEnd: inference's refusals reach an HTTP client as the
// mapped status with Retry-After from RetryInfo, streaming or not; the
// gateway's request timeout is a 504.
func TestStatusesEndToEnd(t *testing.T) {
	leakcheck.Check(t)
	fake := &refusing{}
	addr := servicetest.ServeGRPC(t, func(gs *grpc.Server) { corelmv1.RegisterInferenceServiceServer(gs, fake) })
	url := serveGateway(t, Config{Inference: addr, Timeout: 200 * time.Millisecond})

	overload, _ := status.New(codes.ResourceExhausted, "queue full").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)})
	loading, _ := status.New(codes.Unavailable, "model is loading").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)})
	tests := []struct {
		err        error
		status     int
		retryAfter string
	}{
		{status.Error(codes.InvalidArgument, "bad"), 400, ""},
		{status.Error(codes.Unauthenticated, "token"), 401, ""},
		{status.Error(codes.NotFound, "model not found"), 404, ""},
		{overload.Err(), 429, "3"},
		{loading.Err(), 503, "1"},
		{nil, 504, ""}, // held past the gateway's timeout
	}
	for _, tt := range tests {
		fake.err.Store(refusal{tt.err})
		for _, stream := range []bool{false, true} {
			resp := post(t, url+"/v1/chat/completions", map[string]any{"model": "m", "stream": stream,
				"messages": []map[string]any{{"role": "user", "content": "hi"}}})
			if resp.StatusCode != tt.status || resp.Header.Get("Retry-After") != tt.retryAfter {
				t.Errorf("%v (stream %v): %d Retry-After %q, want %d %q", tt.err, stream, resp.StatusCode, resp.Header.Get("Retry-After"), tt.status, tt.retryAfter)
			}
			if e := decode[apiError](t, resp); e.Error.Message == "" {
				t.Errorf("%v: no error message", tt.err)
			}
		}
	}
	// Not ready: /readyz says 503 while inference's health is not SERVING
	// (this fake registers no health service at all).
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("readyz %d, want 503", resp.StatusCode)
	}
}
