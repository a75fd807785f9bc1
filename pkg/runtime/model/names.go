package model

import "strings"

// GGUF tensor names, as llama.cpp's LLM_TENSOR_NAMES spells them; "%d" is the
// block index (expand with Layer). One table for every architecture, like
// the metadata keys in config.go.
const (
	TAttnK        = "blk.%d.attn_k.weight"
	TAttnKBias    = "blk.%d.attn_k.bias"
	TAttnKNorm    = "blk.%d.attn_k_norm.weight"
	TAttnNorm     = "blk.%d.attn_norm.weight"
	TAttnOut      = "blk.%d.attn_output.weight"
	TAttnOutBias  = "blk.%d.attn_output.bias"
	TAttnQ        = "blk.%d.attn_q.weight"
	TAttnQBias    = "blk.%d.attn_q.bias"
	TAttnQNorm    = "blk.%d.attn_q_norm.weight"
	TAttnQKV      = "blk.%d.attn_qkv.weight"
	TAttnSubNorm  = "blk.%d.attn_sub_norm.weight"
	TAttnV        = "blk.%d.attn_v.weight"
	TAttnVBias    = "blk.%d.attn_v.bias"
	TFFNDown      = "blk.%d.ffn_down.weight"
	TFFNGate      = "blk.%d.ffn_gate.weight"
	TFFNNorm      = "blk.%d.ffn_norm.weight"
	TFFNSubNorm   = "blk.%d.ffn_sub_norm.weight"
	TFFNUp        = "blk.%d.ffn_up.weight"
	TOutput       = "output.weight"
	TOutputNorm   = "output_norm.weight"
	TPostAttnNorm = "blk.%d.post_attention_norm.weight"
	TPostFFNNorm  = "blk.%d.post_ffw_norm.weight"
	TRopeFreqs    = "rope_freqs.weight"
	TRopeLong     = "rope_factors_long.weight"
	TRopeShort    = "rope_factors_short.weight"
	TTokenEmbd    = "token_embd.weight"

	// Mixture of experts: the router, the experts' matrices stacked in 3-D
	// tensors ([cols, rows, n_expert] in ggml order: expert e's rows follow
	// expert e-1's), and a shared expert with its optional gate.
	TFFNGateInp      = "blk.%d.ffn_gate_inp.weight"
	TFFNGateExps     = "blk.%d.ffn_gate_exps.weight"
	TFFNUpExps       = "blk.%d.ffn_up_exps.weight"
	TFFNDownExps     = "blk.%d.ffn_down_exps.weight"
	TFFNGateInpShexp = "blk.%d.ffn_gate_inp_shexp.weight"
	TFFNGateShexp    = "blk.%d.ffn_gate_shexp.weight"
	TFFNUpShexp      = "blk.%d.ffn_up_shexp.weight"
	TFFNDownShexp    = "blk.%d.ffn_down_shexp.weight"
)

// Scale returns the name of the optional per-tensor scale of the matrix
// named name (BitNet's "blk.%d.attn_q.scale" beside "blk.%d.attn_q.weight"):
// one float the matrix's outputs are multiplied by.
func Scale(name string) string {
	return strings.TrimSuffix(name, ".weight") + ".scale"
}
