package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/pkg/runtime/chat"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// TestChatLocal: a scripted session over a pipe with the embedded model.
// Each prompt the template renders is the whole conversation so far: the
// second holds the first reply as the terminal showed it; after /clear
// only the system message is left. The session ends at end of input.
func TestChatLocal(t *testing.T) {
	out, errOut, code := corelmWith(t, "Hello\nHow are you?\n/clear\nAgain\n", nil,
		"chat", "--system", "Be brief.", "--temperature", "0", "--max-tokens", "8", "--show-prompt")
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	var prompts []string
	for _, line := range strings.Split(errOut, "\n") {
		if _, q, ok := strings.Cut(line, " tokens): "); ok && strings.HasPrefix(line, "prompt (") {
			p, err := strconv.Unquote(q)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			prompts = append(prompts, p)
		}
	}
	if len(prompts) != 3 {
		t.Fatalf("%d prompts, want 3 (two turns, /clear, one more):\n%s", len(prompts), errOut)
	}
	// The embedded model has no chat template: ChatML.
	turn := func(role, content string) string { return "<|im_start|>" + role + "\n" + content + "<|im_end|>\n" }
	const assistant = "<|im_start|>assistant\n"
	first := turn("system", "Be brief.") + turn("user", "Hello") + assistant
	if prompts[0] != first {
		t.Errorf("first prompt %q\nwant %q", prompts[0], first)
	}
	reply, ok := strings.CutPrefix(prompts[1], first)
	if ok {
		reply, ok = strings.CutSuffix(reply, "<|im_end|>\n"+turn("user", "How are you?")+assistant)
	}
	if !ok || reply == "" {
		t.Fatalf("second prompt %q\ndoes not continue the first with a reply and the second message", prompts[1])
	}
	if !strings.HasPrefix(out, reply+"\n") {
		t.Errorf("the history's reply %q is not the one printed:\n%s", reply, out)
	}
	if want := turn("system", "Be brief.") + turn("user", "Again") + assistant; prompts[2] != want {
		t.Errorf("prompt after /clear %q\nwant %q", prompts[2], want)
	}
}

// fakeChat is an inference server whose replies the test controls: "reply
// to MESSAGE", or for "wait" the text "partial" and then nothing until the
// call is cancelled. It records the requests.
type fakeChat struct {
	corelmv1.UnimplementedInferenceServiceServer
	mu   sync.Mutex
	reqs []*corelmv1.GenerateStart
}

func (f *fakeChat) GetModel(ctx context.Context, req *corelmv1.GetModelRequest) (*corelmv1.GetModelResponse, error) {
	return &corelmv1.GetModelResponse{Model: &corelmv1.ModelInfo{ModelId: req.GetModelId(), HasChatTemplate: true}}, nil
}

func (f *fakeChat) GenerateStream(req *corelmv1.GenerateStart, stream grpc.ServerStreamingServer[corelmv1.GenerateResponse]) error {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	msgs := req.GetChat().GetMessages()
	last := msgs[len(msgs)-1].GetContent()
	token := func(text string) error {
		return stream.Send(&corelmv1.GenerateResponse{Frame: &corelmv1.GenerateResponse_Token{Token: &corelmv1.GeneratedToken{Text: text}}})
	}
	if last == "wait" {
		if err := token("partial"); err != nil {
			return err
		}
		<-stream.Context().Done()
		return status.FromContextError(stream.Context().Err()).Err()
	}
	for _, piece := range []string{"reply to ", last} {
		if err := token(piece); err != nil {
			return err
		}
	}
	return stream.Send(&corelmv1.GenerateResponse{Frame: &corelmv1.GenerateResponse_Final{Final: &corelmv1.GenerateFinal{
		FinishReason: corelmv1.FinishReason_FINISH_REASON_STOP,
	}}})
}

// request is the n-th request's conversation as "role: content" lines.
func (f *fakeChat) request(t *testing.T, n int) []string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if n >= len(f.reqs) {
		t.Fatalf("%d requests, want at least %d", len(f.reqs), n+1)
	}
	var out []string
	for _, m := range f.reqs[n].GetChat().GetMessages() {
		out = append(out, m.GetRole()+": "+m.GetContent())
	}
	return out
}

// TestChatInterrupt runs `corelm chat --server` as a process against a
// server that replies on cue. SIGINT in the middle of a reply stops that
// reply, keeps what it wrote in the history and the session goes on;
// /clear forgets the history; SIGINT while waiting for a message ends the
// session with status 0.
func TestChatInterrupt(t *testing.T) {
	fake := &fakeChat{}
	addr := servicetest.ServeGRPC(t, func(gs *grpc.Server) { corelmv1.RegisterInferenceServiceServer(gs, fake) })

	// A hung CLI is killed, which ends the reads below.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := cli(ctx, "chat", "--server", addr, "--model", "m", "--system", "S")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdout := bufio.NewReader(stdoutPipe)
	say := func(line string) {
		t.Helper()
		if _, err := io.WriteString(stdin, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want string) {
		t.Helper()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(stdout, got); err != nil || string(got) != want {
			t.Fatalf("stdout %q (%v), want %q\nstderr: %s", got, err, want, stderr.String())
		}
	}
	interrupt := func() {
		t.Helper()
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
	}

	say("Hello")
	expect("reply to Hello\n")
	say("wait")
	expect("partial") // the server now holds the reply open
	interrupt()
	expect("\n")
	say("Again")
	expect("reply to Again\n")
	want := []string{"system: S", "user: Hello", "assistant: reply to Hello", "user: wait", "assistant: partial", "user: Again"}
	if got := fake.request(t, 2); !slices.Equal(got, want) {
		t.Errorf("third request's conversation %q\nwant %q", got, want)
	}
	say("/clear")
	say("Fresh")
	expect("reply to Fresh\n")
	if got, want := fake.request(t, 3), []string{"system: S", "user: Fresh"}; !slices.Equal(got, want) {
		t.Errorf("conversation after /clear %q\nwant %q", got, want)
	}

	interrupt() // at the prompt: the session ends
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("Ctrl-C at the prompt: exit %d (%v), want 0\nstderr: %s", code, err, stderr.String())
	}
	if rest, _ := io.ReadAll(stdout); len(rest) != 0 {
		t.Errorf("more output after the last reply: %q", rest)
	}
}

// TestChatSession drives the session in the test process with a scripted
// model: multi-line messages, a conversation that outgrows the context,
// commands, and what a failed reply does from a pipe.
func TestChatSession(t *testing.T) {
	tests := []struct {
		name   string
		input  string
		system string
		// fail makes the model fail on a conversation of more messages.
		fail    int
		failErr error
		calls   [][]string // the conversations the model was asked to continue
		out     string
		err     error
	}{
		{
			name:  "multi-line",
			input: "\"\"\"one\ntwo\"\"\"\n\"\"\"\nthree\n\"\"\"\n\"\"\"four\"\"\"\n",
			calls: [][]string{{"user: one\ntwo"}, {"user: one\ntwo", "assistant: <one\ntwo>", "user: three"},
				{"user: one\ntwo", "assistant: <one\ntwo>", "user: three", "assistant: <three>", "user: four"}},
			out: "<one\ntwo>\n<three>\n<four>\n",
		},
		{
			name:   "outgrows the context",
			input:  "a\nb\nc\n",
			system: "S",
			fail:   3, failErr: errPromptTooLong,
			calls: [][]string{{"system: S", "user: a"}, {"system: S", "user: a", "assistant: <a>", "user: b"},
				{"system: S", "user: b"}, {"system: S", "user: b", "assistant: <b>", "user: c"}, {"system: S", "user: c"}},
			out: "<a>\n<b>\n<c>\n",
		},
		{
			name:  "commands",
			input: "/nope\n\n   \nx\n/bye\ny\n",
			calls: [][]string{{"user: x"}},
			out:   "<x>\n",
		},
		{
			name:  "a failed reply ends a piped session",
			input: "a\nb\nc\n",
			fail:  2, failErr: errors.New("boom"),
			calls: [][]string{{"user: a"}, {"user: a", "assistant: <a>", "user: b"}},
			out:   "<a>\n",
			err:   errors.New("boom"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls [][]string
			reply := func(ctx context.Context, msgs []chat.Message, text func(string) error) error {
				var call []string
				for _, m := range msgs {
					call = append(call, m.Role+": "+m.Content)
				}
				calls = append(calls, call)
				if tt.fail > 0 && len(msgs) > tt.fail {
					return tt.failErr
				}
				return text("<" + msgs[len(msgs)-1].Content + ">")
			}
			var out, errOut strings.Builder
			s := &chatSession{in: strings.NewReader(tt.input), out: &out, errOut: &errOut, system: tt.system, reply: reply}
			err := s.run(context.Background())
			if (err == nil) != (tt.err == nil) || (err != nil && err.Error() != tt.err.Error()) {
				t.Errorf("run: %v, want %v", err, tt.err)
			}
			if out.String() != tt.out {
				t.Errorf("output %q, want %q (stderr %q)", out.String(), tt.out, errOut.String())
			}
			if !slices.EqualFunc(calls, tt.calls, slices.Equal) {
				t.Errorf("the model was asked\n%q\nwant\n%q", calls, tt.calls)
			}
		})
	}
}

// TestChatSessionSignals: SIGTERM during a reply ends the session; Ctrl-C
// during a reply that has written nothing leaves no trace in the history.
func TestChatSessionSignals(t *testing.T) {
	in, inW := io.Pipe()
	defer inW.Close()
	signals := make(chan os.Signal)
	started := make(chan struct{})
	var calls [][]chat.Message
	reply := func(ctx context.Context, msgs []chat.Message, text func(string) error) error {
		calls = append(calls, msgs)
		if msgs[len(msgs)-1].Content == "hang" {
			started <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}
		return text("ok")
	}
	s := &chatSession{in: in, out: io.Discard, errOut: io.Discard, reply: reply, signals: signals}
	done := make(chan error, 1)
	go func() { done <- s.run(context.Background()) }()

	io.WriteString(inW, "hang\n")
	<-started
	signals <- os.Interrupt // stops the reply, which wrote nothing
	io.WriteString(inW, "next\n")
	io.WriteString(inW, "hang\n")
	<-started
	signals <- syscall.SIGTERM
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	if len(calls) != 3 || len(calls[1]) != 1 || calls[1][0].Content != "next" {
		t.Errorf("conversations %v: want the interrupted message gone from the second", calls)
	}
}

// TestChatLocalReusesKV: each turn of a local chat prefills only what the
// previous turn did not: -v reports the prompt tokens the session's cache
// served, none on the first turn, most of the prompt on the second. (That a
// reused prefix gives the tokens of an uncached run is sched's tests'.)
func TestChatLocalReusesKV(t *testing.T) {
	args := []string{"chat", "--system", "Be brief.", "--temperature", "0", "--max-tokens", "8", "-v"}
	out, errOut, code := corelmWith(t, "Hello\nHow are you?\n", nil, args...)
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	var cached []int
	for _, line := range strings.Split(errOut, "\n") {
		if rest, ok := strings.CutSuffix(line, " prompt tokens from the cache"); ok {
			n, err := strconv.Atoi(rest[strings.LastIndex(rest, " ")+1:])
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			cached = append(cached, n)
		}
	}
	if len(cached) != 2 || cached[0] != 0 || cached[1] < 16 {
		t.Fatalf("cached prompt tokens per turn %v, want 0 then most of the first turn's\n%s", cached, errOut)
	}
}
