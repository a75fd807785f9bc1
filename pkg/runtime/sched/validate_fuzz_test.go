package sched

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/corelm/corelm/pkg/runtime/sample"
)

// FuzzValidate: whatever a client sends, validate never panics, every
// refusal wraps ErrInvalidRequest, and what it accepts is within the
// vocabulary and the limits.
func FuzzValidate(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0}, int32(8), float32(0.8), float32(0.95), int32(40), uint16(0), int32(0))
	f.Add([]byte{}, int32(-1), float32(-1), float32(1.5), int32(-1), uint16(2000), int32(100))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, int32(0), float32(math.NaN()), float32(math.Inf(1)), int32(0), uint16(1), int32(-7))
	const vocab = 512
	f.Fuzz(func(t *testing.T, prompt []byte, maxTokens int32, temp, topP float32, topK int32, biasN uint16, topLogprobs int32) {
		req := Request{MaxTokens: int(maxTokens), Sampling: sample.Defaults(), TopLogprobs: int(topLogprobs)}
		for len(prompt) >= 4 {
			req.Prompt = append(req.Prompt, int32(binary.LittleEndian.Uint32(prompt)))
			prompt = prompt[4:]
		}
		req.Sampling.Temperature, req.Sampling.TopP, req.Sampling.TopK = temp, topP, int(topK)
		if biasN > 0 {
			req.Sampling.LogitBias = map[int32]float32{}
			for i := range int32(biasN) {
				req.Sampling.LogitBias[i%(vocab+8)] = 1
			}
		}
		err := req.validate(vocab)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("refusal %v does not wrap ErrInvalidRequest", err)
			}
			return
		}
		if len(req.Prompt) == 0 || req.MaxTokens < 0 || len(req.Sampling.LogitBias) > MaxLogitBias ||
			req.TopLogprobs < 0 || req.TopLogprobs > MaxTopLogprobs || math.IsNaN(float64(req.Sampling.Temperature)) ||
			req.Sampling.Temperature < 0 || req.Sampling.TopP > 1 || req.Sampling.TopK < 0 {
			t.Fatalf("accepted %+v", req)
		}
		for _, tok := range req.Prompt {
			if tok < 0 || tok >= vocab {
				t.Fatalf("accepted token %d outside the vocabulary", tok)
			}
		}
	})
}
