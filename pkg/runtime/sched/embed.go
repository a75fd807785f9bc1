package sched

import (
	"math"

	"github.com/corelm/corelm/pkg/runtime/model"
)

// Embeddings: a request with a Pooling reads its prompt like any other,
// in chunks and batched with the other sequences, but its steps ask the
// model for the last hidden states of its tokens instead of logits, which
// are pooled here as they come.

// pool adds the hidden states of the n tokens from feed position at (the
// step's rows in q.hidden) to q's pooled vector.
func (q *seq) pool(at, n int) {
	dim := len(q.hidden) / max(n, 1)
	if q.pooled == nil {
		q.pooled = make([]float64, dim)
	}
	switch q.req.Pooling {
	case model.PoolMean:
		for r := 0; r < n; r++ {
			for i, v := range q.hidden[r*dim : (r+1)*dim] {
				q.pooled[i] += float64(v)
			}
		}
	case model.PoolCLS:
		if at == 0 {
			for i, v := range q.hidden[:dim] {
				q.pooled[i] = float64(v)
			}
		}
	case model.PoolLast:
		if at+n == len(q.feed) {
			for i, v := range q.hidden[(n-1)*dim : n*dim] {
				q.pooled[i] = float64(v)
			}
		}
	}
}

// embedding is q's pooled vector once its whole prompt is read.
func (q *seq) embedding() []float32 {
	div := 1.0
	if q.req.Pooling == model.PoolMean {
		div = float64(len(q.feed))
	}
	out := make([]float32, len(q.pooled))
	for i, v := range q.pooled {
		out[i] = float32(v / div)
	}
	return out
}

// Normalize scales v to unit Euclidean length in place (a zero vector stays
// zero), as llama.cpp's embeddings are by default.
func Normalize(v []float32) {
	var sum float64
	for _, x := range v {
		sum += float64(x) * float64(x)
	}
	if sum == 0 {
		return
	}
	inv := 1 / math.Sqrt(sum)
	for i, x := range v {
		v[i] = float32(float64(x) * inv)
	}
}
