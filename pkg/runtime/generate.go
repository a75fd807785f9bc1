package runtime

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sample"
)

// GenerateRequest is one generation on a single sequence.
type GenerateRequest struct {
	Prompt     []int32
	MaxTokens  int // 0 = until the context is full
	Sampling   sample.Params
	StopTokens []int32          // generation ends (without emitting) on any of these
	IsEOG      func(int32) bool // end-of-generation tokens of the vocabulary, may be nil
	Context    int              // KV positions for the sequence; 0 = the model's
	KVType     kvcache.Type
	Chunk      int // prefill chunk size; 0 = 512
}

// FinishReason says why a generation ended.
type FinishReason string

const (
	FinishStop   FinishReason = "stop"   // an end-of-generation or stop token
	FinishLength FinishReason = "length" // max tokens or context full
)

// GenerateResult summarises a finished generation.
type GenerateResult struct {
	Tokens  []int32
	Finish  FinishReason
	Prefill time.Duration
	Decode  time.Duration
}

// Generate runs req on m alone (no batching with other sequences) and calls
// emit for each generated token. It checks ctx before every step.
func Generate(ctx context.Context, m model.Model, req GenerateRequest, emit func(tok int32) error) (res GenerateResult, err error) {
	if len(req.Prompt) == 0 {
		return res, errors.New("generate: empty prompt")
	}
	cfg := m.Config()
	if err := req.Sampling.Validate(cfg.Vocab); err != nil {
		return res, err
	}
	chunk := req.Chunk
	if chunk <= 0 {
		chunk = 512
	}
	st, err := m.NewState(model.StateOptions{Context: req.Context, KVType: req.KVType, Chunk: chunk})
	if err != nil {
		return res, err
	}
	ctxLen := st.Cache.Geometry().Context
	if len(req.Prompt) >= ctxLen {
		return res, fmt.Errorf("%w: prompt of %d tokens does not fit a context of %d", kvcache.ErrContextFull, len(req.Prompt), ctxLen)
	}
	sampler := sample.New(req.Sampling)
	history := append([]int32(nil), req.Prompt...)

	start := time.Now()
	batch := &model.Batch{Seqs: []model.SeqBatch{{State: st}}}
	seq := &batch.Seqs[0]
	for done := 0; done < len(req.Prompt); done += chunk {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		end := min(done+chunk, len(req.Prompt))
		seq.Tokens = req.Prompt[done:end]
		seq.Logits = 0
		if end == len(req.Prompt) {
			seq.Logits = 1
		}
		if err := m.Forward(batch); err != nil {
			return res, err
		}
	}
	res.Prefill = time.Since(start)
	start = time.Now()
	defer func() { res.Decode = time.Since(start) }()
	var tok [1]int32
	for {
		next := sampler.Sample(seq.Out[:cfg.Vocab], history)
		if (req.IsEOG != nil && req.IsEOG(next)) || contains(req.StopTokens, next) {
			res.Finish = FinishStop
			return res, nil
		}
		res.Tokens = append(res.Tokens, next)
		history = append(history, next)
		if err := emit(next); err != nil {
			return res, err
		}
		if (req.MaxTokens > 0 && len(res.Tokens) >= req.MaxTokens) || st.Pos+1 >= ctxLen {
			res.Finish = FinishLength
			return res, nil
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		tok[0] = next
		seq.Tokens, seq.Logits = tok[:], 1
		if err := m.Forward(batch); err != nil {
			return res, err
		}
	}
}

func contains(ids []int32, id int32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
