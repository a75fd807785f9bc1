package server

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/sched"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// TestSchedulerValidation: the scheduler alone checks a request (with its
// limits), and the service answers InvalidArgument with its reason.
func TestSchedulerValidation(t *testing.T) {
	client, _ := serveInProcess(t, Options{Threads: 1})
	start := func(edit func(*corelmv1.GenerateStart)) *corelmv1.GenerateStart {
		req := &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 2, Prompt: &corelmv1.GenerateStart_Text{Text: "Once"}}
		edit(req)
		return req
	}
	tests := []struct {
		name string
		req  *corelmv1.GenerateStart
		want string // in the status message; "" = the request runs
	}{
		{"negative max_tokens", start(func(r *corelmv1.GenerateStart) { r.MaxTokens = -1 }), "max_tokens"},
		{"top_logprobs over the limit", start(func(r *corelmv1.GenerateStart) { r.TopLogprobs = sched.MaxTopLogprobs + 1 }), "top_logprobs"},
		{"top_logprobs at the limit", start(func(r *corelmv1.GenerateStart) { r.TopLogprobs = sched.MaxTopLogprobs; r.Logprobs = true }), ""},
		{"too many stop strings", start(func(r *corelmv1.GenerateStart) { r.Stop = make([]string, sched.MaxStopStrings+1) }), "stop strings"},
		{"long stop string", start(func(r *corelmv1.GenerateStart) { r.Stop = []string{strings.Repeat("x", sched.MaxStopStringBytes+1)} }), "stop strings"},
		{"stop token outside the vocabulary", start(func(r *corelmv1.GenerateStart) { r.StopTokenIds = []int32{512} }), "stop_token_ids"},
		{"bad sampling", start(func(r *corelmv1.GenerateStart) { p := float32(2); r.Sampling = &corelmv1.SamplingParams{TopP: &p} }), "top_p"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := client.GenerateStream(t.Context(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			final := lastFinal(stream)
			_, err = stream.Recv()
			st := status.Convert(err)
			if tt.want == "" {
				if final == nil || final.GetErrorCode() != 0 {
					t.Errorf("final %v, status %v: want a completed generation", final, st)
				}
				return
			}
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.want) {
				t.Errorf("status %v, want InvalidArgument naming %q", st, tt.want)
			}
		})
	}
}

// TestSamplingDefaults: unset fields take llama.cpp's defaults
// (sample.Defaults), set ones win, and the seed is random unless given.
func TestSamplingDefaults(t *testing.T) {
	want := sample.Defaults()
	got := samplingParams(nil)
	got.Seed = 0
	if got.Temperature != want.Temperature || got.TopK != want.TopK || got.TopP != want.TopP || got.MinP != want.MinP ||
		got.TypicalP != want.TypicalP || got.RepeatPenalty != want.RepeatPenalty {
		t.Errorf("unset sampling = %+v, want sample.Defaults() %+v", got, want)
	}
	temp, seed := float32(0), uint64(9)
	if p := samplingParams(&corelmv1.SamplingParams{Temperature: &temp, Seed: &seed}); p.Temperature != 0 || p.Seed != 9 || p.TopK != want.TopK {
		t.Errorf("set fields: %+v", p)
	}
}
