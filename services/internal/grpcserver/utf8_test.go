package grpcserver

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// TestCodecRepairsUTF8: the codec decodes a message whose string fields
// (nested ones included) are not UTF-8 with U+FFFD in their place and flags
// it with the fields' paths; a valid message is decoded as grpc-go's codec
// does, and a client cannot send the flag itself.
func TestCodecRepairsUTF8(t *testing.T) {
	c := newCodec()
	valid, err := proto.Marshal(&corelmv1.GenerateRequest{Frame: &corelmv1.GenerateRequest_Start{Start: &corelmv1.GenerateStart{
		RequestId: "Q", Prompt: &corelmv1.GenerateStart_Chat{Chat: &corelmv1.ChatPrompt{Messages: []*corelmv1.ChatMessage{{Role: "user", Content: "hi"}}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	// The same with the content's bytes "hi" made "\xffi" and the id's "Q" "\xc0".
	bad := slices.Clone(valid)
	for i := range bad {
		if bad[i] == 'h' && bad[i+1] == 'i' {
			bad[i] = 0xff
		}
		if bad[i] == 'Q' {
			bad[i] = 0xc0
		}
	}
	if proto.Unmarshal(bad, new(corelmv1.GenerateRequest)) == nil {
		t.Fatal("protobuf-go accepted invalid UTF-8: the codec is not needed")
	}
	var m corelmv1.GenerateRequest
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, &m); err != nil {
		t.Fatal(err)
	}
	if got, want := takeFlag(&m), []string{"start.request_id", "start.chat.messages.content"}; !slices.Equal(got, want) {
		t.Errorf("flagged fields %q, want %q", got, want)
	}
	if id, content := m.GetStart().GetRequestId(), m.GetStart().GetChat().GetMessages()[0].GetContent(); id != "\uFFFD" || content != "\uFFFDi" {
		t.Errorf("repaired to %q, %q", id, content)
	}
	if len(m.ProtoReflect().GetUnknown()) != 0 || takeFlag(&m) != nil {
		t.Error("the flag is still there after takeFlag")
	}

	// A client's own field of the flag's number is dropped.
	forged := protowire.AppendTag(slices.Clone(valid), flagField, protowire.BytesType)
	forged = protowire.AppendString(forged, "start.text")
	m.Reset()
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(forged)}, &m); err != nil {
		t.Fatal(err)
	}
	if got := takeFlag(&m); got != nil || len(m.ProtoReflect().GetUnknown()) != 0 || m.GetStart().GetRequestId() != "Q" {
		t.Errorf("a valid message with a forged flag: %q, %v", got, &m)
	}

	// Bytes that are not a message at all stay an error.
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0xff})}, &m); err == nil {
		t.Error("a truncated message decoded")
	}
}

// jsonNamed is the proto codec under the name "json": a client sending
// protobuf as application/grpc+json.
type jsonNamed struct{ encoding.CodecV2 }

func (jsonNamed) Name() string { return "json" }

// TestProtoOnly: a call whose content-subtype is not protobuf's is refused
// with Unimplemented before its message is read (the server's codec would
// decode any subtype as protobuf); proto and the bare subtype are served.
func TestProtoOnly(t *testing.T) {
	_, cc := serveLimits(t, Limits{})
	c := testpb.NewTestServiceClient(cc)
	if _, err := c.UnaryCall(t.Context(), &testpb.SimpleRequest{}); err != nil {
		t.Fatalf("application/grpc: %v", err)
	}
	if _, err := c.UnaryCall(t.Context(), &testpb.SimpleRequest{}, grpc.CallContentSubtype("proto")); err != nil {
		t.Fatalf("application/grpc+proto: %v", err)
	}
	_, err := c.UnaryCall(t.Context(), &testpb.SimpleRequest{}, grpc.ForceCodecV2(jsonNamed{encoding.GetCodecV2(grpcproto.Name)}))
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "protobuf only") {
		t.Fatalf("application/grpc+json: %v, want Unimplemented", err)
	}
}
