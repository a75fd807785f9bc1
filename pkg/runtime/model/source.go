// Package model holds what every architecture package shares: the metadata
// and tensor source a model is built from, hyper-parameter parsing, tensor
// binding with shape checks, the Model interface and the batch a forward pass
// consumes. It knows no particular architecture.
package model

import (
	"sort"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/kernels"
)

// Metadata is read access to a model's key/value metadata. *gguf.File and
// *pack.File (its manifest) both provide it.
type Metadata interface {
	String(key string) (string, bool)
	Uint(key string) (uint64, bool)
	Int(key string) (int64, bool)
	Float(key string) (float64, bool)
	Bool(key string) (bool, bool)
	Strings(key string) ([]string, bool)
	Float32s(key string) ([]float32, bool)
	Int32s(key string) ([]int32, bool)
}

// TensorInfo is a tensor of the source: its type, ggml-order shape
// (Shape[0] is the row length) and bytes, which point into the mapped file.
type TensorInfo struct {
	Name   string
	Type   kernels.DType
	Layout kernels.Layout // LayoutRows unless a packed file rearranged it
	Shape  []int
	// Data are the tensor's bytes, nil when they are stored in Parts.
	Data []byte
	// Parts, for a stack of experts a packed file stores expert by expert
	// (each expert's matrices together with its other stacks' ones), are
	// the bytes of each expert's matrix in order; nil otherwise.
	Parts [][]byte
}

// Bytes is the size of the tensor's bytes, wherever they are stored.
func (t *TensorInfo) Bytes() int64 {
	n := int64(len(t.Data))
	for _, p := range t.Parts {
		n += int64(len(p))
	}
	return n
}

// Pieces returns the tensor's bytes as one or more contiguous pieces (Data,
// or its Parts).
func (t *TensorInfo) Pieces() [][]byte {
	if t.Parts != nil {
		return t.Parts
	}
	return [][]byte{t.Data}
}

// Source is what a model is built from: metadata plus named tensors.
type Source interface {
	Metadata
	LookupTensor(name string) (TensorInfo, bool)
	// TensorNames lists every tensor: in directory order for GGUF, sorted
	// for packed files.
	TensorNames() []string
}

// FromGGUF adapts a parsed GGUF file to a Source. Tensor bytes stay in the
// file's mapping.
func FromGGUF(f *gguf.File) Source { return ggufSource{f} }

type ggufSource struct{ *gguf.File }

func (s ggufSource) LookupTensor(name string) (TensorInfo, bool) {
	t, ok := s.File.Tensor(name)
	if !ok {
		return TensorInfo{}, false
	}
	return TensorInfo{Name: t.Name, Type: t.Type, Shape: ints(t.Shape), Data: s.File.TensorData(t)}, true
}

func (s ggufSource) TensorNames() []string {
	names := make([]string, len(s.File.Tensors))
	for i := range s.File.Tensors {
		names[i] = s.File.Tensors[i].Name
	}
	return names
}

// FromPack adapts a packed file to a Source. Tensor bytes stay in the file's
// mapping, in the layout the packer chose (pack.KernelLayout).
func FromPack(f *pack.File) Source { return packSource{f} }

type packSource struct{ *pack.File }

func (s packSource) LookupTensor(name string) (TensorInfo, bool) {
	t, ok := s.File.Tensor(name)
	if !ok {
		return TensorInfo{}, false
	}
	info := TensorInfo{Name: t.Name, Type: t.Type, Layout: pack.KernelLayout(t.Layout), Shape: ints(t.Shape)}
	if t.Interleave != 0 {
		info.Parts = s.File.Parts(t)
	} else {
		info.Data = s.File.TensorData(t)
	}
	return info, true
}

// TensorNames lists every tensor name, sorted (the directory is in data
// order, which the packer chooses).
func (s packSource) TensorNames() []string {
	names := make([]string, len(s.File.Tensors))
	for i := range s.File.Tensors {
		names[i] = s.File.Tensors[i].Name
	}
	sort.Strings(names)
	return names
}

// ints converts a file's tensor shape to ints.
func ints[T ~uint64 | ~uint32 | ~int64](shape []T) []int {
	out := make([]int, len(shape))
	for i, d := range shape {
		out[i] = int(d)
	}
	return out
}
