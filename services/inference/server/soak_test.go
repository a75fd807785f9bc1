package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/leakcheck"
	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// soakOutcome is how one request ended, from its client's side.
type soakOutcome int

const (
	soakCompleted soakOutcome = iota // a final frame without error
	soakCancelled                    // its client cancelled it (Cancel frame, context, disconnect)
	soakRetryable                    // ResourceExhausted or Unavailable
	soakRefused                      // InvalidArgument / NotFound, for a malformed request
	soakUnexpected
	soakOutcomes
)

var soakNames = [soakOutcomes]string{"completed", "cancelled by client", "retryable", "refused as malformed", "UNEXPECTED"}

// soakTally counts requests sent and how each ended.
type soakTally struct {
	mu      sync.Mutex
	sent    int
	counts  [soakOutcomes]int
	samples []string // the first unexpected outcomes
}

func (s *soakTally) add(o soakOutcome, what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[o]++
	if o == soakUnexpected && len(s.samples) < 10 {
		s.samples = append(s.samples, what)
	}
}

func (s *soakTally) send(n int) {
	s.mu.Lock()
	s.sent += n
	s.mu.Unlock()
}

// classify maps a refusal code to an outcome: malformed requests must be
// refused with InvalidArgument or NotFound, good ones only with a
// retryable code.
func classify(code codes.Code, malformed, cancelled bool) soakOutcome {
	switch {
	case code == codes.OK && !malformed:
		return soakCompleted
	case cancelled && code == codes.Canceled:
		return soakCancelled
	case code == codes.ResourceExhausted || code == codes.Unavailable:
		return soakRetryable
	case malformed && (code == codes.InvalidArgument || code == codes.NotFound):
		return soakRefused
	}
	return soakUnexpected
}

// soakRequest is a random request: good (greedy or sampled, a few dozen
// tokens) or one of the malformed kinds.
func soakRequest(r *rand.Rand) (req *corelmv1.GenerateStart, malformed bool) {
	texts := []string{"Once upon a time", "The cat", "Lily saw a dog", "Tom"}
	temp := float32(r.IntN(2)) * 0.8
	seed := r.Uint64()
	req = &corelmv1.GenerateStart{
		ModelId: "stories", MaxTokens: int32(4 + r.IntN(60)),
		Sampling: &corelmv1.SamplingParams{Temperature: &temp, Seed: &seed},
		Prompt:   &corelmv1.GenerateStart_Text{Text: texts[r.IntN(len(texts))]},
	}
	switch r.IntN(20) {
	case 0:
		req.ModelId = "no-such-model"
	case 1:
		bad := float32(-1)
		req.Sampling.Temperature = &bad
	case 2:
		req.MaxTokens = -1
	default:
		return req, false
	}
	return req, true
}

// TestSoak (issue 16): a mixed workload for a bounded time against an
// in-process server (20 s; CORELM_SOAK=5m for the long form): GenerateStream
// calls and bidi Generate streams of several requests, random Cancel frames,
// context cancels and abrupt disconnects, malformed requests mixed in, all
// from a fixed seed. Every request is accounted for (completed, cancelled
// by its client, refused with a retryable code, or refused as malformed),
// and once the server stops goroutines, open file descriptors and the heap
// are back to their baseline.
func TestSoak(t *testing.T) {
	d := 20 * time.Second
	if v := os.Getenv("CORELM_SOAK"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("CORELM_SOAK=%q: %v", v, err)
		}
	}
	fds := openFDs(t)
	heap := heapAlloc()
	leakcheck.Check(t)
	conn, stop := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return Serve(ctx, lis, Config{Options: Options{Threads: 1, MaxSeqs: 4, MaxQueue: 8, Context: 256}, ModelFile: EmbeddedModel, Grace: 30 * time.Second})
	})
	client := corelmv1.NewInferenceServiceClient(conn)

	var tally soakTally
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	const workers = 6
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(16, uint64(w)))
			for i := 0; time.Now().Before(deadline); i++ {
				if r.IntN(2) == 0 {
					soakStream(t, client, r, &tally)
				} else {
					soakBidi(t, client, conn.Target(), r, &tally, fmt.Sprintf("w%d-%d", w, i))
				}
			}
		})
	}
	wg.Wait()
	stop()

	total := 0
	for o, n := range tally.counts {
		total += n
		t.Logf("%-22s %d", soakNames[o], n)
	}
	t.Logf("%d requests sent in %v, %d accounted for", tally.sent, d, total)
	if total != tally.sent || tally.counts[soakUnexpected] != 0 {
		t.Errorf("%d sent, %d accounted for, %d unexpected: %q", tally.sent, total, tally.counts[soakUnexpected], tally.samples)
	}
	if tally.counts[soakCompleted] == 0 || tally.counts[soakCancelled] == 0 || tally.counts[soakRefused] == 0 {
		t.Errorf("the workload missed a kind: %v", tally.counts)
	}

	// Back to baseline: file descriptors (the server's listener and
	// connections closed) and the heap (no per-request state kept);
	// goroutines are leakcheck's.
	limit := time.Now().Add(5 * time.Second)
	n := openFDs(t)
	for ; n > fds; n = openFDs(t) {
		if time.Now().After(limit) {
			t.Errorf("%d open file descriptors after the soak, %d before", n, fds)
			break
		}
		time.Sleep(time.Millisecond)
	}
	after := heapAlloc()
	t.Logf("heap %d KiB before, %d KiB after; %d file descriptors before, %d after", heap>>10, after>>10, fds, n)
	if after > heap+64<<20 {
		t.Errorf("heap %d MiB after the soak, %d MiB before", after>>20, heap>>20)
	}
}

// soakStream runs one GenerateStream call, cancelling its context after a
// few tokens one time in four.
func soakStream(t *testing.T, client corelmv1.InferenceServiceClient, r *rand.Rand, tally *soakTally) {
	req, malformed := soakRequest(r)
	cancelAfter := -1
	if r.IntN(4) == 0 {
		cancelAfter = r.IntN(8)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	tally.send(1)
	stream, err := client.GenerateStream(ctx, req)
	if err != nil {
		tally.add(classify(status.Code(err), malformed, false), err.Error())
		return
	}
	cancelled, n := false, 0
	var final *corelmv1.GenerateFinal
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tally.add(classify(status.Code(err), malformed, cancelled), err.Error())
			return
		}
		if resp.GetToken() != nil {
			if n++; n == cancelAfter {
				cancel()
				cancelled = true
			}
		}
		if f := resp.GetFinal(); f != nil {
			final = f
		}
	}
	if final == nil {
		tally.add(soakUnexpected, "a stream ended without a final frame")
		return
	}
	tally.add(finalOutcome(final, malformed, cancelled), final.String())
}

// finalOutcome is classify for a final frame.
func finalOutcome(f *corelmv1.GenerateFinal, malformed, cancelled bool) soakOutcome {
	if cancelled && f.GetFinishReason() == corelmv1.FinishReason_FINISH_REASON_CANCELLED {
		return soakCancelled
	}
	return classify(codes.Code(f.GetErrorCode()), malformed, cancelled)
}

// soakBidi runs a Generate stream of two to four requests: some get a
// Cancel frame after their first token, and one stream in six is dropped
// after a few frames: its context cancelled, or its connection closed.
func soakBidi(t *testing.T, client corelmv1.InferenceServiceClient, addr string, r *rand.Rand, tally *soakTally, prefix string) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dropAfter := -1
	if r.IntN(6) == 0 {
		dropAfter = r.IntN(10)
		if r.IntN(2) == 0 { // on a connection of its own, closed under the stream
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			client = corelmv1.NewInferenceServiceClient(conn)
			cancel = func() { conn.Close() }
		}
	}
	stream, err := client.Generate(ctx)
	if err != nil {
		t.Errorf("Generate: %v", err)
		return
	}
	type pending struct{ malformed, cancelFrame, cancelled bool }
	reqs := map[string]*pending{}
	for i := range 2 + r.IntN(3) {
		id := fmt.Sprintf("%s-%d", prefix, i)
		req, malformed := soakRequest(r)
		req.RequestId = id
		reqs[id] = &pending{malformed: malformed, cancelFrame: r.IntN(4) == 0}
		tally.send(1)
		if err := stream.Send(&corelmv1.GenerateRequest{Frame: &corelmv1.GenerateRequest_Start{Start: req}}); err != nil {
			t.Errorf("send: %v", err)
		}
	}
	// The stream is half-closed once every Cancel frame it will send is sent.
	toCancel := 0
	for _, p := range reqs {
		if p.cancelFrame {
			toCancel++
		}
	}
	closeSend := func() {
		if toCancel == 0 {
			toCancel = -1
			if err := stream.CloseSend(); err != nil {
				t.Errorf("close send: %v", err)
			}
		}
	}
	closeSend()
	ended := map[string]bool{} // ended after a Cancel frame: the server may answer it NotFound
	for frames := 0; ; frames++ {
		if frames == dropAfter { // an abrupt disconnect
			cancel()
			for _, p := range reqs {
				p.cancelled = true
			}
		}
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			for id, p := range reqs {
				tally.add(classify(status.Code(err), p.malformed, p.cancelled), id+": "+err.Error())
			}
			return
		}
		id := resp.GetRequestId()
		p := reqs[id]
		if p == nil {
			if ended[id] && codes.Code(resp.GetFinal().GetErrorCode()) == codes.NotFound {
				continue
			}
			tally.add(soakUnexpected, "a frame for request id "+id+": "+resp.String())
			continue
		}
		if resp.GetToken() != nil && p.cancelFrame && !p.cancelled {
			p.cancelled = true
			if err := stream.Send(&corelmv1.GenerateRequest{Frame: &corelmv1.GenerateRequest_Cancel{Cancel: &corelmv1.GenerateCancel{RequestId: id}}}); err != nil && ctx.Err() == nil {
				t.Errorf("send cancel: %v", err)
			}
			toCancel--
			closeSend()
		}
		if f := resp.GetFinal(); f != nil {
			tally.add(finalOutcome(f, p.malformed, p.cancelled), id+": "+f.String())
			delete(reqs, id)
			if p.cancelled {
				ended[id] = true
			} else if p.cancelFrame {
				toCancel--
				closeSend()
			}
		}
	}
	for id := range reqs {
		tally.add(soakUnexpected, id+": no final frame")
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(entries)
}

func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
