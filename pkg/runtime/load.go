package runtime

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// Loaded is a model file opened, validated and bound: its metadata, source
// view and model. Close releases the mapping once nothing runs on it.
type Loaded struct {
	Source model.Source
	Model  model.Model
	// KVs is every metadata entry, in file order.
	KVs []gguf.KV
	// Packed is set when the model comes from a packed (.clm) file.
	Packed *pack.File
	close  func() error
}

// Open maps a model file read-only, validates it and binds the model. It
// accepts GGUF files and corelm's packed files (told apart by their magic).
// The weights stay in the mapping: nothing is copied to the heap.
func Open(path string, env model.Env) (*Loaded, error) {
	magic := make([]byte, 8)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	_, err = io.ReadFull(f, magic)
	f.Close()
	if err == nil && bytes.Equal(magic, []byte(pack.Magic)) {
		return OpenPacked(path, env)
	}
	return OpenGGUF(path, env)
}

// OpenGGUF maps, validates and binds a GGUF model file.
func OpenGGUF(path string, env model.Env) (*Loaded, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	l, err := bind(model.FromGGUF(f), f.KVs, env)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l.close = f.Close
	return l, nil
}

// OpenPacked maps a packed file published by the loader, checks it (header,
// manifest checksum, directory, the CPU tier it was packed for) and binds
// the model to the mapping.
func OpenPacked(path string, env model.Env) (*Loaded, error) {
	f, err := pack.Open(path)
	if err != nil {
		return nil, err
	}
	if err := f.CheckTier(HostTier()); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l, err := bind(model.FromPack(f), f.KVs(), env)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l.Packed = f
	l.close = f.Close
	return l, nil
}

// ParseGGUF validates and binds a GGUF model held in memory (the embedded
// demo model, tests).
func ParseGGUF(data []byte, env model.Env) (*Loaded, error) {
	f, err := gguf.Parse(data)
	if err != nil {
		return nil, err
	}
	return bind(model.FromGGUF(f), f.KVs, env)
}

func bind(src model.Source, kvs []gguf.KV, env model.Env) (*Loaded, error) {
	if env.Pool == nil {
		env.Pool = kernels.NewPool(1)
	}
	m, err := Build(src, env)
	if err != nil {
		return nil, err
	}
	return &Loaded{Source: src, Model: m, KVs: kvs}, nil
}

// Close unmaps the file. The model must not be used afterwards.
func (l *Loaded) Close() error {
	if l.close == nil {
		return nil
	}
	return l.close()
}

// HostTier is the highest packed-layout tier the kernels in use can run
// (the CPU's features, capped by CORELM_KERNELS).
func HostTier() pack.Tier {
	switch kernels.ActiveTier() {
	case kernels.TierAVX512VNNI:
		return pack.TierAVX512VNNI
	case kernels.TierAVX2:
		return pack.TierAVX2
	}
	return pack.TierGeneric
}
