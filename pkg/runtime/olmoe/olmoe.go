// Package olmoe implements AllenAI's OLMoE ("olmoe"): 64 SwiGLU experts per
// block, the 8 most probable of a softmax router per token with their
// probabilities as weights (not renormalised), RMS norms of the whole query
// and key projections before NeoX-style RoPE, and an untied output.
package olmoe

import (
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/moe"
)

// New builds an "olmoe" model.
func New(src model.Source, env model.Env) (*moe.Model, error) {
	return moe.Build(src, "olmoe", moe.Options{NeoX: true, QKNorm: true}, env)
}
