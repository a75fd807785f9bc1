package grpcserver

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Invalid UTF-8 in a string field.
//
// protobuf-go refuses a proto3 string field that is not valid UTF-8, with no
// option to accept it, and grpc-go turns that refusal into an Internal status
// that ends the call before any handler runs: on a Generate stream every
// generation of the stream is lost for one bad frame. The server's codec
// therefore decodes such a message a second time with the invalid bytes
// replaced by U+FFFD and flags it (an unknown field the codec strips from
// what clients send); the interceptors turn the flag into InvalidArgument
// for that message only. On a client-streaming call RecvMsg returns an
// *InvalidUTF8Error that carries the decoded message, so that the handler
// can answer it (Generate: a final frame for its request_id) and carry on.

// InvalidUTF8Error is a received message that had invalid UTF-8 in string
// fields; Msg is the message with those bytes replaced by U+FFFD.
type InvalidUTF8Error struct {
	Fields []string // paths of the fields, e.g. "start.text"
	Msg    proto.Message
}

func (e *InvalidUTF8Error) Error() string {
	return fmt.Sprintf("%s: not valid UTF-8", strings.Join(e.Fields, ", "))
}

// GRPCStatus makes a handler that returns the error answer InvalidArgument.
func (e *InvalidUTF8Error) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Error())
}

// flagField is the unknown field that flags a repaired message: the
// largest field number, which no corelm message uses.
const flagField = protowire.MaxValidNumber

// maxRepairDepth bounds the nesting the repair follows (corelm's messages
// nest 3 deep); past it the message is refused as grpc-go would.
const maxRepairDepth = 32

// codec is grpc-go's proto codec with the repair above. grpc-go installs a
// server's codec for every content-subtype (ForceServerCodecV2), so
// protoOnly refuses the others before a message is read.
type codec struct{ std encoding.CodecV2 }

// protoOnly refuses a call whose content-subtype is not protobuf's
// (application/grpc or application/grpc+proto), which the server would
// otherwise decode as protobuf: Unimplemented, naming what to use.
func protoOnly(ctx context.Context, info *tap.Info) (context.Context, error) {
	for _, ct := range info.Header.Get("content-type") {
		sub, _ := strings.CutPrefix(strings.ToLower(ct), "application/grpc")
		sub, _, _ = strings.Cut(sub, ";")
		if sub != "" && sub != "+proto" {
			return ctx, status.Errorf(codes.Unimplemented, "content-type %q: this server speaks protobuf only "+
				"(application/grpc or application/grpc+proto); JSON clients: the HTTP gateway", ct)
		}
	}
	return ctx, nil
}

func newCodec() encoding.CodecV2 { return codec{std: encoding.GetCodecV2(grpcproto.Name)} }

func (c codec) Name() string                                { return grpcproto.Name }
func (c codec) Marshal(v any) (mem.BufferSlice, error)      { return c.std.Marshal(v) }
func (c codec) Unmarshal(data mem.BufferSlice, v any) error { return c.unmarshal(data, v) }

func (c codec) unmarshal(data mem.BufferSlice, v any) error {
	err := c.std.Unmarshal(data, v)
	m, ok := v.(proto.Message)
	if !ok {
		return err
	}
	if err == nil {
		takeFlag(m) // a client's own field of that number
		return nil
	}
	b := data.Materialize()
	fixed, fields, ok := repairUTF8(b, m.ProtoReflect().Descriptor(), "", 0)
	if !ok || len(fields) == 0 {
		return err
	}
	proto.Reset(m)
	if proto.Unmarshal(fixed, m) != nil {
		return err
	}
	takeFlag(m)
	r := m.ProtoReflect()
	flag := protowire.AppendTag(nil, flagField, protowire.BytesType)
	flag = protowire.AppendString(flag, strings.Join(fields, "\x00"))
	r.SetUnknown(append(r.GetUnknown(), flag...))
	return nil
}

// takeFlag removes the flag from m and returns the fields it names.
func takeFlag(m proto.Message) []string {
	r := m.ProtoReflect()
	unknown := r.GetUnknown()
	if len(unknown) == 0 {
		return nil
	}
	var kept []byte
	var fields []string
	for b := unknown; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil
		}
		if num == flagField && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[n:])
			fields = strings.Split(string(v), "\x00")
		} else {
			kept = append(kept, b[:n+m]...)
		}
		b = b[n+m:]
	}
	if len(kept) != len(unknown) {
		r.SetUnknown(kept)
	}
	return fields
}

// repairUTF8 re-encodes the wire bytes b of a message md with the string
// fields (in nested messages and map entries too) that are not valid UTF-8
// made valid, each invalid sequence replaced by U+FFFD. It returns the
// paths of those fields; ok is false if b does not parse.
func repairUTF8(b []byte, md protoreflect.MessageDescriptor, prefix string, depth int) (out []byte, fields []string, ok bool) {
	if depth > maxRepairDepth {
		return nil, nil, false
	}
	out = make([]byte, 0, len(b))
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, nil, false
		}
		field := b[:n+m]
		b = b[n+m:]
		fd := md.Fields().ByNumber(num)
		if typ != protowire.BytesType || fd == nil {
			out = append(out, field...)
			continue
		}
		v, _ := protowire.ConsumeBytes(field[n:])
		switch {
		case fd.Kind() == protoreflect.StringKind && !utf8.Valid(v):
			out = protowire.AppendTag(out, num, typ)
			out = protowire.AppendString(out, strings.ToValidUTF8(string(v), "\uFFFD"))
			fields = append(fields, prefix+string(fd.Name()))
			continue
		case fd.Kind() == protoreflect.MessageKind:
			sub, subFields, ok := repairUTF8(v, fd.Message(), prefix+string(fd.Name())+".", depth+1)
			if !ok {
				return nil, nil, false
			}
			if len(subFields) > 0 {
				out = protowire.AppendTag(out, num, typ)
				out = protowire.AppendBytes(out, sub)
				fields = append(fields, subFields...)
				continue
			}
		}
		out = append(out, field...)
	}
	return out, fields, true
}

// utf8Unary refuses a request that had invalid UTF-8 with InvalidArgument.
func utf8Unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if m, ok := req.(proto.Message); ok {
		if fields := takeFlag(m); fields != nil {
			return nil, (&InvalidUTF8Error{Fields: fields, Msg: m}).GRPCStatus().Err()
		}
	}
	return handler(ctx, req)
}

// utf8Stream makes RecvMsg report a message that had invalid UTF-8: as an
// InvalidArgument status on a server-streaming call (its one request), as
// an *InvalidUTF8Error on a client-streaming one.
func utf8Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &utf8ServerStream{ServerStream: ss, clientStream: info.IsClientStream})
}

type utf8ServerStream struct {
	grpc.ServerStream
	clientStream bool
}

func (s *utf8ServerStream) RecvMsg(v any) error {
	if err := s.ServerStream.RecvMsg(v); err != nil {
		return err
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil
	}
	fields := takeFlag(m)
	if fields == nil {
		return nil
	}
	e := &InvalidUTF8Error{Fields: fields, Msg: m}
	if s.clientStream {
		return e
	}
	return e.GRPCStatus().Err()
}
