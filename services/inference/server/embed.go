package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc/metadata"

	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sched"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/internal/telemetry"
)

// MaxEmbedInputs is the most inputs one Embed call may carry. Each is a
// sequence of the scheduler; a call runs at most the scheduler's
// MaxSeqs of them at once, so a large batch takes turns with other
// clients' requests instead of filling the queue.
const MaxEmbedInputs = 512

// Embed returns one pooled, by default unit-length, vector per input:
// every input is a request of the model's scheduler, read in chunks beside
// the running generations.
func (s *Server) Embed(ctx context.Context, req *corelmv1.EmbedRequest) (*corelmv1.EmbedResponse, error) {
	if s.stopping() {
		return nil, toError(ErrStopping)
	}
	id := req.GetModelId()
	if err := corelmv1.ValidateModelID(id); err != nil {
		return nil, toError(badRequestf("%v", err))
	}
	inputs := req.GetInputs()
	if len(inputs) == 0 || len(inputs) > MaxEmbedInputs {
		return nil, toError(badRequestf("inputs: %d given, want 1 to %d", len(inputs), MaxEmbedInputs))
	}
	for i, in := range inputs {
		if err := sched.CheckPromptBytes(embedInputBytes(in), s.opts.MaxPromptBytes); err != nil {
			return nil, toError(fmt.Errorf("input %d: %w", i, err))
		}
	}
	e, err := s.acquire(ctx, id)
	if err != nil {
		return nil, toError(err)
	}
	defer s.models.release(e)
	pooling, err := requestPooling(req.GetPooling(), e)
	if err != nil {
		return nil, toError(err)
	}
	prompts, truncated, err := embedPrompts(e, req)
	if err != nil {
		return nil, toError(err)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	level := telemetry.LevelFromIncoming(md, s.opts.Tracing.Level, s.opts.Tracing.Max)
	resp := &corelmv1.EmbedResponse{ModelId: id, Pooling: poolingProto(pooling), Embeddings: make([]*corelmv1.Embedding, len(prompts))}
	normalize := req.Normalize == nil || req.GetNormalize()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		slots = make(chan struct{}, max(1, min(e.sched.Config().MaxSeqs, len(prompts))))
	)
	fail := func(err error) {
		once.Do(func() { first = err; cancel() })
	}
	for i, p := range prompts {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			v, err := s.embedOne(ctx, e, p, pooling, level)
			if err != nil {
				fail(fmt.Errorf("input %d: %w", i, err))
				return
			}
			if normalize {
				sched.Normalize(v)
			}
			resp.Embeddings[i] = &corelmv1.Embedding{Values: v, Tokens: int32(len(p)), Truncated: truncated[i]}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	if first != nil && !isComplete(resp) {
		return nil, toError(first)
	}
	for _, p := range prompts {
		resp.PromptTokens += int32(len(p))
	}
	return resp, nil
}

func isComplete(resp *corelmv1.EmbedResponse) bool {
	for _, e := range resp.Embeddings {
		if e == nil {
			return false
		}
	}
	return true
}

// embedOne runs one input through e's scheduler, traced as an embeddings
// operation.
func (s *Server) embedOne(ctx context.Context, e *entry, prompt []int32, pooling model.Pooling, level telemetry.Level) ([]float32, error) {
	ctx, tg := s.telemetry().StartGeneration(ctx, telemetry.GenerationStart{Model: e.id, Operation: telemetry.OperationEmbeddings, Level: level})
	defer tg.End()
	sr := sched.Request{Prompt: prompt, Pooling: pooling}
	tg.Attach(&sr)
	h, err := e.sched.Submit(ctx, sr)
	tg.Submitted(err)
	if err != nil {
		return nil, err
	}
	for {
		// The scheduler ends every request with a final event, within a
		// step of its context ending: this wait is bounded.
		ev, err := h.Recv(context.Background())
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the scheduler ended the request without a result")
		}
		if err != nil {
			return nil, err
		}
		if ev.Kind != sched.EventFinal {
			continue
		}
		if f := ev.Final; f.Reason != sched.FinishStop {
			return nil, f.Err
		}
		return ev.Final.Embedding, nil
	}
}

// embedPrompts tokenizes req's inputs for e, cutting those longer than the
// context when req allows it and refusing them otherwise.
func embedPrompts(e *entry, req *corelmv1.EmbedRequest) (prompts [][]int32, truncated []bool, err error) {
	n := e.sched.Config().Context
	opts := tokenizer.EncodeOptions{AddBOS: bosMode(req.AddBos), ParseSpecial: req.GetParseSpecial()}
	for i, in := range req.GetInputs() {
		var ids []int32
		switch x := in.GetInput().(type) {
		case *corelmv1.EmbedInput_Text:
			if ids, err = encode(e, x.Text, opts); err != nil {
				return nil, nil, fmt.Errorf("input %d: %w", i, err)
			}
		case *corelmv1.EmbedInput_TokenIds:
			ids = x.TokenIds.GetIds()
		default:
			return nil, nil, badRequestf("input %d: text or token_ids is required", i)
		}
		if len(ids) == 0 {
			return nil, nil, badRequestf("input %d has no tokens", i)
		}
		cut := len(ids) > n
		if cut && !req.GetTruncate() {
			return nil, nil, badRequestf("input %d has %d tokens, more than the context of %d: shorten it or set truncate", i, len(ids), n)
		}
		if cut {
			ids = ids[:n]
		}
		prompts, truncated = append(prompts, ids), append(truncated, cut)
	}
	return prompts, truncated, nil
}

func embedInputBytes(in *corelmv1.EmbedInput) int {
	switch x := in.GetInput().(type) {
	case *corelmv1.EmbedInput_Text:
		return len(x.Text)
	case *corelmv1.EmbedInput_TokenIds:
		return 4 * len(x.TokenIds.GetIds())
	}
	return 1 // no input: embedPrompts says what is missing
}

// requestPooling is the pooling a request asks for, or e's default.
func requestPooling(p corelmv1.Pooling, e *entry) (model.Pooling, error) {
	switch p {
	case corelmv1.Pooling_POOLING_UNSPECIFIED:
		return poolingFromProto(e.info.GetPooling()), nil
	case corelmv1.Pooling_POOLING_MEAN, corelmv1.Pooling_POOLING_LAST, corelmv1.Pooling_POOLING_CLS:
		return poolingFromProto(p), nil
	}
	return 0, badRequestf("pooling: unknown value %d", int32(p))
}

// defaultPooling is the pooling Embed uses for a model that pools by p
// (its pooling_type): p itself when it makes a vector of the hidden
// states, else mean, llama.cpp's choice for a generative model.
func defaultPooling(p model.Pooling) model.Pooling {
	switch p {
	case model.PoolMean, model.PoolCLS, model.PoolLast:
		return p
	}
	return model.PoolMean
}

func poolingProto(p model.Pooling) corelmv1.Pooling {
	switch p {
	case model.PoolMean:
		return corelmv1.Pooling_POOLING_MEAN
	case model.PoolCLS:
		return corelmv1.Pooling_POOLING_CLS
	case model.PoolLast:
		return corelmv1.Pooling_POOLING_LAST
	}
	return corelmv1.Pooling_POOLING_UNSPECIFIED
}

func poolingFromProto(p corelmv1.Pooling) model.Pooling {
	switch p {
	case corelmv1.Pooling_POOLING_CLS:
		return model.PoolCLS
	case corelmv1.Pooling_POOLING_LAST:
		return model.PoolLast
	}
	return model.PoolMean
}
