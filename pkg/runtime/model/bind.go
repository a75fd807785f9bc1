package model

import (
	"fmt"
	"regexp"
	"strconv"
	"unsafe"

	"github.com/corelm/corelm/pkg/kernels"
)

// Matrix is a weight matrix of Rows rows of Cols elements each, encoded
// row-major in Type. Data points into the mapped model file.
type Matrix struct {
	Name       string
	Type       kernels.DType
	Layout     kernels.Layout
	Rows, Cols int
	Data       []byte
}

// Row decodes row r (0 ≤ r < Rows) into dst[:Cols].
func (m *Matrix) Row(r int, dst []float32) {
	kernels.RowLayout(m.Type, m.Layout, m.Data, m.Cols, r, dst)
}

// MatMul multiplies the n rows of x (each Cols wide) by the matrix,
// writing n rows of Rows outputs to out, split over pool.
func (m *Matrix) MatMul(pool *kernels.Pool, x []float32, n int, out []float32, s *kernels.Scratch) {
	kernels.MatMulLayout(pool, m.Type, m.Layout, m.Data, m.Rows, m.Cols, x, n, out, s)
}

// Product is the matrix times the n rows of x into out, as one product of
// a batch for Pass.MatMuls.
func (m *Matrix) Product(x []float32, n int, out []float32) kernels.Product {
	return kernels.Product{T: m.Type, L: m.Layout, W: m.Data, Rows: m.Rows, Cols: m.Cols, X: x, N: n, Out: out}
}

// RowBytes is the encoded size of one row.
func (m *Matrix) RowBytes() int { n, _ := m.Type.RowBytes(m.Cols); return n }

// Binder binds named tensors of a Source to model fields, checking each
// tensor's presence, type and shape. It collects the first error, so an
// architecture's binding code reads as a flat list of tensors.
type Binder struct {
	src  Source
	err  error
	used map[string]bool
}

// NewBinder starts binding tensors of src.
func NewBinder(src Source) *Binder { return &Binder{src: src, used: map[string]bool{}} }

// Err returns the first binding error.
func (b *Binder) Err() error { return b.err }

func (b *Binder) fail(format string, a ...any) {
	if b.err == nil {
		b.err = Invalidf(format, a...)
	}
}

func (b *Binder) lookup(name string, required bool) (TensorInfo, bool) {
	if b.err != nil {
		return TensorInfo{}, false
	}
	t, ok := b.src.LookupTensor(name)
	if !ok {
		if required {
			b.fail("tensor %s is missing", name)
		}
		return TensorInfo{}, false
	}
	b.used[name] = true
	return t, true
}

// Matrix binds a required 2-D weight: rows outputs of cols inputs each
// (ggml shape [cols, rows]).
func (b *Binder) Matrix(name string, rows, cols int) Matrix {
	m, _ := b.matrix(name, rows, cols, true)
	return m
}

// OptionalMatrix binds a 2-D weight that may be absent.
func (b *Binder) OptionalMatrix(name string, rows, cols int) (Matrix, bool) {
	return b.matrix(name, rows, cols, false)
}

func (b *Binder) matrix(name string, rows, cols int, required bool) (Matrix, bool) {
	t, ok := b.lookup(name, required)
	if !ok {
		return Matrix{}, false
	}
	if len(t.Shape) != 2 || t.Shape[0] != cols || t.Shape[1] != rows {
		b.fail("tensor %s has shape %v, the hyper-parameters imply [%d %d]", name, t.Shape, cols, rows)
		return Matrix{}, false
	}
	if !kernels.Supported(t.Type) {
		b.fail("tensor %s has type %s, which corelm cannot compute with", name, t.Type)
		return Matrix{}, false
	}
	if size, ok := kernels.LayoutBytes(t.Type, t.Layout, rows, cols); !ok || size != len(t.Data) {
		b.fail("tensor %s: %d bytes of %s in layout %s cannot be a %d×%d matrix", name, len(t.Data), t.Type, t.Layout, rows, cols)
		return Matrix{}, false
	}
	return Matrix{Name: name, Type: t.Type, Layout: t.Layout, Rows: rows, Cols: cols, Data: t.Data}, true
}

// Experts binds a required 3-D stack of n experts' weights (ggml shape
// [cols, rows, n]) as n matrices of rows outputs of cols inputs, each a
// view of its own expert's bytes: its part of the tensor's bytes (GGUF),
// or the part a packed file stores with the expert's other matrices
// (TensorInfo.Parts). The matmul kernels run on one expert as on any
// matrix, in whatever layout the file holds (a packed file keeps each
// expert's rows whole groups of its layout).
func (b *Binder) Experts(name string, n, rows, cols int) []Matrix {
	t, ok := b.lookup(name, true)
	if !ok {
		return nil
	}
	if len(t.Shape) != 3 || t.Shape[0] != cols || t.Shape[1] != rows || t.Shape[2] != n {
		b.fail("tensor %s has shape %v, the hyper-parameters imply [%d %d %d]", name, t.Shape, cols, rows, n)
		return nil
	}
	if !kernels.Supported(t.Type) {
		b.fail("tensor %s has type %s, which corelm cannot compute with", name, t.Type)
		return nil
	}
	size, ok := kernels.LayoutBytes(t.Type, t.Layout, rows, cols)
	if !ok || int64(size)*int64(n) != t.Bytes() || (t.Parts != nil && len(t.Parts) != n) {
		b.fail("tensor %s: %d bytes of %s in layout %s (in %d parts) cannot be %d experts of %d×%d", name, t.Bytes(), t.Type, t.Layout, len(t.Pieces()), n, rows, cols)
		return nil
	}
	out := make([]Matrix, n)
	for e := range out {
		var data []byte
		if t.Parts == nil {
			data = t.Data[e*size : (e+1)*size : (e+1)*size]
		} else if data = t.Parts[e]; len(data) != size {
			b.fail("tensor %s: expert %d has %d bytes, want %d", name, e, len(data), size)
			return nil
		}
		out[e] = Matrix{Name: fmt.Sprintf("%s[%d]", name, e), Type: t.Type, Layout: t.Layout, Rows: rows, Cols: cols, Data: data}
	}
	return out
}

// Embedding binds a required 2-D weight whose rows are looked up one by one
// (Matrix.Row); it may also serve as the output projection.
func (b *Binder) Embedding(name string, rows, cols int) Matrix {
	m, _ := b.matrix(name, rows, cols, true)
	return m
}

// Ends binds the token embedding, the output norm and the output
// projection: the file's output.weight when untied allows one and the file
// has it, else the embedding (tied embeddings).
func (b *Binder) Ends(cfg *Config, untied bool) Ends {
	e := Ends{TokenEmbd: b.Embedding(TTokenEmbd, cfg.Vocab, cfg.Dim), OutputNorm: b.Vector(TOutputNorm, cfg.Dim)}
	e.Output = e.TokenEmbd
	if untied {
		if out, ok := b.OptionalMatrix(TOutput, cfg.Vocab, cfg.Dim); ok {
			e.Output = out
		}
	}
	return e
}

// Vector binds a required 1-D tensor of n floats. F32 data is used in place;
// other types are decoded (vectors are tiny: norms, biases, rope factors).
func (b *Binder) Vector(name string, n int) []float32 {
	v, _ := b.vector(name, n, true)
	return v
}

// OptionalVector binds a 1-D tensor that may be absent (nil then).
func (b *Binder) OptionalVector(name string, n int) []float32 {
	v, _ := b.vector(name, n, false)
	return v
}

func (b *Binder) vector(name string, n int, required bool) ([]float32, bool) {
	t, ok := b.lookup(name, required)
	if !ok {
		return nil, false
	}
	if len(t.Shape) != 1 || t.Shape[0] != n {
		b.fail("tensor %s has shape %v, the hyper-parameters imply [%d]", name, t.Shape, n)
		return nil, false
	}
	if t.Type == kernels.F32 && uintptr(unsafe.Pointer(unsafe.SliceData(t.Data)))%4 == 0 {
		return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(t.Data))), n), true
	}
	if !kernels.Supported(t.Type) {
		b.fail("tensor %s has type %s, which corelm cannot compute with", name, t.Type)
		return nil, false
	}
	out := make([]float32, n)
	kernels.Dequantize(t.Type, t.Data, out)
	return out, true
}

// Has reports whether the source has the named tensor, without binding it.
func (b *Binder) Has(name string) bool {
	_, ok := b.src.LookupTensor(name)
	return ok
}

var blockTensor = regexp.MustCompile(`^blk\.(\d+)\.`)

// CheckBlocks fails when a tensor names a block at or past layers: the block
// count of the metadata must match the tensors.
func (b *Binder) CheckBlocks(layers int) {
	if b.err != nil {
		return
	}
	for _, name := range b.src.TensorNames() {
		m := blockTensor.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		if i, err := strconv.Atoi(m[1]); err != nil || i >= layers {
			b.fail("tensor %s belongs to block %s but block_count is %d", name, m[1], layers)
			return
		}
	}
}

// Unused returns the names of tensors of the source no binding asked for.
func (b *Binder) Unused() []string {
	var out []string
	for _, name := range b.src.TensorNames() {
		if !b.used[name] {
			out = append(out, name)
		}
	}
	return out
}

// Layer expands a per-block tensor name template such as "blk.%d.attn_q.weight".
func Layer(tmpl string, i int) string { return fmt.Sprintf(tmpl, i) }
