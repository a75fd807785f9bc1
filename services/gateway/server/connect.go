package server

import (
	"context"
	"io"
	"net/http"

	"connectrpc.com/vanguard/vanguardgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// connectHandler serves corelm.v1.InferenceService as gRPC-Web and Connect
// (HTTP/1.1 or 2, binary or JSON): vanguard transcodes each call onto an
// in-process gRPC server that never listens, whose handlers forward the
// call to inference over the gateway's client connection. Generate (bidi)
// needs a full-duplex transport the browser protocols lack: use
// GenerateStream.
func (s *Server) connectHandler() (http.Handler, error) {
	gs := grpc.NewServer()
	corelmv1.RegisterInferenceServiceServer(gs, &forwarder{s: s})
	return vanguardgrpc.NewTranscoder(gs)
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
