package model

import (
	"fmt"
	"time"
)

// Model is one loaded architecture instance bound to its weights. Forward is
// not safe for concurrent use: a scheduler owns the model and serializes
// steps (one step advances many sequences at once).
type Model interface {
	// Config returns the shared hyper-parameters.
	Config() *Config
	// NewState allocates a sequence's state (its KV cache) for up to
	// opts.Length positions of a model served at opts.Context.
	NewState(opts StateOptions) (*State, error)
	// Forward runs one step over b and writes the requested logits.
	Forward(b *Batch) error
	// KVBytes is the KV cache memory NewState(opts) allocates, known
	// before it does: admission and the memory estimate use it.
	KVBytes(opts StateOptions) int64
}

// Batch is the input of one forward step: a run of tokens for each of
// several sequences. Every sequence's tokens continue at its State's
// position, which Forward advances.
type Batch struct {
	Seqs []SeqBatch
	// Trace, when non-nil, receives per-layer timings of this step. It costs
	// a clock read per layer phase; spans are made from it by the caller.
	Trace *StepTrace
}

// SeqBatch is one sequence's share of a Batch.
type SeqBatch struct {
	State  *State
	Tokens []int32
	// Logits is how many of the last positions need logits (0: none, 1:
	// next-token generation, len(Tokens): evaluation of every position).
	Logits int
	// Out receives Logits×vocab floats, row-major; Forward grows it.
	Out []float32
	// Hidden asks for the last hidden state of every token of the step,
	// after the output norm (llama.cpp's embeddings): Forward writes
	// len(Tokens)×dim floats to HiddenOut, growing it.
	Hidden    bool
	HiddenOut []float32
}

// Pooling is how an embedding is made of the last hidden states of an
// input's tokens. The values are llama.cpp's pooling_type numbers.
type Pooling int

const (
	PoolNone Pooling = iota // not pooled: no embedding
	PoolMean                // the mean over the tokens
	PoolCLS                 // the first token's
	PoolLast                // the last token's
	PoolRank                // a reranker's classification head (not run here)
)

func (p Pooling) String() string {
	switch p {
	case PoolNone:
		return "none"
	case PoolMean:
		return "mean"
	case PoolCLS:
		return "cls"
	case PoolLast:
		return "last"
	case PoolRank:
		return "rank"
	}
	return fmt.Sprintf("pooling(%d)", int(p))
}

// StepTrace collects the timings of one forward step.
type StepTrace struct {
	Layers []LayerTiming
	Start  time.Time
	Total  time.Duration
}

// LayerTiming is how long one transformer block took, split in its two halves.
type LayerTiming struct {
	Attention time.Duration
	FFN       time.Duration
}
