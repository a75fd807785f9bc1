package model

import "strings"

// GGUF tensor names, as llama.cpp's LLM_TENSOR_NAMES spells them; "%d" is the
// block index (expand with Layer). One table for every architecture, like
// the metadata keys in config.go.
const (
	TAttnK        = "blk.%d.attn_k.weight"
	TAttnKBias    = "blk.%d.attn_k.bias"
	TAttnNorm     = "blk.%d.attn_norm.weight"
	TAttnOut      = "blk.%d.attn_output.weight"
	TAttnQ        = "blk.%d.attn_q.weight"
	TAttnQBias    = "blk.%d.attn_q.bias"
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
)

// Scale returns the name of the optional per-tensor scale of the matrix
// named name (BitNet's "blk.%d.attn_q.scale" beside "blk.%d.attn_q.weight"):
// one float the matrix's outputs are multiplied by.
func Scale(name string) string {
	return strings.TrimSuffix(name, ".weight") + ".scale"
}
