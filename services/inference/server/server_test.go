package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/leakcheck"
	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/sched"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

func TestToStatus(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{context.Canceled, codes.Canceled},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{badRequestf("bad"), codes.InvalidArgument},
		{fmt.Errorf("%w: p", sched.ErrPromptTooLong), codes.InvalidArgument},
		{fmt.Errorf("%w: t", sample.ErrParams), codes.InvalidArgument},
		{fmt.Errorf("%w: m", ErrModelNotFound), codes.NotFound},
		{&sched.OverloadError{Reason: "full", RetryAfter: time.Second}, codes.ResourceExhausted},
		{sched.ErrClosed, codes.Unavailable},
		{ErrUnauthenticated, codes.Unauthenticated},
		{errors.New("boom"), codes.Internal},
		{status.Error(codes.Aborted, "as is"), codes.Aborted},
	}
	for _, tt := range tests {
		if got := toStatus(tt.err).Code(); got != tt.want {
			t.Errorf("toStatus(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	st := toStatus(&sched.OverloadError{Reason: "full", RetryAfter: 1500 * time.Millisecond})
	var ri *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			ri = r
		}
	}
	if ri == nil || ri.GetRetryDelay().AsDuration() != 1500*time.Millisecond {
		t.Errorf("overload details %v, want RetryInfo 1.5s", st.Details())
	}
}

// serveInProcess runs Serve on a loopback listener with the embedded model.
func serveInProcess(t *testing.T, opts Options) (corelmv1.InferenceServiceClient, func()) {
	t.Helper()
	return serveFile(t, opts, EmbeddedModel, "")
}

// serveFile serves one model file in process.
func serveFile(t *testing.T, opts Options, file, id string) (corelmv1.InferenceServiceClient, func()) {
	t.Helper()
	conn, stop := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return Serve(ctx, lis, Config{Options: opts, ModelFile: file, ModelID: id, Grace: 30 * time.Second})
	})
	return corelmv1.NewInferenceServiceClient(conn), stop
}

// TestLoad runs 32 concurrent streams against a server with 4 slots and a
// queue of 8: each request completes with exact usage or is rejected with
// ResourceExhausted, nothing hangs, and no goroutine outlives the server.
func TestLoad(t *testing.T) {
	leakcheck.Check(t)
	client, _ := serveInProcess(t, Options{Threads: 1, MaxSeqs: 4, MaxQueue: 8})
	completed, refused := loadStreams(t, client, "stories", 32, func(i int) int32 { return int32(20 + i) })
	if completed+refused != 32 || completed < 12 {
		t.Errorf("%d completed + %d refused of 32", completed, refused)
	}
}

// TestLoadLargerModel runs 4 concurrent streams of a synthetic model 40×
// the size of the stories model (a 4-layer, 256-wide Llama in Q4_K_M).
func TestLoadLargerModel(t *testing.T) {
	path := writeTinyModel(t)
	leakcheck.Check(t)
	client, _ := serveFile(t, Options{Threads: 2, MaxSeqs: 4, MaxQueue: 4}, path, "tiny")
	completed, refused := loadStreams(t, client, "tiny", 4, func(int) int32 { return 24 })
	if completed != 4 || refused != 0 {
		t.Errorf("%d completed, %d refused of 4 (all fit the 4 slots)", completed, refused)
	}
}

// loadStreams runs n concurrent GenerateStream calls on model and checks
// that each completes with exact usage or is refused with ResourceExhausted.
func loadStreams(t *testing.T, client corelmv1.InferenceServiceClient, model string, n int, maxTokens func(i int) int32) (completed, refused int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for i := range n {
		wg.Go(func() {
			temp := float32(0.7)
			seed := uint64(i)
			maxTok := maxTokens(i)
			stream, err := client.GenerateStream(ctx, &corelmv1.GenerateStart{
				ModelId: model, Prompt: &corelmv1.GenerateStart_TokenIds{TokenIds: &corelmv1.TokenIds{Ids: []int32{1, 403, 407}}},
				MaxTokens: maxTok, Sampling: &corelmv1.SamplingParams{Temperature: &temp, Seed: &seed},
				StopTokenIds: []int32{},
			})
			tokens := int32(0)
			for err == nil {
				var resp *corelmv1.GenerateResponse
				resp, err = stream.Recv()
				if err != nil {
					break
				}
				if tk := resp.GetToken(); tk != nil && tk.GetId() >= 0 {
					tokens++
				}
				if f := resp.GetFinal(); f != nil {
					u := f.GetUsage()
					ok := u.GetPromptTokens() == 3 && u.GetCompletionTokens() == tokens &&
						(f.GetFinishReason() == corelmv1.FinishReason_FINISH_REASON_LENGTH && tokens == maxTok ||
							f.GetFinishReason() == corelmv1.FinishReason_FINISH_REASON_STOP && tokens < maxTok)
					if !ok {
						t.Errorf("request %d: final %v after %d tokens", i, f, tokens)
					}
					mu.Lock()
					completed++
					mu.Unlock()
				}
			}
			if err == io.EOF {
				return
			}
			if status.Code(err) == codes.ResourceExhausted {
				mu.Lock()
				refused++
				mu.Unlock()
				return
			}
			t.Errorf("request %d: %v", i, err)
		})
	}
	wg.Wait()
	t.Logf("%s: %d completed, %d refused", model, completed, refused)
	return completed, refused
}

// TestShutdownDrains: a generation running when the server is told to stop
// still completes within the grace period.
func TestShutdownDrains(t *testing.T) {
	client, stop := serveInProcess(t, Options{Threads: 1})
	temp := float32(0)
	stream, err := client.GenerateStream(t.Context(), &corelmv1.GenerateStart{
		ModelId: "stories", Prompt: &corelmv1.GenerateStart_Text{Text: "Once upon a time"}, MaxTokens: 100,
		Sampling: &corelmv1.SamplingParams{Temperature: &temp},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	final := lastFinal(stream)
	<-stopped
	if final.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_LENGTH && final.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_STOP {
		t.Errorf("final during shutdown: %v", final)
	}
}

func TestUnaryAndChat(t *testing.T) {
	client, _ := serveInProcess(t, Options{Threads: 1})
	ctx := t.Context()
	tr, err := client.Tokenize(ctx, &corelmv1.TokenizeRequest{ModelId: "stories", Text: "Once upon a time"})
	if err != nil || len(tr.GetIds()) == 0 || tr.GetIds()[0] != 1 || len(tr.GetPieces()) != len(tr.GetIds()) {
		t.Fatalf("tokenize: %v %v", tr, err)
	}
	dr, err := client.Detokenize(ctx, &corelmv1.DetokenizeRequest{ModelId: "stories", Ids: tr.GetIds()[1:]})
	if err != nil || dr.GetText() != "Once upon a time" {
		t.Errorf("detokenize: %q %v", dr.GetText(), err)
	}
	if _, err := client.Detokenize(ctx, &corelmv1.DetokenizeRequest{ModelId: "stories", Ids: []int32{99999}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("detokenize out of range: %v", err)
	}
	lr, err := client.ListModels(ctx, &corelmv1.ListModelsRequest{})
	if err != nil || len(lr.GetModels()) != 1 || lr.GetModels()[0].GetArchitecture() != "llama" || lr.GetModels()[0].GetVocabSize() != 512 {
		t.Errorf("list: %v %v", lr, err)
	}
	if _, err := client.GetModel(ctx, &corelmv1.GetModelRequest{ModelId: "other"}); status.Code(err) != codes.NotFound {
		t.Errorf("get unknown model: %v", err)
	}
	temp := float32(0)
	stream, err := client.GenerateStream(ctx, &corelmv1.GenerateStart{
		ModelId: "stories", MaxTokens: 8, Sampling: &corelmv1.SamplingParams{Temperature: &temp},
		Prompt: &corelmv1.GenerateStart_Chat{Chat: &corelmv1.ChatPrompt{
			Messages: []*corelmv1.ChatMessage{{Role: "user", Content: "Tell me a story"}}, AddGenerationPrompt: true,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	final := lastFinal(stream)
	if final.GetUsage().GetPromptTokens() < 5 || final.GetUsage().GetCompletionTokens() == 0 {
		t.Errorf("chat generation: %v", final)
	}
}

// lastFinal reads a stream to its end and returns its final frame (nil if
// none came).
func lastFinal(stream grpc.ServerStreamingClient[corelmv1.GenerateResponse]) (final *corelmv1.GenerateFinal) {
	servicetest.RecvAll(stream.Recv, func(resp *corelmv1.GenerateResponse) {
		if f := resp.GetFinal(); f != nil {
			final = f
		}
	})
	return final
}
