package server

import (
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/corelm/corelm/internal/leakcheck"
	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	inference "github.com/corelm/corelm/services/inference/server"
)

// TestConnectAndGRPCWeb streams GenerateStream through the gateway's port
// with connect-go over HTTP/1.1: the Connect protocol in binary and JSON,
// and gRPC-Web; each gives the direct gRPC call's text. A unary call and
// an error (unknown model, NotFound) go through as well.
func TestConnectAndGRPCWeb(t *testing.T) {
	leakcheck.Check(t)
	st := startStack(t, Config{}, inference.Options{})
	temp := float32(0)
	start := &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 16, Prompt: &corelmv1.GenerateStart_Text{Text: prompt},
		Sampling: &corelmv1.SamplingParams{Temperature: &temp}}
	want, _ := greedyStream(t, st.client, start)
	httpClient := &http.Client{Transport: &http.Transport{}} // HTTP/1.1
	t.Cleanup(httpClient.CloseIdleConnections)
	base := st.url + "/" + corelmv1.InferenceService_ServiceDesc.ServiceName
	for name, opts := range map[string][]connect.ClientOption{
		"connect":      nil,
		"connect json": {connect.WithProtoJSON()},
		"grpc-web":     {connect.WithGRPCWeb()},
	} {
		t.Run(name, func(t *testing.T) {
			gen := connect.NewClient[corelmv1.GenerateStart, corelmv1.GenerateResponse](httpClient, base+"/GenerateStream", opts...)
			stream, err := gen.CallServerStream(t.Context(), connect.NewRequest(start))
			if err != nil {
				t.Fatal(err)
			}
			var text strings.Builder
			var final *corelmv1.GenerateFinal
			for stream.Receive() {
				m := stream.Msg()
				text.WriteString(m.GetToken().GetText())
				if f := m.GetFinal(); f != nil {
					text.WriteString(f.GetText())
					final = f
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			stream.Close()
			if text.String() != want || final.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_LENGTH {
				t.Errorf("%q %v, want %q", text.String(), final, want)
			}

			models := connect.NewClient[corelmv1.ListModelsRequest, corelmv1.ListModelsResponse](httpClient, base+"/ListModels", opts...)
			resp, err := models.CallUnary(t.Context(), connect.NewRequest(&corelmv1.ListModelsRequest{}))
			if err != nil || len(resp.Msg.GetModels()) != 1 {
				t.Errorf("ListModels: %v %v", resp, err)
			}
			bad := proto.Clone(start).(*corelmv1.GenerateStart)
			bad.ModelId = "nope"
			stream, err = gen.CallServerStream(t.Context(), connect.NewRequest(bad))
			if err == nil {
				for stream.Receive() {
				}
				err = stream.Err()
				stream.Close()
			}
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("unknown model: %v", err)
			}
		})
	}
}

// TestGRPCThroughGateway: a gRPC client (cleartext HTTP/2) on the
// gateway's port gets the inference service and its health: what `corelm
// health` and the compose health check ask.
func TestGRPCThroughGateway(t *testing.T) {
	leakcheck.Check(t)
	st := startStack(t, Config{AuthToken: "sesame"}, inference.Options{})
	conn, err := grpc.NewClient(strings.TrimPrefix(st.url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	for _, service := range []string{"", corelmv1.InferenceService_ServiceDesc.ServiceName} {
		resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: %v %v", service, resp, err)
		}
	}
	temp := float32(0)
	start := &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 8, Prompt: &corelmv1.GenerateStart_Text{Text: prompt},
		Sampling: &corelmv1.SamplingParams{Temperature: &temp}}
	want, _ := greedyStream(t, st.client, start)
	client := corelmv1.NewInferenceServiceClient(conn)
	if _, err := client.ListModels(t.Context(), &corelmv1.ListModelsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("without the token: %v", err)
	}
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer sesame")
	stream, err := client.GenerateStream(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	if err := servicetest.RecvAll(stream.Recv, func(m *corelmv1.GenerateResponse) {
		text.WriteString(m.GetToken().GetText() + m.GetFinal().GetText())
	}); err != nil {
		t.Fatal(err)
	}
	if text.String() != want {
		t.Errorf("%q, want %q", text.String(), want)
	}
}
