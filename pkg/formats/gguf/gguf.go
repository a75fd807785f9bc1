// Package gguf reads, validates and writes GGUF model files (versions 2 and 3).
//
// The reader is zero-copy: a File parses the header, metadata and tensor
// directory of a byte slice (usually a read-only mmap of the file) and tensor
// data are sub-slices of it. Parsing is strict: every count and length is
// checked against the bytes that remain before anything is allocated, so a
// hostile file costs at most what its size justifies and never panics.
package gguf

import (
	"fmt"

	"github.com/corelm/corelm/pkg/kernels"
)

// Magic is the first four bytes of every GGUF file ("GGUF" little-endian).
const Magic = 0x46554747

// DefaultAlignment applies when general.alignment is absent.
const DefaultAlignment = 32

// ValueType is the type tag of a metadata value.
type ValueType uint32

// Metadata value types of the GGUF specification.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("ValueType(%d)", uint32(t))
}

// fixedSize is the encoded size of a scalar type, 0 for string/array/unknown.
func (t ValueType) fixedSize() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

func (t ValueType) valid() bool { return t <= TypeFloat64 }

// Tensor describes one entry of the tensor directory.
type Tensor struct {
	Name   string
	Type   kernels.DType
	Shape  []uint64 // ggml order: Shape[0] is the row length (fastest varying)
	Offset uint64   // relative to the start of the data section
	Size   uint64   // bytes, from type and shape
	// Index is the position in the directory, for error messages.
	Index int
}

// Elements is the number of elements of t.
func (t *Tensor) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Rows is the number of rows (product of all dims but the first).
func (t *Tensor) Rows() int {
	n := 1
	for _, d := range t.Shape[1:] {
		n *= int(d)
	}
	return n
}

// Cols is the row length.
func (t *Tensor) Cols() int { return int(t.Shape[0]) }

func (t *Tensor) String() string {
	return fmt.Sprintf("%s %s %v", t.Name, t.Type, t.Shape)
}
