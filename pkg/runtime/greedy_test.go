package runtime_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sched"
)

// TestGreedyStories reproduces, token for token, the 256 greedy tokens an
// independent fp32 implementation generates from [BOS] on the embedded stories model.
func TestGreedyStories(t *testing.T) {
	raw, err := os.ReadFile("testdata/greedy_from_bos_256.json")
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		PromptIDs    []int32   `json:"prompt_ids"`
		GeneratedIDs []int32   `json:"generated_ids"`
		Logits0      []float32 `json:"logits_step0_first8"`
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	pool := kernels.NewPool(2)
	defer pool.Close()
	l, err := runtime.ParseGGUF(models.Stories, model.Env{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	var got []int32
	res, err := runtime.Generate(context.Background(), l.Model, runtime.GenerateRequest{
		Prompt:    want.PromptIDs,
		MaxTokens: len(want.GeneratedIDs),
	}, func(tok int32) error { got = append(got, tok); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Finish != sched.FinishLength {
		t.Errorf("finish = %s, want length", res.Finish)
	}
	if len(got) != len(want.GeneratedIDs) {
		t.Fatalf("generated %d tokens, want %d", len(got), len(want.GeneratedIDs))
	}
	for i := range got {
		if got[i] != want.GeneratedIDs[i] {
			t.Fatalf("token %d = %d, want %d (first %d match)", i, got[i], want.GeneratedIDs[i], i)
		}
	}
}

// TestGenerateStops: emit's error cancels the generation and is returned,
// with the tokens emitted so far; a cancelled context ends it with its
// error.
func TestGenerateStops(t *testing.T) {
	pool := kernels.NewPool(1)
	defer pool.Close()
	l, err := runtime.ParseGGUF(models.Stories, model.Env{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("enough")
	n := 0
	res, err := runtime.Generate(context.Background(), l.Model, runtime.GenerateRequest{Prompt: []int32{1}, MaxTokens: 100},
		func(int32) error {
			if n++; n == 3 {
				return stop
			}
			return nil
		})
	if !errors.Is(err, stop) || len(res.Tokens) != 3 {
		t.Errorf("emit failing at the 3rd token: %d tokens, %v", len(res.Tokens), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := runtime.Generate(ctx, l.Model, runtime.GenerateRequest{Prompt: []int32{1}}, func(int32) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}
