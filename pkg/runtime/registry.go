// Package runtime turns a model source into a running model: the registry of
// architectures, loading, and the generation loop (prompt → tokens) on top of
// the architecture packages, the KV cache, the sampler and the tokenizer.
package runtime

import (
	"fmt"
	"sort"

	"github.com/corelm/corelm/pkg/runtime/gemma2"
	"github.com/corelm/corelm/pkg/runtime/llama"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/phi3"
	"github.com/corelm/corelm/pkg/runtime/qwen2"
)

// Constructor binds a source's weights to an architecture.
type Constructor func(src model.Source, env model.Env) (model.Model, error)

// architectures is the registry: adding an architecture is adding a package
// and a line here.
var architectures = map[string]Constructor{
	"gemma2": gemma2.New,
	"llama":  llama.New,
	"phi3":   phi3.New,
	"qwen2":  qwen2.New,
}

// Architectures lists the supported architecture names.
func Architectures() []string {
	names := make([]string, 0, len(architectures))
	for name := range architectures {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

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
