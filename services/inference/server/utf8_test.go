package server

import (
	"context"
	"io"
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

// TestInvalidUTF8: a string field that is not UTF-8 (a client in a
// language that does not check proto3 strings sends the bytes as they are)
// is refused for that request alone, InvalidArgument naming the field: on
// a Generate stream a final frame for its request_id (the id's own invalid
// bytes become U+FFFD) while a generation running on the same stream goes
// on to its end and the stream takes new requests; GenerateStream and
// Tokenize get the status InvalidArgument (grpc-go alone would answer
// Internal and, on a Generate stream, end the stream: grpcserver/utf8.go).
func TestInvalidUTF8(t *testing.T) {
	conn, _ := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return Serve(ctx, lis, Config{Options: Options{Threads: 1, Context: 2048}, ModelFile: EmbeddedModel, Grace: 5 * time.Second})
	})
	// GenerateStart{request_id: id, model_id: "stories", text: text}, by hand.
	start := func(id, text string) []byte {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, id)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, "stories")
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		return protowire.AppendString(b, text)
	}
	frame := func(start []byte) []byte { // GenerateRequest.start
		return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), start)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	// A long generation runs on the stream while the bad frames come.
	bidi, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
		corelmv1.InferenceService_Generate_FullMethodName, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	temp := float32(0)
	long, err := proto.Marshal(&corelmv1.GenerateRequest{Frame: &corelmv1.GenerateRequest_Start{Start: &corelmv1.GenerateStart{
		RequestId: "long", ModelId: "stories", MaxTokens: 300, Sampling: &corelmv1.SamplingParams{Temperature: &temp},
		Prompt: &corelmv1.GenerateStart_Text{Text: "Once upon a time"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := bidi.SendMsg(long); err != nil {
		t.Fatal(err)
	}
	first := new(corelmv1.GenerateResponse)
	if err := bidi.RecvMsg(first); err != nil || first.GetRequestId() != "long" {
		t.Fatalf("first frame of the long generation: %v %v", first, err)
	}
	for _, b := range [][]byte{frame(start("bad", "\xff\xfe")), frame(start("b\xffd", "Once"))} {
		if err := bidi.SendMsg(b); err != nil {
			t.Fatal(err)
		}
	}
	good, _ := proto.Marshal(&corelmv1.GenerateRequest{Frame: &corelmv1.GenerateRequest_Start{Start: &corelmv1.GenerateStart{
		RequestId: "good", ModelId: "stories", MaxTokens: 2, Prompt: &corelmv1.GenerateStart_Text{Text: "Once"}}}})
	if err := bidi.SendMsg(good); err != nil {
		t.Fatal(err)
	}
	finals := map[string]*corelmv1.GenerateFinal{}
	tokens := 0
	if first.GetToken() != nil {
		tokens++
	}
	for len(finals) < 4 {
		r := new(corelmv1.GenerateResponse)
		if err := bidi.RecvMsg(r); err != nil {
			t.Fatalf("the stream ended with %d finals %v: %v", len(finals), finals, err)
		}
		if f := r.GetFinal(); f != nil {
			finals[r.GetRequestId()] = f
			if r.GetRequestId() != "long" && finals["long"] != nil {
				t.Errorf("%q answered after the long generation ended: the test did not check what it means to", r.GetRequestId())
			}
		}
		if r.GetRequestId() == "long" && r.GetToken() != nil {
			tokens++
		}
	}
	for _, id := range []string{"bad", "b\uFFFDd"} {
		f := finals[id]
		if codes.Code(f.GetErrorCode()) != codes.InvalidArgument || !strings.Contains(f.GetErrorMessage(), "start.text") && id == "bad" ||
			!strings.Contains(f.GetErrorMessage(), "UTF-8") {
			t.Errorf("request %q: final %v, want InvalidArgument naming the field", id, f)
		}
	}
	if f := finals["b\uFFFDd"]; !strings.Contains(f.GetErrorMessage(), "start.request_id") {
		t.Errorf("a request id that is not UTF-8: %v", f)
	}
	if f := finals["long"]; f.GetErrorCode() != 0 || f.GetUsage().GetCompletionTokens() != int32(tokens) || tokens < 2 {
		t.Errorf("the long generation: %v (%d tokens seen)", f, tokens)
	}
	if f := finals["good"]; f.GetErrorCode() != 0 || f.GetUsage().GetCompletionTokens() != 2 {
		t.Errorf("a good request after the bad frames: %v", f)
	}
	if err := bidi.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := bidi.RecvMsg(new(corelmv1.GenerateResponse)); err != io.EOF {
		t.Errorf("the stream's end: %v, want EOF (status OK)", err)
	}

	// One request per call: the call's status.
	var tokenize []byte
	tokenize = protowire.AppendTag(tokenize, 1, protowire.BytesType)
	tokenize = protowire.AppendString(tokenize, "stories")
	tokenize = protowire.AppendTag(tokenize, 2, protowire.BytesType)
	tokenize = protowire.AppendString(tokenize, "a\xc0b")
	err = conn.Invoke(ctx, corelmv1.InferenceService_Tokenize_FullMethodName, tokenize, new(corelmv1.TokenizeResponse), grpc.ForceCodec(rawCodec{}))
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "text") {
		t.Errorf("Tokenize of a non-UTF-8 text: %v, want InvalidArgument naming text", err)
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, corelmv1.InferenceService_GenerateStream_FullMethodName, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendMsg(start("x", "\xff")); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	err = s.RecvMsg(new(corelmv1.GenerateResponse))
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "text: not valid UTF-8") {
		t.Errorf("GenerateStream with a non-UTF-8 text: %v, want InvalidArgument", err)
	}
}
