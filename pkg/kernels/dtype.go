// Package kernels holds the numeric building blocks of corelm: quantized block
// formats, dequantization, dot products, matrix products, normalisation, RoPE,
// softmax and activations, and the thread pool that splits work over cores.
//
// It knows nothing about models. The pure-Go code here is the reference
// implementation and the oracle of the tests: bit-exact to ggml's block
// layouts and reference quantizers, and following the operation order of
// ggml's scalar dot products. Assembly fast paths, when added, sit beside it
// (foo_amd64.go/.s) and are tested against it.
package kernels

import (
	"fmt"
	"strings"
)

// DType identifies a tensor element format. The numbering is ggml's, so a GGUF
// tensor's type field converts directly.
type DType uint32

// ggml tensor types (ggml.h). Gaps are types ggml removed or never shipped.
const (
	F32     DType = 0
	F16     DType = 1
	Q4_0    DType = 2
	Q4_1    DType = 3
	Q5_0    DType = 6
	Q5_1    DType = 7
	Q8_0    DType = 8
	Q8_1    DType = 9
	Q2_K    DType = 10
	Q3_K    DType = 11
	Q4_K    DType = 12
	Q5_K    DType = 13
	Q6_K    DType = 14
	Q8_K    DType = 15
	IQ2_XXS DType = 16
	IQ2_XS  DType = 17
	IQ3_XXS DType = 18
	IQ1_S   DType = 19
	IQ4_NL  DType = 20
	IQ3_S   DType = 21
	IQ2_S   DType = 22
	IQ4_XS  DType = 23
	I8      DType = 24
	I16     DType = 25
	I32     DType = 26
	I64     DType = 27
	F64     DType = 28
	IQ1_M   DType = 29
	BF16    DType = 30
	TQ1_0   DType = 34
	TQ2_0   DType = 35
	MXFP4   DType = 39
)

// QK_K is the number of weights in a k-quant super-block.
const QK_K = 256

type dtypeInfo struct {
	name       string
	blockSize  int // elements per block
	blockBytes int // bytes per block
}

// dtypes lists every type a GGUF file may carry, with its block geometry.
// A type missing here is unknown and rejected by the validator.
var dtypes = map[DType]dtypeInfo{
	F32:     {"F32", 1, 4},
	F16:     {"F16", 1, 2},
	Q4_0:    {"Q4_0", 32, 2 + 16},
	Q4_1:    {"Q4_1", 32, 2 + 2 + 16},
	Q5_0:    {"Q5_0", 32, 2 + 4 + 16},
	Q5_1:    {"Q5_1", 32, 2 + 2 + 4 + 16},
	Q8_0:    {"Q8_0", 32, 2 + 32},
	Q8_1:    {"Q8_1", 32, 4 + 32},
	Q2_K:    {"Q2_K", QK_K, QK_K/16 + QK_K/4 + 2 + 2},
	Q3_K:    {"Q3_K", QK_K, QK_K/8 + QK_K/4 + 12 + 2},
	Q4_K:    {"Q4_K", QK_K, 2 + 2 + 12 + QK_K/2},
	Q5_K:    {"Q5_K", QK_K, 2 + 2 + 12 + QK_K/8 + QK_K/2},
	Q6_K:    {"Q6_K", QK_K, QK_K/2 + QK_K/4 + QK_K/16 + 2},
	Q8_K:    {"Q8_K", QK_K, 4 + QK_K + QK_K/16*2},
	IQ2_XXS: {"IQ2_XXS", QK_K, 2 + QK_K/8*2},
	IQ2_XS:  {"IQ2_XS", QK_K, 2 + QK_K/8*2 + QK_K/32},
	IQ3_XXS: {"IQ3_XXS", QK_K, 2 + QK_K/4 + QK_K/8},
	IQ1_S:   {"IQ1_S", QK_K, 2 + QK_K/8 + QK_K/16},
	IQ4_NL:  {"IQ4_NL", 32, 2 + 16},
	IQ3_S:   {"IQ3_S", QK_K, 2 + QK_K/4 + QK_K/8 + QK_K/32 + 4},
	IQ2_S:   {"IQ2_S", QK_K, 2 + QK_K/4 + QK_K/16},
	IQ4_XS:  {"IQ4_XS", QK_K, 2 + 2 + QK_K/64 + QK_K/2},
	I8:      {"I8", 1, 1},
	I16:     {"I16", 1, 2},
	I32:     {"I32", 1, 4},
	I64:     {"I64", 1, 8},
	F64:     {"F64", 1, 8},
	IQ1_M:   {"IQ1_M", QK_K, QK_K/8 + QK_K/16 + QK_K/32},
	BF16:    {"BF16", 1, 2},
	TQ1_0:   {"TQ1_0", QK_K, (QK_K-4*QK_K/64)/5 + QK_K/64 + 2},
	TQ2_0:   {"TQ2_0", QK_K, QK_K/4 + 2},
	MXFP4:   {"MXFP4", 32, 1 + 16},
}

// Known reports whether t is a ggml type this build knows the geometry of.
func (t DType) Known() bool { _, ok := dtypes[t]; return ok }

// BlockSize is the number of elements one block of t holds.
func (t DType) BlockSize() int { return dtypes[t].blockSize }

// BlockBytes is the encoded size of one block of t.
func (t DType) BlockBytes() int { return dtypes[t].blockBytes }

func (t DType) String() string {
	if info, ok := dtypes[t]; ok {
		return info.name
	}
	return fmt.Sprintf("DType(%d)", uint32(t))
}

// ParseDType maps a ggml type name ("Q4_K", "f16", ...) to its DType.
func ParseDType(name string) (DType, bool) {
	for t, info := range dtypes {
		if strings.EqualFold(info.name, name) {
			return t, true
		}
	}
	return 0, false
}

// RowBytes is the encoded size of n elements of t. ok is false when n is not
// a whole number of blocks or t is unknown.
func (t DType) RowBytes(n int) (size int, ok bool) {
	info, known := dtypes[t]
	if !known || n < 0 || n%info.blockSize != 0 {
		return 0, false
	}
	return n / info.blockSize * info.blockBytes, true
}
