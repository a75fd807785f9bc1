package server

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/leakcheck"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/quantize"
	"github.com/corelm/corelm/pkg/runtime/sched"
	"github.com/corelm/corelm/pkg/runtime/synth"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// writeTinyModel writes the synthetic tiny Llama (4 layers, 256 wide) in
// Q4_K_M to a temporary file and returns its path.
func writeTinyModel(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	scheme, _ := quantize.ParseScheme("Q4_K_M")
	if _, err := synth.Write(f, synth.Presets["tiny-llama"], "tiny", scheme, 1); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// tinyModel writes the synthetic tiny Llama (4 layers, 256 wide, trained
// on 4096 positions) in Q4_K_M and returns its path, the bytes of its
// tensors, and the memory a model serving one sequence of ctx positions
// needs (weights, KV cache, compute).
func tinyModel(t *testing.T) (path string, weights int64, need func(ctx int) runtime.Footprint) {
	t.Helper()
	path = writeTinyModel(t)
	pool := kernels.NewPool(1)
	t.Cleanup(pool.Close)
	l, err := runtime.OpenGGUF(path, model.Env{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	weights = runtime.WeightBytes(l.Source)
	return path, weights, func(ctx int) runtime.Footprint {
		return runtime.Estimate(l.Model, weights, model.StateOptions{Context: ctx, Chunk: sched.DefaultStepTokens})
	}
}

// firstTokens starts a generation without max_tokens and reads n tokens
// (or to the end); the stream is cancelled when the test ends.
func firstTokens(t *testing.T, c corelmv1.InferenceServiceClient, req *corelmv1.GenerateStart, n int) (int, error) {
	t.Helper()
	stream, err := c.GenerateStream(t.Context(), req)
	if err != nil {
		return 0, err
	}
	got := 0
	for got < n {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return got, err
		}
		if resp.GetToken() != nil {
			got++
		}
	}
	return got, nil
}

func noMaxTokens(id string, prompt []int32) *corelmv1.GenerateStart {
	temp := float32(0)
	return &corelmv1.GenerateStart{ModelId: id, Prompt: &corelmv1.GenerateStart_TokenIds{TokenIds: &corelmv1.TokenIds{Ids: prompt}},
		Sampling: &corelmv1.SamplingParams{Temperature: &temp}, StopTokenIds: []int32{}}
}

// TestDefaultsFit: with default flags a model is served at a context that
// fits the memory budget, and a request without max_tokens is admitted;
// one that cannot fit the served context gets the numbers.
func TestDefaultsFit(t *testing.T) {
	leakcheck.Check(t)
	t.Run("stories, default flags", func(t *testing.T) {
		client, _ := serveInProcess(t, Options{Threads: 1})
		m, err := client.GetModel(t.Context(), &corelmv1.GetModelRequest{ModelId: "stories"})
		if err != nil {
			t.Fatal(err)
		}
		if got, trained := m.GetModel().GetMaxContext(), m.GetModel().GetContextLength(); got != min(trained, 8192) {
			t.Errorf("served context %d, want the trained %d", got, trained)
		}
		if n, err := firstTokens(t, client, noMaxTokens("stories", []int32{1, 403, 407}), 8); err != nil || n != 8 {
			t.Fatalf("without max_tokens: %d tokens, %v", n, err)
		}
	})

	path, weights, need := tinyModel(t)
	const fits = 300 // positions the budget below holds for one sequence
	tight := need(fits).Total()
	t.Run("tight budget chooses the context", func(t *testing.T) {
		client, _ := serveFile(t, Options{Threads: 1, MemoryBudget: tight}, path, "tiny")
		m, err := client.GetModel(t.Context(), &corelmv1.GetModelRequest{ModelId: "tiny"})
		if err != nil {
			t.Fatal(err)
		}
		if got := m.GetModel().GetMaxContext(); got != fits {
			t.Errorf("served context %d, want %d (trained %d)", got, fits, m.GetModel().GetContextLength())
		}
		// Every request without max_tokens is admitted: the KV budget holds
		// one sequence of the whole served context; the others queue.
		for range 3 {
			if n, err := firstTokens(t, client, noMaxTokens("tiny", []int32{1, 2, 3}), 4); err != nil || n != 4 {
				t.Fatalf("without max_tokens: %d tokens, %v", n, err)
			}
		}
		long := make([]int32, fits+10)
		for i := range long {
			long[i] = int32(1 + i%500)
		}
		_, err = firstTokens(t, client, noMaxTokens("tiny", long), 1)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "310 prompt tokens") || !strings.Contains(err.Error(), "context of 300") {
			t.Errorf("prompt longer than the served context: %v", err)
		}
	})

	tests := []struct {
		name  string
		opts  Options
		words []string
	}{
		{"explicit --ctx beyond the budget", Options{MemoryBudget: tight, Context: 1000},
			[]string{"a context of 1000", "needs", "the largest context that fits is 300"}},
		{"budget below the weights", Options{MemoryBudget: weights},
			[]string{"a context of 128", "weights", "leave no room for a KV cache"}},
		{"--budget beyond what the memory budget leaves", Options{MemoryBudget: tight, Budget: tight},
			[]string{"--budget", "does not fit beside the weights"}},
		{"--budget below one full --ctx", Options{Budget: 1 << 10, Context: 1000},
			[]string{"within --budget 1.00 KiB", "a context of 1000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Threads = 1
			err := New(tt.opts).ServeFile(path, "tiny")
			if !errors.Is(err, runtime.ErrOverBudget) {
				t.Fatalf("ServeFile: %v, want ErrOverBudget", err)
			}
			for _, w := range tt.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestOneBudgetForTheProcess: a second model opens within what the first
// left, and the same model's next generation replaces its reservation.
func TestOneBudgetForTheProcess(t *testing.T) {
	leakcheck.Check(t)
	path, _, need := tinyModel(t)
	// Room for the first model at 1000 positions and a second at 200,
	// with a KV cap on each: --budget is per model.
	kv := need(1000).KV
	s := New(Options{Threads: 1, MaxSeqs: 1, MemoryBudget: need(1000).Total() + need(200).Total(), Budget: kv})
	defer s.Shutdown(t.Context())
	if err := s.ServeFile(path, "a"); err != nil {
		t.Fatal(err)
	}
	err := s.ServeFile(path, "b")
	if !errors.Is(err, runtime.ErrOverBudget) || !strings.Contains(err.Error(), "does not fit beside the weights") ||
		!strings.Contains(err.Error(), "the other models hold") {
		t.Fatalf("second model with the first's KV cap: %v", err)
	}
	s.opts.Budget = 0
	if err := s.ServeFile(path, "b"); err != nil {
		t.Fatalf("second model in what the first left: %v", err)
	}
	b, _ := s.models.acquire("b")
	defer s.models.release(b)
	if got := b.sched.Config().Context; got != 200 {
		t.Errorf("second model's context %d, want 200", got)
	}
	// A new generation of "a" may take what the old one holds.
	if err := s.ServeFile(path, "a"); err != nil {
		t.Errorf("a's next generation: %v", err)
	}
}
