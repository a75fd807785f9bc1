package runtime

import (
	"fmt"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// Loaded is a model file opened, validated and bound: the file, its source
// view and the model. Close releases the mapping once nothing runs on it.
type Loaded struct {
	File   *gguf.File
	Source model.Source
	Model  model.Model
}

// OpenGGUF maps, validates and binds a GGUF model file.
func OpenGGUF(path string, env model.Env) (*Loaded, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	l, err := bind(f, env)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

// ParseGGUF validates and binds a GGUF model held in memory (the embedded
// demo model, tests).
func ParseGGUF(data []byte, env model.Env) (*Loaded, error) {
	f, err := gguf.Parse(data)
	if err != nil {
		return nil, err
	}
	return bind(f, env)
}

func bind(f *gguf.File, env model.Env) (*Loaded, error) {
	if env.Pool == nil {
		env.Pool = kernels.NewPool(1)
	}
	src := model.FromGGUF(f)
	m, err := Build(src, env)
	if err != nil {
		return nil, err
	}
	return &Loaded{File: f, Source: src, Model: m}, nil
}

// Close unmaps the file. The model must not be used afterwards.
func (l *Loaded) Close() error { return l.File.Close() }
