// Package qwen2 implements the Qwen2 / Qwen2.5 architecture: the Llama block
// with biases on the q, k and v projections, NeoX-style RoPE, and (in the
// small models) the output projection tied to the token embedding.
package qwen2

import (
	"github.com/corelm/corelm/pkg/runtime/llama"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// New builds a "qwen2" model.
func New(src model.Source, env model.Env) (*llama.Model, error) {
	return llama.Build(src, "qwen2", llama.Options{NeoX: true, QKVBias: true}, env)
}
