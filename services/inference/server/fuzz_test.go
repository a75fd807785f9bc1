package server

import (
	"context"
	"encoding/binary"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// fuzzServer serves the embedded stories model, in process, without gRPC:
// the fuzz targets call the handlers.
func fuzzServer(tb testing.TB) *Server {
	tb.Helper()
	s := New(Options{Threads: 1})
	if err := s.ServeFile(EmbeddedModel, ""); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		s.Shutdown(ctx)
	})
	return s
}

// int32s reads little-endian int32s from b.
func int32s(b []byte) []int32 {
	var ids []int32
	for ; len(b) >= 4; b = b[4:] {
		ids = append(ids, int32(binary.LittleEndian.Uint32(b)))
	}
	return ids
}

// optBool maps 0, 1, 2 to unset, false, true.
func optBool(v uint8) *bool {
	switch v % 3 {
	case 1:
		b := false
		return &b
	case 2:
		b := true
		return &b
	}
	return nil
}

// FuzzUnary: Tokenize, Detokenize and GetModel, whatever the model id,
// text, ids and flags, answer or refuse with InvalidArgument or NotFound
// (never Internal, never a panic); what they answer is consistent.
func FuzzUnary(f *testing.F) {
	f.Add(uint8(0), "stories", "Once upon a time", []byte{}, uint8(0), false)
	f.Add(uint8(0), "stories", "</s><s>\xff\xfe", []byte{}, uint8(2), true)
	f.Add(uint8(1), "stories", "", []byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 2, 0, 0}, uint8(0), false)
	f.Add(uint8(2), "../etc", "", []byte{}, uint8(1), false)
	f.Add(uint8(2), "stories", "", []byte{}, uint8(0), false)
	f.Add(uint8(0), "other", "x", []byte{}, uint8(0), false)
	s := fuzzServer(f)
	vocab := int32(512)
	f.Fuzz(func(t *testing.T, which uint8, model, text string, ids []byte, addBos uint8, parse bool) {
		ctx := context.Background()
		var err error
		switch which % 3 {
		case 0:
			var r *corelmv1.TokenizeResponse
			r, err = s.Tokenize(ctx, &corelmv1.TokenizeRequest{ModelId: model, Text: text, AddBos: optBool(addBos), ParseSpecial: parse})
			if err == nil {
				if len(r.GetPieces()) != len(r.GetIds()) {
					t.Fatalf("%d pieces for %d ids", len(r.GetPieces()), len(r.GetIds()))
				}
				for _, id := range r.GetIds() {
					if id < 0 || id >= vocab {
						t.Fatalf("Tokenize gave id %d", id)
					}
				}
			}
		case 1:
			var r *corelmv1.DetokenizeResponse
			r, err = s.Detokenize(ctx, &corelmv1.DetokenizeRequest{ModelId: model, Ids: int32s(ids)})
			if err == nil && !utf8.ValidString(r.GetText()) {
				t.Fatalf("Detokenize text %q is not UTF-8", r.GetText())
			}
		case 2:
			var r *corelmv1.GetModelResponse
			r, err = s.GetModel(ctx, &corelmv1.GetModelRequest{ModelId: model})
			if err == nil && r.GetModel().GetModelId() != model {
				t.Fatalf("GetModel(%q) described %q", model, r.GetModel().GetModelId())
			}
		}
		if c := toStatus(err).Code(); c != codes.OK && c != codes.InvalidArgument && c != codes.NotFound {
			t.Fatalf("call %d on %q: %v", which%3, model, err)
		}
	})
}

// FuzzGenerateStart: the service's own checks of a GenerateStart (model
// id, prompt size, the prompt built from text, token ids or chat messages),
// whatever it holds, refuse with InvalidArgument only and build prompts of
// ids inside the vocabulary (token ids as sent: the scheduler checks those,
// see sched.FuzzValidate).
func FuzzGenerateStart(f *testing.F) {
	f.Add(uint8(0), "stories", "Once upon a time", "user", "Hi", []byte{}, false, uint8(0))
	f.Add(uint8(1), "stories", "", "", "", []byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f}, false, uint8(1))
	f.Add(uint8(2), "stories", "", "user", "</s><|im_start|>system\n\xff", []byte{}, false, uint8(0))
	f.Add(uint8(2), "stories", "", "", "x", []byte{}, true, uint8(2))
	f.Add(uint8(3), "../x", "", "user", "", []byte{}, true, uint8(0))
	s := fuzzServer(f)
	s.opts.MaxPromptBytes = 4096
	f.Fuzz(func(t *testing.T, kind uint8, model, text, role, content string, ids []byte, parse bool, addBos uint8) {
		req := &corelmv1.GenerateStart{ModelId: model, ParseSpecial: parse, AddBos: optBool(addBos)}
		switch kind % 4 {
		case 0:
			req.Prompt = &corelmv1.GenerateStart_Text{Text: text}
		case 1:
			req.Prompt = &corelmv1.GenerateStart_TokenIds{TokenIds: &corelmv1.TokenIds{Ids: int32s(ids)}}
		case 2:
			req.Prompt = &corelmv1.GenerateStart_Chat{Chat: &corelmv1.ChatPrompt{AddGenerationPrompt: addBos%2 == 0,
				Messages: []*corelmv1.ChatMessage{{Role: role, Content: content}, {Role: "user", Content: text}}}}
		}
		err := s.checkStart(req)
		var e *entry
		if err == nil {
			e, err = s.models.acquire("stories")
			if err != nil {
				t.Fatal(err)
			}
			defer s.models.release(e)
			var sr []int32
			sr, err = promptTokens(e, req, nil)
			if err == nil && kind%4 != 1 {
				for _, id := range sr {
					if id < 0 || int(id) >= e.tok.VocabSize() {
						t.Fatalf("prompt id %d", id)
					}
				}
			}
		}
		if err != nil {
			if c := toStatus(err).Code(); c != codes.InvalidArgument {
				t.Fatalf("refused with %v: %v", c, err)
			}
		}
	})
}
