package runtime

import (
	"context"
	"time"

	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/sched"
)

// GenerateRequest is one generation on a single sequence.
type GenerateRequest struct {
	Prompt     []int32
	MaxTokens  int // 0 = until the context is full
	Sampling   sample.Params
	StopTokens []int32          // generation ends (without emitting) on any of these
	IsEOG      func(int32) bool // end-of-generation tokens of the vocabulary, may be nil
	Context    int              // the context the model runs at; 0 = the model's
	KVType     kvcache.Type
	Chunk      int // most prompt tokens per forward step; 0 = sched.DefaultStepTokens
	// Constraint restricts the output to a language (structured output).
	Constraint sched.Constraint
}

// GenerateResult summarises a finished generation.
type GenerateResult struct {
	Tokens  []int32
	Finish  sched.FinishReason // FinishStop or FinishLength
	Prefill time.Duration      // start → first token sampled
	Decode  time.Duration      // first token → end
}

// Generate runs req on m alone and calls emit for each generated token. It
// is the scheduler with one sequence, so a generation here chunks its
// prompt, samples and stops exactly as it would when served. When emit
// fails, the generation is cancelled and emit's error returned; when ctx
// ends, ctx's error.
func Generate(ctx context.Context, m model.Model, req GenerateRequest, emit func(tok int32) error) (GenerateResult, error) {
	s := sched.New(m, sched.Config{MaxSeqs: 1, MaxQueue: -1, Context: req.Context, KVType: req.KVType, StepTokens: req.Chunk})
	defer s.Shutdown(context.Background())
	h, err := s.Submit(ctx, sched.Request{
		Prompt: req.Prompt, MaxTokens: req.MaxTokens, Sampling: req.Sampling, StopTokens: req.StopTokens, IsEOG: req.IsEOG,
		Constraint: req.Constraint,
	})
	if err != nil {
		return GenerateResult{}, err
	}
	var res GenerateResult
	var emitErr error
	for {
		// The scheduler ends every request with a final event, within a
		// step of its cancellation: this wait is bounded.
		ev, err := h.Recv(context.Background())
		if err != nil {
			return res, err
		}
		switch ev.Kind {
		case sched.EventToken:
			if emitErr != nil {
				continue // cancelled: tokens still buffered are dropped
			}
			res.Tokens = append(res.Tokens, ev.Token)
			if emitErr = emit(ev.Token); emitErr != nil {
				h.Cancel()
			}
		case sched.EventFinal:
			f := ev.Final
			res.Finish, res.Prefill, res.Decode = f.Reason, f.Timings.Prefill, f.Timings.Decode
			if emitErr != nil {
				return res, emitErr
			}
			return res, f.Err
		}
	}
}
