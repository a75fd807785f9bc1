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
	Cached  int                // prompt tokens whose KV a Session's prefix cache served
}

// Generate runs req on m alone and calls emit for each generated token. It
// is the scheduler with one sequence, so a generation here chunks its
// prompt, samples and stops exactly as it would when served. When emit
// fails, the generation is cancelled and emit's error returned; when ctx
// ends, ctx's error.
func Generate(ctx context.Context, m model.Model, req GenerateRequest, emit func(tok int32) error) (GenerateResult, error) {
	s := NewSession(m, SessionConfig{Context: req.Context, KVType: req.KVType, Chunk: req.Chunk})
	defer s.Close()
	return s.Generate(ctx, req, emit)
}

// SessionConfig sizes a Session.
type SessionConfig struct {
	Context int // the context the model runs at; 0 = the model's
	KVType  kvcache.Type
	Chunk   int // most prompt tokens per forward step; 0 = sched.DefaultStepTokens
	// CacheBytes is how much KV the prefix cache keeps between
	// generations (0: none).
	CacheBytes int64
}

// Session runs generations on m one after another, with a prefix cache
// between them when configured: a chat that resends its whole history
// each turn then prefills only what is new. The Context, KVType and Chunk
// of the requests it runs are its own.
type Session struct{ s *sched.Scheduler }

// NewSession starts a session on m. Close it when done.
func NewSession(m model.Model, cfg SessionConfig) *Session {
	return &Session{sched.New(m, sched.Config{MaxSeqs: 1, MaxQueue: -1, Context: cfg.Context, KVType: cfg.KVType,
		StepTokens: cfg.Chunk, CacheBudget: cfg.CacheBytes})}
}

// Close stops the session.
func (ss *Session) Close() { ss.s.Shutdown(context.Background()) }

// Generate runs req as the package-level Generate does, reusing the KV of
// the longest prompt prefix the session has cached.
func (ss *Session) Generate(ctx context.Context, req GenerateRequest, emit func(tok int32) error) (GenerateResult, error) {
	h, err := ss.s.Submit(ctx, sched.Request{
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
			res.Finish, res.Prefill, res.Decode, res.Cached = f.Reason, f.Timings.Prefill, f.Timings.Decode, f.Usage.CachedTokens
			if emitErr != nil {
				return res, emitErr
			}
			return res, f.Err
		}
	}
}
