package server

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// rawCodec sends pre-encoded messages as they are: what a client in a
// language that does not check proto3 strings' UTF-8 may send.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { return proto.Unmarshal(data, v.(proto.Message)) }
func (rawCodec) Name() string                       { return "proto" }

// TestInvalidUTF8: a prompt text that is not UTF-8 is refused by grpc-go's
// decoder before corelm sees it: the call (on a Generate stream: the whole
// stream, as grpc-go writes the status itself when a message does not
// decode) ends with Internal "... string field contains invalid UTF-8".
// Not the per-request InvalidArgument the rest of the table gets (a known
// limit, docs/reliability.md), but the connection and the server carry on:
// the next call is served.
func TestInvalidUTF8(t *testing.T) {
	conn, _ := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return Serve(ctx, lis, Config{Options: Options{Threads: 1}, ModelFile: EmbeddedModel, Grace: 5 * time.Second})
	})
	// GenerateStart{request_id: "bad", model_id: "stories", text: "\xff\xfe"}
	var start []byte
	start = protowire.AppendTag(start, 1, protowire.BytesType)
	start = protowire.AppendString(start, "bad")
	start = protowire.AppendTag(start, 2, protowire.BytesType)
	start = protowire.AppendString(start, "stories")
	start = protowire.AppendTag(start, 3, protowire.BytesType)
	start = protowire.AppendBytes(start, []byte{0xff, 0xfe})
	frame := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), start) // GenerateRequest.start

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	tests := []struct {
		method string
		desc   grpc.StreamDesc
		msg    []byte
	}{
		{corelmv1.InferenceService_GenerateStream_FullMethodName, grpc.StreamDesc{ServerStreams: true}, start},
		{corelmv1.InferenceService_Generate_FullMethodName, grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, frame},
	}
	for _, tt := range tests {
		s, err := conn.NewStream(ctx, &tt.desc, tt.method, grpc.ForceCodec(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SendMsg(tt.msg); err != nil {
			t.Fatal(err)
		}
		err = s.RecvMsg(new(corelmv1.GenerateResponse))
		if st := status.Convert(err); st.Code() != codes.Internal || !strings.Contains(st.Message(), "invalid UTF-8") {
			t.Errorf("%s with a non-UTF-8 text: %v, want Internal naming invalid UTF-8", tt.method, err)
		}
	}
	gs, err := corelmv1.NewInferenceServiceClient(conn).GenerateStream(ctx, &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 2,
		Prompt: &corelmv1.GenerateStart_Text{Text: "Once"}})
	if err != nil {
		t.Fatal(err)
	}
	if f := lastFinal(gs); f.GetErrorCode() != 0 || f.GetUsage().GetCompletionTokens() != 2 {
		t.Errorf("the next call on the connection: %v", f)
	}
}
