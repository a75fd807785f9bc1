package sched

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sample"
)

// ErrOverloaded is wrapped by the *OverloadError that Submit returns when
// neither a slot nor a queue place is free.
var ErrOverloaded = errors.New("overloaded")

// ErrPromptTooLong is returned by Submit when the prompt leaves no room for a
// single generated token in the scheduler's context.
var ErrPromptTooLong = errors.New("prompt too long")

// ErrInvalidRequest is wrapped by errors about a malformed request (empty
// prompt, token ids outside the vocabulary, bad sampling parameters, ...).
var ErrInvalidRequest = errors.New("invalid request")

// ErrTooLarge is returned by Submit for a request whose KV cache alone
// exceeds the model's whole KV budget: it can never be admitted, so it is
// an invalid request (not an overload to retry), and the message says what
// to change. It wraps ErrInvalidRequest.
var ErrTooLarge = fmt.Errorf("%w: too large for this server", ErrInvalidRequest)

// ErrModelPanic is wrapped by the error of the sequences of a forward step
// that panicked. The error carries the panic and its stack for the log;
// clients should be told only that the model failed.
var ErrModelPanic = errors.New("the model failed")

// ErrConstraint is wrapped by the error of a generation whose output
// constraint left no token to sample (the grammar needs text the
// vocabulary cannot spell).
var ErrConstraint = errors.New("the output constraint cannot be continued")

// ErrClosed is returned by Submit once Shutdown has begun.
var ErrClosed = errors.New("shutting down")

// ErrShed ends a request that was still queued when StopQueued was called.
// It wraps ErrClosed: the request never ran, so sending it again (to
// another replica) is safe.
var ErrShed = fmt.Errorf("%w: the request was still queued; send it again", ErrClosed)

// OverloadError says why a request was turned away and when trying again
// has a chance to succeed. It wraps ErrOverloaded.
type OverloadError struct {
	Reason     string
	RetryAfter time.Duration // 0: no estimate
}

func (e *OverloadError) Error() string {
	if e.RetryAfter <= 0 {
		return fmt.Sprintf("%v: %s", ErrOverloaded, e.Reason)
	}
	return fmt.Sprintf("%v: %s (retry after %v)", ErrOverloaded, e.Reason, e.RetryAfter.Round(time.Millisecond))
}

func (e *OverloadError) Unwrap() error { return ErrOverloaded }

func invalidf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidRequest, fmt.Sprintf(format, a...))
}

// Limits of a request, the same for every caller (the gRPC service only
// translates the errors). MaxTopLogprobs is OpenAI's and llama.cpp's
// server's limit.
const (
	MaxTopLogprobs     = 20
	MaxStopStrings     = 16
	MaxStopStringBytes = 256
	// MaxLogitBias bounds a request's logit_bias entries: each costs
	// work at every sampled token. (OpenAI allows 300.)
	MaxLogitBias = 1024
)

// CheckPromptBytes refuses an empty prompt (n = 0 bytes as sent, before
// a BOS token could make it look otherwise) and one of more than a
// service's limit of max bytes, before it is tokenized.
func CheckPromptBytes(n, max int) error {
	if n == 0 {
		return invalidf("empty prompt")
	}
	if n > max {
		return invalidf("the prompt has %d bytes, more than the %d this server accepts", n, max)
	}
	return nil
}

// Decoder turns a sequence's generated tokens into text, one token at a
// time, never splitting a UTF-8 sequence: Push returns the text completed by
// tok (possibly empty) and the token's own bytes, Flush what is pending at
// the end. The scheduler needs one per request that has stop strings;
// *tokenizer.StreamDecoder is one.
type Decoder interface {
	Push(tok int32) (text string, raw []byte)
	Flush() string
}

// Request is one generation.
type Request struct {
	Prompt     []int32
	MaxTokens  int // 0 = until the context is full
	Sampling   sample.Params
	StopTokens []int32          // generation ends (without emitting the token) on any of these
	IsEOG      func(int32) bool // the vocabulary's end-of-generation tokens; may be nil
	// StopStrings end the generation when the generated text contains one of
	// them. They need Decoder; the text of token events is then held back
	// while it could still be the start of a stop string, and the stop
	// string itself is never emitted.
	StopStrings []string
	// Decoder, when set, gives each token event its text piece.
	Decoder Decoder
	// Logprobs asks for the chosen token's log-probability (under the
	// model's distribution, before penalties and temperature) and the
	// TopLogprobs most likely alternatives.
	Logprobs    bool
	TopLogprobs int
	// TraceLayers asks for per-layer timings of every step this request
	// takes part in (passed to the observer).
	TraceLayers bool
	// NoCache keeps the request out of the prefix cache: it reuses no
	// other request's KV and leaves none behind (e.g. for privacy).
	NoCache bool
	// Pooling, when set, makes the request an embedding: it reads its
	// prompt, which may fill the whole context, generates nothing and ends
	// with Final.Embedding, its tokens' last hidden states pooled this way.
	// It takes no part in the prefix cache.
	Pooling model.Pooling
	// Tag is passed back to the observer untouched (e.g. a span).
	Tag any
	// Constraint, when set, restricts every sampled token to those that
	// keep the output a prefix of its language (structured output). It is
	// the request's own: it holds the request's parse state.
	Constraint Constraint
}

// Constraint restricts which tokens may come next. Mask sets the logits
// of the tokens that may not to -Inf after logit bias and penalties,
// before the rest of the sampling chain; it must allow end-of-generation
// and the request's stop tokens only where the output is complete, so a
// generation under a constraint ends complete (FinishStop) or reports
// FinishLength. Accept moves past the sampled token. If it also has a
// Release method, the scheduler calls it once the generation has ended
// (a pooled matcher goes back to its pool). *constrain.Matcher is one.
type Constraint interface {
	Mask(logits []float32) error
	Accept(tok int32) error
}

// embeds reports whether req is an embedding.
func (req *Request) embeds() bool { return req.Pooling != model.PoolNone }

// validate checks req against a model of vocab tokens. Errors wrap
// ErrInvalidRequest (and sample.ErrParams for sampling parameters) and say
// which field is wrong.
func (req *Request) validate(vocab int) error {
	if len(req.Prompt) == 0 {
		return invalidf("empty prompt")
	}
	for i, t := range req.Prompt {
		if t < 0 || int(t) >= vocab {
			return invalidf("prompt token %d at position %d is outside the vocabulary (0..%d)", t, i, vocab-1)
		}
	}
	if req.MaxTokens < 0 {
		return invalidf("max_tokens %d must be ≥ 0", req.MaxTokens)
	}
	if n := len(req.Sampling.LogitBias); n > MaxLogitBias {
		return invalidf("logit_bias has %d entries, more than the %d allowed", n, MaxLogitBias)
	}
	if err := req.Sampling.Validate(vocab); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	for _, t := range req.StopTokens {
		if t < 0 || int(t) >= vocab {
			return invalidf("stop_token_ids: %d is outside the vocabulary (0..%d)", t, vocab-1)
		}
	}
	if len(req.StopStrings) > MaxStopStrings {
		return invalidf("at most %d stop strings, got %d", MaxStopStrings, len(req.StopStrings))
	}
	for _, st := range req.StopStrings {
		if st == "" || len(st) > MaxStopStringBytes {
			return invalidf("stop strings must have 1 to %d bytes", MaxStopStringBytes)
		}
	}
	if len(req.StopStrings) > 0 && req.Decoder == nil {
		return invalidf("stop strings need a decoder")
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > MaxTopLogprobs {
		return invalidf("top_logprobs %d must be in [0, %d]", req.TopLogprobs, MaxTopLogprobs)
	}
	if req.embeds() {
		switch {
		case req.Pooling != model.PoolMean && req.Pooling != model.PoolCLS && req.Pooling != model.PoolLast:
			return invalidf("pooling %v: embeddings pool by mean, cls or last", req.Pooling)
		case req.MaxTokens != 0 || len(req.StopStrings) > 0 || len(req.StopTokens) > 0 || req.Logprobs || req.TopLogprobs > 0 ||
			req.Constraint != nil:
			return invalidf("an embedding generates nothing: no max_tokens, stop, logprobs or output constraint")
		}
	}
	return nil
}

// EventKind tells what an Event carries.
type EventKind int

const (
	EventToken    EventKind = iota // a generated token
	EventProgress                  // prompt processing progress (long prefill)
	EventFinal                     // the last event of a request
)

// Event is one message of a request's stream.
type Event struct {
	Kind EventKind
	// Token and Text: the generated token and the text it completes (empty
	// without a Decoder, or while held back for stop-string matching).
	Token int32
	Text  string
	Raw   []byte // the token's bytes (with a Decoder)
	// Logprob and Top are set when the request asked for logprobs.
	Logprob *sample.TokenLogprob
	Top     []sample.TokenLogprob
	// PromptDone of PromptTotal prompt tokens are processed (EventProgress).
	PromptDone, PromptTotal int
	Final                   *Final
}

// FinishReason says why a generation ended.
type FinishReason int

const (
	FinishStop         FinishReason = iota // an end-of-generation or stop token
	FinishLength                           // max tokens or context full
	FinishStopSequence                     // a stop string appeared in the text
	FinishCancelled                        // the request's context or Cancel
	FinishError                            // the model failed; Final.Err says how
)

var finishNames = [...]string{
	FinishStop: "stop", FinishLength: "length", FinishStopSequence: "stop_sequence",
	FinishCancelled: "cancelled", FinishError: "error",
}

func (r FinishReason) String() string {
	if r >= 0 && int(r) < len(finishNames) {
		return finishNames[r]
	}
	return fmt.Sprintf("FinishReason(%d)", int(r))
}

// Usage counts a request's tokens.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
	CachedTokens     int // prompt tokens whose KV the prefix cache served
}

// Timings of a request. Durations convert to nanoseconds for the wire.
type Timings struct {
	Queue   time.Duration // submitted → admitted
	Prefill time.Duration // admitted → first token sampled
	Decode  time.Duration // first token → finish
	TTFT    time.Duration // submitted → first token
	Total   time.Duration // submitted → finish
}

// Final is the last event of a request.
type Final struct {
	Reason FinishReason
	Err    error // why, for FinishCancelled (a context error) and FinishError
	// Text is text the stop-string matcher or the decoder still held when
	// the generation ended; it follows the last token event's text.
	Text         string
	StopSequence string // the stop string that matched (FinishStopSequence)
	// Embedding is an embedding request's pooled vector (FinishStop), not
	// normalised.
	Embedding []float32
	Usage     Usage
	Timings   Timings
}

// Handle is a submitted request's end of the stream.
type Handle struct {
	s      *Scheduler
	seq    *seq
	events chan Event
}

// Recv returns the request's next event. After the final event it returns
// io.EOF. It blocks until an event arrives or ctx is done; it does not cancel
// the request when ctx ends (cancel the Submit context or call Cancel).
func (h *Handle) Recv(ctx context.Context) (Event, error) {
	select {
	case ev, ok := <-h.events:
		if !ok {
			return Event{}, io.EOF
		}
		// A paused sequence waits for room in its buffer: tell the loop.
		if h.seq.paused.Load() {
			h.s.wakeup()
		}
		return ev, nil
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// Cancel stops the request: it is dropped before the next step, its KV
// memory released, and its final event says FinishCancelled.
func (h *Handle) Cancel() { h.seq.cancel(context.Canceled) }

// ID is the scheduler's number for the request (also given to observers).
func (h *Handle) ID() uint64 { return h.seq.id }

// cancelCause is stored atomically once a sequence is cancelled.
type cancelCause struct{ err error }

func (q *seq) cancel(err error) {
	if q.cancelled.CompareAndSwap(nil, &cancelCause{err}) {
		q.s.wakeup()
	}
}
