// Package bitnet implements the BitNet b1.58 architecture ("bitnet") as
// llama.cpp runs it: the Llama block with NeoX-style RoPE, RMS norms of the
// attention heads' output and of the FFN's gated product before their
// projections, optional per-matrix output scales, and the output projection
// tied to the token embedding. Its matrices are usually ternary (TQ1_0,
// TQ2_0).
package bitnet

import (
	"github.com/corelm/corelm/pkg/runtime/llama"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// New builds a "bitnet" model.
func New(src model.Source, env model.Env) (*llama.Model, error) {
	return llama.Build(src, "bitnet", llama.Options{NeoX: true, SubNorms: true}, env)
}
