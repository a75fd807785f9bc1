package server

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/corelm/corelm/internal/leakcheck"
	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/pkg/runtime/sched"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// TestSlowReader (issue 16, "a client that stops reading"): a client (on
// a Generate stream, then with a GenerateStream call) starts a long
// generation and stops calling Recv. Its connection's flow control fills, the server's Send blocks, the scheduler's event buffer
// for that request fills and the request pauses: its KV cache stops
// growing while another client's generations on the same server run and
// give the greedy reference's tokens, in a time comparable to a run
// without the stuck client. When the stuck client goes away its slot and
// KV cache are freed and no goroutine is left.
func TestSlowReader(t *testing.T) {
	leakcheck.Check(t)
	addr := servicetest.ServeAt(t, func(ctx context.Context, lis net.Listener) error {
		return Serve(ctx, lis, Config{Options: Options{Threads: 1, MaxSeqs: 4, Context: 2048}, ModelFile: EmbeddedModel, Grace: 30 * time.Second})
	})
	dial := func(opts ...grpc.DialOption) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	conn := dial()
	servicetest.WaitServing(t, conn, "")
	client := corelmv1.NewInferenceServiceClient(conn)

	const text, tokens = "Once upon a time", 200
	_, want, _ := servicetest.Greedy(t, text, tokens)
	other := func(what string) time.Duration {
		t.Helper()
		begin := time.Now()
		var ids []int32
		stream, err := client.GenerateStream(t.Context(), greedyStart(text, tokens))
		if err != nil {
			t.Fatal(err)
		}
		err = servicetest.RecvAll(stream.Recv, func(r *corelmv1.GenerateResponse) {
			if tok := r.GetToken(); tok != nil {
				ids = append(ids, tok.GetId())
			}
		})
		if err != nil || !slices.Equal(ids, want) {
			t.Fatalf("%s: %d tokens, err %v; want the %d of the greedy reference", what, len(ids), err, len(want))
		}
		return time.Since(begin)
	}
	alone := other("a generation alone")

	// The stuck client has a connection of its own with fixed 64 KiB
	// windows (no BDP growth) and asks for the whole context, so that its
	// request cannot end while the others run. Its frames are made large
	// so that a few hundred fill the window: on a Generate stream by a
	// 4 KiB request id that every frame repeats (~16 frames), on
	// GenerateStream by 20 top logprobs per token (~250).
	stuckConn := dial(grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	stuckClient := corelmv1.NewInferenceServiceClient(stuckConn)
	for _, tt := range []struct {
		name  string
		start func(t *testing.T, ctx context.Context) // starts the stuck request and reads one frame
	}{
		{"Generate", func(t *testing.T, ctx context.Context) {
			stuck, err := stuckClient.Generate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			start := greedyStart(text, 2000)
			start.RequestId = strings.Repeat("s", 4096)
			if err := stuck.Send(&corelmv1.GenerateRequest{Frame: &corelmv1.GenerateRequest_Start{Start: start}}); err != nil {
				t.Fatal(err)
			}
			if _, err := stuck.Recv(); err != nil {
				t.Fatal(err)
			}
		}},
		{"GenerateStream", func(t *testing.T, ctx context.Context) {
			if raceEnabled { // 250 tokens with top logprobs take a minute; Generate covers the server's path
				t.Skip("the race detector makes this case take a minute")
			}
			start := greedyStart(text, 2000)
			start.Logprobs, start.TopLogprobs = true, sched.MaxTopLogprobs
			stuck, err := stuckClient.GenerateStream(ctx, start)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := stuck.Recv(); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			tt.start(t, ctx) // no more reads from here on

			// Paused: the stuck request's KV cache stops growing while the other
			// client's generations run (each 200 steps; the pause comes within
			// a few hundred tokens, once its pump has caught up), then stays put for a
			// whole generation.
			took := []time.Duration{}
			kv := modelStatus(t, client).GetKvBytesInUse()
			for round := 0; ; round++ {
				took = append(took, other("a generation beside the stuck client"))
				st := modelStatus(t, client)
				if st.GetActiveSequences() != 1 {
					t.Fatalf("after a generation beside the stuck one: %v; want the stuck one still running", st)
				}
				if st.GetKvBytesInUse() == kv {
					break
				}
				if round == 9 {
					t.Fatalf("the stuck request's KV cache still grows (%d bytes, was %d) after %d generations beside it: not paused", st.GetKvBytesInUse(), kv, round+1)
				}
				kv = st.GetKvBytesInUse()
			}
			t.Logf("%d tokens alone %v, beside the stuck client %v; the stuck request holds %d KV bytes",
				tokens, alone.Round(time.Millisecond), took, kv)
			// Generous: the shared CPU varies; a stuck client that held the
			// scheduler up would show as a generation that never ends.
			if limit := 5*alone + 5*time.Second; slices.Max(took) > limit {
				t.Errorf("beside the stuck client generations took %v, alone %v", took, alone)
			}

			cancel() // the stuck client goes away
			servicetest.WaitIdle(t, client, 10*time.Second)
		})
	}
}

func greedyStart(text string, maxTokens int32) *corelmv1.GenerateStart {
	temp := float32(0)
	return &corelmv1.GenerateStart{
		ModelId: "stories", MaxTokens: maxTokens, Sampling: &corelmv1.SamplingParams{Temperature: &temp},
		Prompt: &corelmv1.GenerateStart_Text{Text: text},
	}
}

// modelStatus is the stories model's line of GetStatus.
func modelStatus(t *testing.T, c corelmv1.InferenceServiceClient) *corelmv1.ModelStatus {
	t.Helper()
	s, err := c.GetStatus(t.Context(), &corelmv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range s.GetModels() {
		if m.GetModelId() == "stories" {
			return m
		}
	}
	t.Fatalf("no stories in %v", s)
	return nil
}
