package server

import (
	"context"
	"io"
	"net/http"

	"connectrpc.com/vanguard/vanguardgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// connectHandler serves corelm.v1.InferenceService and grpc.health.v1 as
// gRPC-Web and Connect (HTTP/1.1 or 2, binary or JSON), and as gRPC over
// cleartext HTTP/2: vanguard transcodes each call onto an in-process gRPC
// server that never listens, whose handlers forward the call to inference
// over the gateway's client connection. Generate (bidi) needs a
// full-duplex transport the browser protocols lack: use GenerateStream.
// Health is inference's, so `corelm health GATEWAY` says whether the
// gateway can serve.
func (s *Server) connectHandler() (http.Handler, error) {
	gs := grpc.NewServer()
	corelmv1.RegisterInferenceServiceServer(gs, &forwarder{s: s})
	healthpb.RegisterHealthServer(gs, &healthForwarder{s: s})
	return vanguardgrpc.NewTranscoder(gs)
}

// healthForwarder answers grpc.health.v1 with inference's health.
type healthForwarder struct {
	healthpb.UnimplementedHealthServer
	s *Server
}

func (h *healthForwarder) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return h.s.health.Check(ctx, req)
}

func (h *healthForwarder) List(ctx context.Context, req *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	return h.s.health.List(ctx, req)
}

func (h *healthForwarder) Watch(req *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	ws, err := h.s.health.Watch(stream.Context(), req)
	if err != nil {
		return err
	}
	for {
		m, err := ws.Recv()
		if err != nil {
			return err
		}
		if err := stream.Send(m); err != nil {
			return err
		}
	}
}

// forwarder is an InferenceServiceServer that makes each call on inference.
type forwarder struct {
	corelmv1.UnimplementedInferenceServiceServer
	s *Server
}

var _ corelmv1.InferenceServiceServer = (*forwarder)(nil)

// ctx is the outgoing context of a forwarded call: the incoming one
// (cancelled with the HTTP request, carrying its span) with the bearer
// token for inference.
func (f *forwarder) ctx(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	var authz string
	if v := md.Get("authorization"); len(v) > 0 {
		authz = v[0]
	}
	return f.s.withAuth(ctx, authz)
}

func (f *forwarder) Generate(grpc.BidiStreamingServer[corelmv1.GenerateRequest, corelmv1.GenerateResponse]) error {
	return status.Error(codes.Unimplemented, "Generate (bidi) is served over gRPC only; over gRPC-Web and Connect use GenerateStream")
}

func (f *forwarder) GenerateStream(req *corelmv1.GenerateStart, stream grpc.ServerStreamingServer[corelmv1.GenerateResponse]) error {
	cs, err := f.s.client.GenerateStream(f.ctx(stream.Context()), req)
	if err != nil {
		return err
	}
	for {
		m, err := cs.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(m); err != nil {
			return err
		}
	}
}

func (f *forwarder) Tokenize(ctx context.Context, req *corelmv1.TokenizeRequest) (*corelmv1.TokenizeResponse, error) {
	return f.s.client.Tokenize(f.ctx(ctx), req)
}

func (f *forwarder) Detokenize(ctx context.Context, req *corelmv1.DetokenizeRequest) (*corelmv1.DetokenizeResponse, error) {
	return f.s.client.Detokenize(f.ctx(ctx), req)
}

func (f *forwarder) ListModels(ctx context.Context, req *corelmv1.ListModelsRequest) (*corelmv1.ListModelsResponse, error) {
	return f.s.client.ListModels(f.ctx(ctx), req)
}

func (f *forwarder) GetModel(ctx context.Context, req *corelmv1.GetModelRequest) (*corelmv1.GetModelResponse, error) {
	return f.s.client.GetModel(f.ctx(ctx), req)
}

func (f *forwarder) GetStatus(ctx context.Context, req *corelmv1.GetStatusRequest) (*corelmv1.GetStatusResponse, error) {
	return f.s.client.GetStatus(f.ctx(ctx), req)
}
