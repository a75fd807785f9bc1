package main

// End-to-end tests: the real loader and inference binaries talking over
// loopback with a temporary shared-memory directory.

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/models"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

// start runs the loader or the inference binary, built once per run, on a
// port the kernel picks and returns it once it serves.
func start(t *testing.T, name string, args ...string) *servicetest.Proc {
	t.Helper()
	pkg := map[string]string{"loader": "../loader", "inference": "."}[name]
	cmd := exec.Command(servicetest.Binary(t, pkg), append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "CORELM_THREADS=1")
	return servicetest.Start(t, cmd, servicetest.ServingAddr)
}

// stack is a loader with stories published and an inference server watching it.
type stack struct {
	loader, inference *servicetest.Proc
	client            corelmv1.InferenceServiceClient
	loaderClient      corelmv1.LoaderServiceClient
}

func startStack(t *testing.T, inferenceArgs ...string) *stack {
	t.Helper()
	src, shm := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "stories260K.gguf"), models.Stories, 0o644); err != nil {
		t.Fatal(err)
	}
	st := &stack{loader: start(t, "loader", "--source-dir", src, "--shm-dir", shm)}
	st.loaderClient = corelmv1.NewLoaderServiceClient(st.loader.Conn)
	loadStories(t, st.loaderClient, false)
	st.inference = start(t, "inference", append([]string{"--loader", st.loader.Addr}, inferenceArgs...)...)
	st.client = corelmv1.NewInferenceServiceClient(st.inference.Conn)
	waitModel(t, st.client, "stories", 1)
	return st
}

// loadStories asks the loader to publish the model and returns its generation.
func loadStories(t *testing.T, lc corelmv1.LoaderServiceClient, reload bool) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	stream, err := lc.LoadModel(ctx, &corelmv1.LoadModelRequest{ModelId: "stories", Path: "stories260K.gguf", Reload: reload})
	if err != nil {
		t.Fatal(err)
	}
	for {
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("load: %v", err)
		}
		if r.GetStage() == corelmv1.LoadStage_LOAD_STAGE_READY {
			return r.GetModel().GetGeneration()
		}
	}
}

// waitModel polls until the inference server serves id at generation ≥ gen.
func waitModel(t *testing.T, c corelmv1.InferenceServiceClient, id string, gen uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := c.GetModel(t.Context(), &corelmv1.GetModelRequest{ModelId: id})
		if err == nil && r.GetModel().GetGeneration() >= gen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("model %s generation %d not served: %v %v", id, gen, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func greedy(text string, maxTokens int32) *corelmv1.GenerateStart {
	temp := float32(0)
	return &corelmv1.GenerateStart{ModelId: "stories", Prompt: &corelmv1.GenerateStart_Text{Text: text}, MaxTokens: maxTokens,
		Sampling: &corelmv1.SamplingParams{Temperature: &temp}}
}

// result is one generation as a client saw it.
type result struct {
	ids   []int32
	text  string
	final *corelmv1.GenerateFinal
}

func (r *result) add(resp *corelmv1.GenerateResponse) {
	switch f := resp.GetFrame().(type) {
	case *corelmv1.GenerateResponse_Token:
		if f.Token.GetId() >= 0 {
			r.ids = append(r.ids, f.Token.GetId())
		}
		r.text += f.Token.GetText()
	case *corelmv1.GenerateResponse_Final:
		r.text += f.Final.GetText()
		r.final = f.Final
	}
}

func generateStream(ctx context.Context, c corelmv1.InferenceServiceClient, req *corelmv1.GenerateStart) (*result, error) {
	stream, err := c.GenerateStream(ctx, req)
	if err != nil {
		return nil, err
	}
	r := &result{}
	return r, servicetest.RecvAll(stream.Recv, r.add)
}

// startStream starts req and reads its first frame into the returned
// result: from then on the generation holds its model mapping, and the rest
// of the stream is for the caller to read.
func startStream(t *testing.T, c corelmv1.InferenceServiceClient, req *corelmv1.GenerateStart) (corelmv1.InferenceService_GenerateStreamClient, *result) {
	t.Helper()
	stream, err := c.GenerateStream(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	r := &result{}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	r.add(resp)
	return stream, r
}

func TestE2EGreedyEqualsGenerate(t *testing.T) {
	st := startStack(t)
	const text = "Once upon a time"
	prompt, want, wantText := servicetest.Greedy(t, text, 64)
	r, err := generateStream(t.Context(), st.client, greedy(text, 64))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.ids, want) {
		t.Fatalf("over gRPC %v\nGenerate  %v", r.ids, want)
	}
	if r.text != wantText {
		t.Errorf("text %q, want %q", r.text, wantText)
	}
	f := r.final
	if f.GetUsage().GetPromptTokens() != int32(len(prompt)) || f.GetUsage().GetCompletionTokens() != int32(len(want)) {
		t.Errorf("usage %v, want %d prompt, %d completion", f.GetUsage(), len(prompt), len(want))
	}
	if f.GetTimings().GetTimeToFirstTokenNs() <= 0 || f.GetTimings().GetDecodeNs() <= 0 {
		t.Errorf("timings %v", f.GetTimings())
	}
	// The bidi stream gives the same tokens.
	stream, err := st.client.Generate(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	start := greedy(text, 64)
	start.RequestId = "a"
	if err := stream.Send(&corelmv1.GenerateRequest{Frame: &corelmv1.GenerateRequest_Start{Start: start}}); err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	rb := &result{}
	err = servicetest.RecvAll(stream.Recv, func(resp *corelmv1.GenerateResponse) {
		if resp.GetRequestId() != "a" {
			t.Errorf("frame for request %q", resp.GetRequestId())
		}
		rb.add(resp)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rb.ids, want) {
		t.Errorf("bidi %v, want %v", rb.ids, want)
	}
}

func TestE2EMultiplexCancel(t *testing.T) {
	st := startStack(t)
	_, wantB, _ := servicetest.Greedy(t, "The cat", 48)
	_, wantC, _ := servicetest.Greedy(t, "Once upon a time", 40)
	stream, err := st.client.Generate(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	send := func(fr *corelmv1.GenerateRequest) {
		t.Helper()
		if err := stream.Send(fr); err != nil {
			t.Fatal(err)
		}
	}
	starts := map[string]*corelmv1.GenerateStart{
		"a": greedy("Once upon a time", 0), // until the context is full: cancelled below
		"b": greedy("The cat", 48),
		"c": greedy("Once upon a time", 40),
	}
	for _, id := range []string{"a", "b", "c"} {
		starts[id].RequestId = id
		send(&corelmv1.GenerateRequest{Frame: &corelmv1.GenerateRequest_Start{Start: starts[id]}})
	}
	res := map[string]*result{"a": {}, "b": {}, "c": {}}
	var order []string
	cancelled := false
	for res["a"].final == nil || res["b"].final == nil || res["c"].final == nil {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		id := resp.GetRequestId()
		r := res[id]
		if r == nil {
			t.Fatalf("frame for unknown request %q", id)
		}
		r.add(resp)
		if resp.GetToken() != nil {
			order = append(order, id)
		}
		// Cancel a while b and c are running.
		if !cancelled && len(res["b"].ids) == 2 {
			send(&corelmv1.GenerateRequest{Frame: &corelmv1.GenerateRequest_Cancel{Cancel: &corelmv1.GenerateCancel{RequestId: "a"}}})
			cancelled = true
		}
	}
	stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("stream end: %v", err)
	}
	for id, want := range map[string][]int32{"b": wantB, "c": wantC} {
		if r := res[id]; !slices.Equal(r.ids, want) || r.final.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_LENGTH {
			t.Errorf("%s: %v (%v), want %v", id, r.ids, r.final.GetFinishReason(), want)
		}
	}
	if fa := res["a"].final; fa.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_CANCELLED ||
		fa.GetUsage().GetCompletionTokens() != int32(len(res["a"].ids)) {
		t.Errorf("a: final %v after %d tokens", fa, len(res["a"].ids))
	}
	// b and c ran together: each had its first token before the other
	// finished (the final frames' timings count from each request's
	// submission, and they were sent back to back). The order frames
	// arrive in is not checked: it depends on how the two requests'
	// senders are scheduled, which a loaded machine can serialise.
	fb, fc := res["b"].final.GetTimings(), res["c"].final.GetTimings()
	end := func(tm *corelmv1.Timings) int64 { return tm.GetQueueNs() + tm.GetPrefillNs() + tm.GetDecodeNs() }
	if fc.GetTimeToFirstTokenNs() >= end(fb) || fb.GetTimeToFirstTokenNs() >= end(fc) {
		t.Errorf("b and c did not run together: b first token at %v, end %v; c first token at %v, end %v (frames %v)",
			time.Duration(fb.GetTimeToFirstTokenNs()), time.Duration(end(fb)), time.Duration(fc.GetTimeToFirstTokenNs()), time.Duration(end(fc)), order)
	}
	servicetest.WaitIdle(t, st.client, 5*time.Second)
}

func TestE2EClientGoneFreesSlot(t *testing.T) {
	st := startStack(t)
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := st.client.GenerateStream(ctx, greedy("Once upon a time", 0))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	s, err := st.client.GetStatus(t.Context(), &corelmv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if s.GetActiveSequences() != 1 || s.GetKvBytesInUse() == 0 {
		t.Fatalf("status while generating: %v", s)
	}
	// Stop reading so the sequence is paused on backpressure or still
	// running, then vanish.
	cancel()
	servicetest.WaitIdle(t, st.client, 5*time.Second)
}

func TestE2EGenerationSwitch(t *testing.T) {
	st := startStack(t)
	gen1 := mustGeneration(t, st.client)
	// A long generation on the first mapping, read slowly.
	stream, first := startStream(t, st.client, greedy("Once upon a time", 400))
	gen2 := loadStories(t, st.loaderClient, true)
	if gen2 <= gen1 {
		t.Fatalf("reload gave generation %d after %d", gen2, gen1)
	}
	waitModel(t, st.client, "stories", gen2)
	// New requests run on the new generation while the old one finishes.
	r, err := generateStream(t.Context(), st.client, greedy("The dog", 16))
	if err != nil || r.final.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_LENGTH {
		t.Fatalf("request on the new generation: %v %v", r, err)
	}
	if err := servicetest.RecvAll(stream.Recv, first.add); err != nil {
		t.Fatal(err)
	}
	_, want, _ := servicetest.Greedy(t, "Once upon a time", 400)
	if !slices.Equal(first.ids, want) {
		t.Errorf("generation across the switch: %d tokens, want %d equal to Generate", len(first.ids), len(want))
	}
	servicetest.WaitIdle(t, st.client, 5*time.Second)
}

func mustGeneration(t *testing.T, c corelmv1.InferenceServiceClient) uint64 {
	t.Helper()
	r, err := c.GetModel(t.Context(), &corelmv1.GetModelRequest{ModelId: "stories"})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetModel().GetGeneration()
}

func TestE2EErrorsAndAuth(t *testing.T) {
	p := start(t, "inference", "--model-file", "stories", "--auth-token", "s3cret")
	c := corelmv1.NewInferenceServiceClient(p.Conn)
	// Health needs no token.
	hr, err := healthpb.NewHealthClient(p.Conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hr, err)
	}
	if _, err := c.ListModels(t.Context(), &corelmv1.ListModelsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("without token: %v", err)
	}
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer s3cret")
	tests := []struct {
		name string
		req  *corelmv1.GenerateStart
		want codes.Code
	}{
		{"unknown model", &corelmv1.GenerateStart{ModelId: "nope", Prompt: &corelmv1.GenerateStart_Text{Text: "x"}}, codes.NotFound},
		{"no prompt", &corelmv1.GenerateStart{ModelId: "stories"}, codes.InvalidArgument},
		{"bad token id", &corelmv1.GenerateStart{ModelId: "stories", Prompt: &corelmv1.GenerateStart_TokenIds{TokenIds: &corelmv1.TokenIds{Ids: []int32{1, 9999}}}}, codes.InvalidArgument},
		{"bad temperature", func() *corelmv1.GenerateStart {
			r := greedy("x", 4)
			temp := float32(-1)
			r.Sampling.Temperature = &temp
			return r
		}(), codes.InvalidArgument},
		{"prompt too long", &corelmv1.GenerateStart{ModelId: "stories", Prompt: &corelmv1.GenerateStart_Text{Text: strings.Repeat("Once upon a time ", 800)}}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		_, err := generateStream(ctx, c, tt.req)
		if status.Code(err) != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	ctxShort, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	<-ctxShort.Done()
	if _, err := generateStream(ctxShort, c, greedy("Once", 0)); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("deadline: %v", err)
	}
	r, err := generateStream(ctx, c, greedy("Once upon a time", 8))
	if err != nil || len(r.ids) != 8 {
		t.Errorf("with token: %v %v", r, err)
	}
}
