// Package qwen2moe implements Qwen1.5-MoE and Qwen2-MoE ("qwen2moe"): the
// Qwen2 attention (q, k and v biases, NeoX-style RoPE) and routed SwiGLU
// experts whose top-k softmax probabilities weigh them unnormalised, as
// llama.cpp 0a50d99 runs them, plus a shared expert for every token weighed
// by a sigmoid of its own gate (ffn_gate_inp_shexp). The experts' width is
// expert_feed_forward_length, the shared expert's
// expert_shared_feed_forward_length.
package qwen2moe

import (
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/moe"
)

// New builds a "qwen2moe" model.
func New(src model.Source, env model.Env) (*moe.Model, error) {
	return moe.Build(src, "qwen2moe", moe.Options{NeoX: true, Shared: moe.GatedShared, ExpertFFN: true}, env)
}
