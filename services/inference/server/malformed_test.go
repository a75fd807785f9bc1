package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/pkg/runtime/sched"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// malformedCtx is the context the malformed-request tests serve.
const malformedCtx = 64

// malformed are requests the service must refuse, each with its code and
// the words its message must hold. Every one is answered for itself: the
// stream and the server carry on.
func malformed() []struct {
	name  string
	req   *corelmv1.GenerateStart
	code  codes.Code
	words []string
} {
	f32 := func(v float32) *float32 { return &v }
	i32 := func(v int32) *int32 { return &v }
	start := func(edit func(*corelmv1.GenerateStart)) *corelmv1.GenerateStart {
		req := &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 2, Prompt: &corelmv1.GenerateStart_Text{Text: "Once"}}
		edit(req)
		return req
	}
	ids := func(n int, id int32) *corelmv1.GenerateStart_TokenIds {
		t := &corelmv1.TokenIds{Ids: make([]int32, n)}
		for i := range t.Ids {
			t.Ids[i] = id
		}
		return &corelmv1.GenerateStart_TokenIds{TokenIds: t}
	}
	bias := func(n int) map[int32]float32 {
		m := make(map[int32]float32, n)
		for i := range n {
			m[int32(i)] = 1
		}
		return m
	}
	return []struct {
		name  string
		req   *corelmv1.GenerateStart
		code  codes.Code
		words []string
	}{
		{"empty text", start(func(r *corelmv1.GenerateStart) { r.Prompt = &corelmv1.GenerateStart_Text{} }), codes.InvalidArgument, []string{"empty prompt"}},
		{"empty token ids", start(func(r *corelmv1.GenerateStart) { r.Prompt = ids(0, 1) }), codes.InvalidArgument, []string{"empty prompt"}},
		{"no prompt", start(func(r *corelmv1.GenerateStart) { r.Prompt = nil }), codes.InvalidArgument, []string{"a prompt"}},
		{"prompt above the context", start(func(r *corelmv1.GenerateStart) { r.Prompt = ids(100, 1) }), codes.InvalidArgument,
			[]string{"prompt too long", "100 prompt tokens", "context of 64"}},
		{"prompt above --max-prompt-bytes", start(func(r *corelmv1.GenerateStart) {
			r.Prompt = &corelmv1.GenerateStart_Text{Text: strings.Repeat("x", 2000)}
		}), codes.InvalidArgument, []string{"2000 bytes", "1000"}},
		{"unknown model", start(func(r *corelmv1.GenerateStart) { r.ModelId = "nope" }), codes.NotFound, []string{"nope"}},
		{"bad model id", start(func(r *corelmv1.GenerateStart) { r.ModelId = "../etc" }), codes.InvalidArgument, []string{"model"}},
		{"negative temperature", start(func(r *corelmv1.GenerateStart) { r.Sampling = &corelmv1.SamplingParams{Temperature: f32(-1)} }),
			codes.InvalidArgument, []string{"temperature -1"}},
		{"NaN temperature", start(func(r *corelmv1.GenerateStart) {
			r.Sampling = &corelmv1.SamplingParams{Temperature: f32(float32(math.NaN()))}
		}), codes.InvalidArgument, []string{"temperature NaN"}},
		{"top_p above 1", start(func(r *corelmv1.GenerateStart) { r.Sampling = &corelmv1.SamplingParams{TopP: f32(1.5)} }),
			codes.InvalidArgument, []string{"top_p 1.5"}},
		{"negative top_k", start(func(r *corelmv1.GenerateStart) { r.Sampling = &corelmv1.SamplingParams{TopK: i32(-1)} }),
			codes.InvalidArgument, []string{"top_k -1"}},
		{"huge logit_bias", start(func(r *corelmv1.GenerateStart) {
			r.Sampling = &corelmv1.SamplingParams{LogitBias: bias(sched.MaxLogitBias + 1)}
		}),
			codes.InvalidArgument, []string{"logit_bias has 1025 entries", "1024"}},
		{"logit_bias outside the vocabulary", start(func(r *corelmv1.GenerateStart) {
			r.Sampling = &corelmv1.SamplingParams{LogitBias: map[int32]float32{1 << 20: 1}}
		}), codes.InvalidArgument, []string{"logit_bias", "outside the vocabulary"}},
		{"negative max_tokens", start(func(r *corelmv1.GenerateStart) { r.MaxTokens = -1 }), codes.InvalidArgument, []string{"max_tokens -1"}},
		{"token id above the vocabulary", start(func(r *corelmv1.GenerateStart) { r.Prompt = ids(3, 1<<20) }), codes.InvalidArgument,
			[]string{"1048576", "outside the vocabulary"}},
		{"negative token id", start(func(r *corelmv1.GenerateStart) { r.Prompt = ids(1, -5) }), codes.InvalidArgument,
			[]string{"-5", "outside the vocabulary"}},
	}
}

// checkRefusal fails unless st is code with every word, and names no
// internal package.
func checkRefusal(t *testing.T, st *status.Status, code codes.Code, words []string) {
	t.Helper()
	if st.Code() != code {
		t.Errorf("%v: %q, want %v", st.Code(), st.Message(), code)
	}
	for _, w := range words {
		if !strings.Contains(st.Message(), w) {
			t.Errorf("message %q lacks %q", st.Message(), w)
		}
	}
	if strings.Contains(st.Message(), "sched:") {
		t.Errorf("message %q names an internal package", st.Message())
	}
}

// TestMalformedGenerateStream: each malformed request is the call's
// status; a good call after them is served.
func TestMalformedGenerateStream(t *testing.T) {
	client, _ := serveInProcess(t, Options{Threads: 1, Context: malformedCtx, MaxPromptBytes: 1000})
	for _, tt := range malformed() {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := client.GenerateStream(t.Context(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if f := lastFinal(stream); f != nil {
				t.Fatalf("served: %v", f)
			}
			_, err = stream.Recv()
			checkRefusal(t, status.Convert(err), tt.code, tt.words)
		})
	}
	stream, err := client.GenerateStream(t.Context(), &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 2,
		Prompt: &corelmv1.GenerateStart_Text{Text: "Once"}})
	if err != nil {
		t.Fatal(err)
	}
	if f := lastFinal(stream); f.GetUsage().GetCompletionTokens() != 2 {
		t.Errorf("after the malformed calls: final %v", f)
	}
}

// bidi is a Generate stream whose responses are gathered by request id.
type bidi struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[corelmv1.GenerateRequest, corelmv1.GenerateResponse]
	finals map[string][]*corelmv1.GenerateFinal
	tokens map[string]int
}

func openBidi(t *testing.T, client corelmv1.InferenceServiceClient) *bidi {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	stream, err := client.Generate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &bidi{t: t, stream: stream, finals: map[string][]*corelmv1.GenerateFinal{}, tokens: map[string]int{}}
}

func (b *bidi) start(id string, req *corelmv1.GenerateStart) {
	b.t.Helper()
	req.RequestId = id
	if err := b.stream.Send(&corelmv1.GenerateRequest{Frame: &corelmv1.GenerateRequest_Start{Start: req}}); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bidi) cancel(id string) {
	b.t.Helper()
	if err := b.stream.Send(&corelmv1.GenerateRequest{Frame: &corelmv1.GenerateRequest_Cancel{Cancel: &corelmv1.GenerateCancel{RequestId: id}}}); err != nil {
		b.t.Fatal(err)
	}
}

// until reads responses until done says so; the stream must not end.
func (b *bidi) until(done func() bool) {
	b.t.Helper()
	for !done() {
		r, err := b.stream.Recv()
		if err != nil {
			b.t.Fatalf("stream ended: %v", err)
		}
		switch f := r.GetFrame().(type) {
		case *corelmv1.GenerateResponse_Token:
			b.tokens[r.GetRequestId()]++
		case *corelmv1.GenerateResponse_Final:
			b.finals[r.GetRequestId()] = append(b.finals[r.GetRequestId()], f.Final)
		}
	}
}

func (b *bidi) final(id string) *corelmv1.GenerateFinal {
	b.t.Helper()
	b.until(func() bool { return len(b.finals[id]) > 0 })
	return b.finals[id][0]
}

// close half-closes the stream and reads it to its end: it must end OK.
func (b *bidi) close() {
	b.t.Helper()
	if err := b.stream.CloseSend(); err != nil {
		b.t.Fatal(err)
	}
	for {
		_, err := b.stream.Recv()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			b.t.Fatalf("stream ended with %v", err)
		}
	}
}

func finalStatus(f *corelmv1.GenerateFinal) *status.Status {
	return status.New(codes.Code(f.GetErrorCode()), f.GetErrorMessage())
}

// TestMalformedBidi: over one Generate stream, every malformed request
// gets an error final frame of its own, while a long generation started
// first runs on to its end and the stream serves a good request after
// them; duplicate ids, a Cancel of an unknown id and an empty frame are
// answered too.
func TestMalformedBidi(t *testing.T) {
	client, _ := serveInProcess(t, Options{Threads: 1, Context: malformedCtx, MaxPromptBytes: 1000})
	b := openBidi(t, client)
	// A generation up to the end of the context, running meanwhile.
	b.start("long", &corelmv1.GenerateStart{ModelId: "stories", Prompt: &corelmv1.GenerateStart_Text{Text: "Once upon a time"}})
	for _, tt := range malformed() {
		t.Run(tt.name, func(t *testing.T) {
			b.t = t
			b.start(tt.name, tt.req)
			checkRefusal(t, finalStatus(b.final(tt.name)), tt.code, tt.words)
		})
	}
	b.t = t
	t.Run("duplicate request id", func(t *testing.T) {
		b.t = t
		b.start("dup", &corelmv1.GenerateStart{ModelId: "stories", Prompt: &corelmv1.GenerateStart_Text{Text: "Once upon a time"}})
		b.start("dup", &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 1, Prompt: &corelmv1.GenerateStart_Text{Text: "x"}})
		f := b.final("dup")
		if f.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_ERROR {
			// The first finished before the second arrived: nothing
			// to check (this ordering is rare).
			t.Skipf("the first dup ended first: %v", f)
		}
		checkRefusal(t, finalStatus(f), codes.InvalidArgument, []string{`"dup"`, "already running"})
		b.until(func() bool { return len(b.finals["dup"]) == 2 })
		if f := b.finals["dup"][1]; f.GetErrorCode() != 0 {
			t.Errorf("the first dup ended with %v", f)
		}
	})
	b.t = t
	t.Run("cancel of an unknown id", func(t *testing.T) {
		b.t = t
		b.cancel("ghost")
		checkRefusal(t, finalStatus(b.final("ghost")), codes.NotFound, []string{`"ghost"`, "no generation"})
	})
	b.t = t
	t.Run("empty frame", func(t *testing.T) {
		b.t = t
		if err := b.stream.Send(&corelmv1.GenerateRequest{}); err != nil {
			t.Fatal(err)
		}
		checkRefusal(t, finalStatus(b.final("")), codes.InvalidArgument, []string{"empty frame"})
	})
	b.t = t
	b.start("good", &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 2, Prompt: &corelmv1.GenerateStart_Text{Text: "Once"}})
	if f := b.final("good"); f.GetUsage().GetCompletionTokens() != 2 || f.GetErrorCode() != 0 {
		t.Errorf("good request after the malformed ones: %v", f)
	}
	if f := b.final("long"); f.GetErrorCode() != 0 || f.GetUsage().GetCompletionTokens() == 0 {
		t.Errorf("the long generation: %v", f)
	}
	b.close()
	// After half-close the client cannot send a Start at all: the
	// transport refuses it on the client's side.
	if err := b.stream.Send(&corelmv1.GenerateRequest{Frame: &corelmv1.GenerateRequest_Start{Start: &corelmv1.GenerateStart{RequestId: "late"}}}); err == nil {
		t.Error("a Start after half-close was sent")
	}
}

// TestStreamGenerationLimit: with --max-stream-generations 2, a third
// generation on the stream is refused (ResourceExhausted, saying why)
// while the two running finish; another stream is not affected.
func TestStreamGenerationLimit(t *testing.T) {
	client, _ := serveInProcess(t, Options{Threads: 1, Context: 256, MaxStreamGenerations: 2})
	b := openBidi(t, client)
	long := func() *corelmv1.GenerateStart {
		return &corelmv1.GenerateStart{ModelId: "stories", Prompt: &corelmv1.GenerateStart_Text{Text: "Once upon a time"}}
	}
	b.start("a", long())
	b.start("b", long())
	b.start("c", long())
	checkRefusal(t, finalStatus(b.final("c")), codes.ResourceExhausted, []string{"already runs 2 generations", "--max-stream-generations"})
	other := openBidi(t, client)
	other.start("x", &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 2, Prompt: &corelmv1.GenerateStart_Text{Text: "Once"}})
	if f := other.final("x"); f.GetErrorCode() != 0 {
		t.Errorf("another stream: %v", f)
	}
	other.close()
	for _, id := range []string{"a", "b"} {
		if f := b.final(id); f.GetErrorCode() != 0 || f.GetUsage().GetCompletionTokens() == 0 {
			t.Errorf("running generation %s: %v", id, f)
		}
	}
	// Once they ended, the stream takes new ones.
	b.start("d", &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 2, Prompt: &corelmv1.GenerateStart_Text{Text: "Once"}})
	if f := b.final("d"); f.GetErrorCode() != 0 {
		t.Errorf("after the running ones ended: %v", f)
	}
	b.close()
}

// TestSpecialTokenText: special-token text in a prompt, or in a chat
// message, is plain text unless the request sets parse_special
// (TestChatControlText checks the ids).
func TestSpecialTokenText(t *testing.T) {
	client, _ := serveInProcess(t, Options{Threads: 1})
	no := false
	promptTokens := func(req *corelmv1.GenerateStart) int32 {
		t.Helper()
		s, err := client.GenerateStream(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		f := lastFinal(s)
		if f == nil || f.GetErrorCode() != 0 {
			t.Fatalf("final %v", f)
		}
		return f.GetUsage().GetPromptTokens()
	}
	text := func(parse bool) int32 {
		return promptTokens(&corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 1, AddBos: &no, ParseSpecial: parse,
			Prompt: &corelmv1.GenerateStart_Text{Text: "</s>"}})
	}
	if n := text(true); n != 1 {
		t.Errorf("with parse_special, \"</s>\" is %d tokens, want the one special token", n)
	}
	if n := text(false); n <= 1 {
		t.Errorf("without parse_special, \"</s>\" is %d token(s), want plain text", n)
	}
	// The same in a chat message (ChatML, the stories model's fallback).
	chat := func(parse bool) int32 {
		return promptTokens(&corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 1, ParseSpecial: parse,
			Prompt: &corelmv1.GenerateStart_Chat{Chat: &corelmv1.ChatPrompt{Messages: []*corelmv1.ChatMessage{{Role: "user", Content: "</s>"}}}}})
	}
	if parsed, plain := chat(true), chat(false); plain <= parsed {
		t.Errorf("a chat message \"</s>\": %d prompt tokens with parse_special, %d without; want more without (plain text)", parsed, plain)
	}
}

// TestTooLargeStatus: a request whose KV cache exceeds the whole budget
// (sched.ErrTooLarge; the service's memory plan makes the budget hold a
// full-context sequence, so only the scheduler's own test can make one) is
// InvalidArgument, not a ResourceExhausted to retry; a panicking model
// gives the client no panic text.
func TestTooLargeStatus(t *testing.T) {
	if c := toStatus(fmt.Errorf("%w: needs more", sched.ErrTooLarge)).Code(); c != codes.InvalidArgument {
		t.Errorf("ErrTooLarge: %v, want InvalidArgument", c)
	}
	st := toStatus(fmt.Errorf("%w: panic: index out of range\ngoroutine 7 [running]:", sched.ErrModelPanic))
	if st.Code() != codes.Internal || strings.Contains(st.Message(), "goroutine") || strings.Contains(st.Message(), "index") {
		t.Errorf("model panic: %v", st)
	}
}

// TestOversizedMessage: a request message over the 4 MiB default is
// ResourceExhausted for its call (on a Generate stream: the stream's
// status, as the frame cannot be read); the connection serves the next
// calls.
func TestOversizedMessage(t *testing.T) {
	client, _ := serveInProcess(t, Options{Threads: 1})
	huge := &corelmv1.GenerateStart{ModelId: "stories", RequestId: "huge", Prompt: &corelmv1.GenerateStart_Text{Text: strings.Repeat("x", 5<<20)}}
	s, err := client.GenerateStream(t.Context(), huge)
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("GenerateStream of 5 MiB: %v, want ResourceExhausted", err)
	}
	b := openBidi(t, client)
	if err := b.stream.Send(&corelmv1.GenerateRequest{Frame: &corelmv1.GenerateRequest_Start{Start: huge}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.stream.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Generate frame of 5 MiB: %v, want ResourceExhausted", err)
	}
	s, err = client.GenerateStream(t.Context(), &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 2, Prompt: &corelmv1.GenerateStart_Text{Text: "Once"}})
	if err != nil {
		t.Fatal(err)
	}
	if f := lastFinal(s); f.GetErrorCode() != 0 || f.GetUsage().GetCompletionTokens() != 2 {
		t.Errorf("the next call on the connection: %v", f)
	}
}
