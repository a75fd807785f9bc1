// Package runtime turns a model source into a running model: the registry of
// architectures, loading, and the generation loop (prompt → tokens) on top of
// the architecture packages, the KV cache, the sampler and the tokenizer.
package runtime

import (
	"fmt"
	"maps"
	"slices"

	"github.com/corelm/corelm/pkg/runtime/bitnet"
	"github.com/corelm/corelm/pkg/runtime/gemma2"
	"github.com/corelm/corelm/pkg/runtime/granitemoe"
	"github.com/corelm/corelm/pkg/runtime/llama"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/olmoe"
	"github.com/corelm/corelm/pkg/runtime/phi3"
	"github.com/corelm/corelm/pkg/runtime/qwen2"
	"github.com/corelm/corelm/pkg/runtime/qwen2moe"
)

// Constructor binds a source's weights to an architecture.
type Constructor func(src model.Source, env model.Env) (model.Model, error)

// architectures is the registry: adding an architecture is adding a package
// and a line here.
var architectures = map[string]Constructor{
	"bitnet":     constructor(bitnet.New),
	"gemma2":     constructor(gemma2.New),
	"granitemoe": constructor(granitemoe.New),
	"llama":      constructor(llama.New),
	"olmoe":      constructor(olmoe.New),
	"phi3":       constructor(phi3.New),
	"qwen2":      constructor(qwen2.New),
	"qwen2moe":   constructor(qwen2moe.New),
}

// constructor adapts an architecture's New, which returns its concrete
// model type, to a Constructor. A failed New returns a nil interface, never
// an interface holding a nil pointer.
func constructor[M model.Model](build func(model.Source, model.Env) (M, error)) Constructor {
	return func(src model.Source, env model.Env) (model.Model, error) {
		m, err := build(src, env)
		if err != nil {
			return nil, err
		}
		return m, nil
	}
}

// Architectures lists the supported architecture names.
func Architectures() []string { return slices.Sorted(maps.Keys(architectures)) }

// Build checks src's architecture and hyper-parameters, binds every tensor
// with the shape they imply, and returns the model.
func Build(src model.Source, env model.Env) (model.Model, error) {
	arch, ok := src.String(model.KeyArchitecture)
	if !ok {
		return nil, model.Invalidf("metadata key %s is missing", model.KeyArchitecture)
	}
	ctor, ok := architectures[arch]
	if !ok {
		return nil, fmt.Errorf("%w: architecture %q (corelm supports %v)", model.ErrUnsupported, arch, Architectures())
	}
	return ctor(src, env)
}
