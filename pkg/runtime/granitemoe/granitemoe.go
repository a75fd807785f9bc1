// Package granitemoe implements IBM's Granite 3.x MoE ("granitemoe"): the
// Llama attention (normal RoPE, optional output bias and rope_freqs) with
// Granite's multipliers — embeddings times embedding_scale, each half's
// output times residual_scale before it joins the residual stream, q·k
// scaled by attention.scale, logits divided by logit_scale — and routed
// SwiGLU experts whose top-k softmax probabilities are renormalised to sum
// to 1; "Granite MoE Shared" models add an ungated shared expert
// (expert_shared_feed_forward_length > 0). The output is usually tied.
package granitemoe

import (
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/moe"
)

// New builds a "granitemoe" model.
func New(src model.Source, env model.Env) (*moe.Model, error) {
	return moe.Build(src, "granitemoe", moe.Options{Normalize: true, Shared: moe.OptionalShared, Granite: true}, env)
}
