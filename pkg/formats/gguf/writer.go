package gguf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"unicode/utf8"

	"github.com/corelm/corelm/pkg/kernels"
)

// Writer builds a GGUF file: metadata, a tensor directory and tensor data.
// Tensor data may be given as bytes or produced by a callback when WriteTo
// runs, so a file of any size streams through a fixed amount of memory.
//
// The layout is llama.cpp's: header, metadata, tensor infos, padding to the
// alignment, then each tensor's data padded to the alignment, in the order
// the tensors were added.
//
// Mistakes (a data length that does not match the shape, a duplicate tensor
// name, an invalid key) are remembered and reported by WriteTo and Bytes, so
// a chain of Add calls needs one error check. Names, shapes, sizes and the
// alignment are checked as Parse checks them; metadata values are not, so
// tests can build hostile files from RawValue or over-nested arrays.
type Writer struct {
	version uint32
	kvs     []KV
	kvIndex map[string]int
	tensors []writerTensor
	names   map[string]bool
	err     error
}

type writerTensor struct {
	name  string
	typ   kernels.DType
	shape []uint64
	size  uint64
	data  []byte                // either data
	write func(io.Writer) error // or write
}

// NewWriter returns a writer of GGUF version 2 or 3 (0 means 3). The two
// versions share one little-endian layout.
func NewWriter(version uint32) *Writer {
	w := &Writer{version: version, kvIndex: map[string]int{}, names: map[string]bool{}}
	if version == 0 {
		w.version = 3
	}
	if w.version != 2 && w.version != 3 {
		w.fail(fmt.Errorf("gguf: writer: version %d; GGUF versions 2 and 3 are supported", version))
	}
	return w
}

func (w *Writer) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

// SetAlignment sets the alignment of the data section and of every tensor
// (general.alignment); it must be a power of two up to 1 MiB.
func (w *Writer) SetAlignment(a int) {
	if a <= 0 || a&(a-1) != 0 || a > 1<<20 {
		w.fail(fmt.Errorf("gguf: writer: alignment %d is not a power of two up to 1 MiB", a))
		return
	}
	w.AddKV("general.alignment", U32(uint32(a)))
}

// AddKV adds a metadata entry. Adding a key again replaces its value and
// keeps its position.
func (w *Writer) AddKV(key string, v Value) {
	if err := checkName(key); err != nil {
		w.fail(fmt.Errorf("gguf: writer: metadata key %q: %w", key, err))
		return
	}
	if !v.Type.valid() || (v.Type == TypeArray && !v.Elem.valid()) {
		w.fail(fmt.Errorf("gguf: writer: metadata key %q: %w (%s of %s)", key, ErrValueType, v.Type, v.Elem))
		return
	}
	if i, ok := w.kvIndex[key]; ok {
		w.kvs[i].Value = v
		return
	}
	w.kvIndex[key] = len(w.kvs)
	w.kvs = append(w.kvs, KV{Key: key, Value: v})
}

// AddTensor adds a tensor whose encoded data is data; len(data) must be the
// size its type and shape imply. data is not copied and must not change
// before WriteTo returns. shape is in ggml order (row length first).
func (w *Writer) AddTensor(name string, t kernels.DType, shape []uint64, data []byte) {
	wt, ok := w.tensor(name, t, shape)
	if !ok {
		return
	}
	if uint64(len(data)) != wt.size {
		w.fail(fmt.Errorf("gguf: writer: tensor %q (%s %v): %d bytes of data, want %d", name, t, shape, len(data), wt.size))
		return
	}
	wt.data = data
	w.tensors = append(w.tensors, wt)
}

// AddTensorFunc adds a tensor whose data write produces when WriteTo
// reaches it. write must write exactly the size the type and shape imply
// (see kernels.DType.RowBytes); it may write in pieces of any size.
func (w *Writer) AddTensorFunc(name string, t kernels.DType, shape []uint64, write func(io.Writer) error) {
	wt, ok := w.tensor(name, t, shape)
	if !ok {
		return
	}
	if write == nil {
		w.fail(fmt.Errorf("gguf: writer: tensor %q: nil write function", name))
		return
	}
	wt.write = write
	w.tensors = append(w.tensors, wt)
}

// tensor checks a tensor's name and geometry the way Parse will.
func (w *Writer) tensor(name string, t kernels.DType, shape []uint64) (writerTensor, bool) {
	bad := func(err error, format string, args ...any) (writerTensor, bool) {
		w.fail(fmt.Errorf("gguf: writer: tensor %q (%s %v): %w: %s", name, t, shape, err, fmt.Sprintf(format, args...)))
		return writerTensor{}, false
	}
	if err := checkName(name); err != nil {
		return bad(err, "bad name")
	}
	if w.names[name] {
		return bad(ErrDuplicateTensor, "added twice")
	}
	if !t.Known() {
		return bad(ErrTensorType, "type id %d", uint32(t))
	}
	if len(shape) == 0 || len(shape) > maxDims {
		return bad(ErrDims, "%d dimensions; must be 1..%d", len(shape), maxDims)
	}
	elems := uint64(1)
	for i, d := range shape {
		if d == 0 || d > maxDim || elems > math.MaxInt64/d {
			return bad(ErrDims, "dimension %d = %d", i, d)
		}
		elems *= d
	}
	if shape[0]%uint64(t.BlockSize()) != 0 {
		return bad(ErrShape, "row length %d is not a multiple of the block size %d", shape[0], t.BlockSize())
	}
	w.names[name] = true
	size := elems / uint64(t.BlockSize()) * uint64(t.BlockBytes())
	return writerTensor{name: name, typ: t, shape: append([]uint64(nil), shape...), size: size}, true
}

func checkName(s string) error {
	if s == "" {
		return ErrEmptyName
	}
	if !utf8.ValidString(s) {
		return ErrBadUTF8
	}
	return nil
}

// alignment is the alignment the written file declares, or an error if its
// general.alignment is one Parse would reject.
func (w *Writer) alignment() (uint64, error) {
	i, ok := w.kvIndex["general.alignment"]
	if !ok {
		return DefaultAlignment, nil
	}
	v := w.kvs[i].Value
	a, ok := alignmentValue(v)
	if !ok {
		return 0, fmt.Errorf("gguf: writer: metadata key \"general.alignment\": %w: must be a u32 power of two up to 1 MiB, got %s %v", ErrAlignment, v.Type, v)
	}
	return uint64(a), nil
}

// head encodes everything before the data section, including the padding,
// and returns it with the alignment and the data section's size.
func (w *Writer) head() (head []byte, align, dataSize uint64, err error) {
	if w.err != nil {
		return nil, 0, 0, w.err
	}
	if align, err = w.alignment(); err != nil {
		return nil, 0, 0, err
	}
	b := make([]byte, 0, w.headSize(align))
	b = binary.LittleEndian.AppendUint32(b, Magic)
	b = binary.LittleEndian.AppendUint32(b, w.version)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(w.tensors)))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(w.kvs)))
	for _, kv := range w.kvs {
		b = appendString(b, kv.Key)
		b = binary.LittleEndian.AppendUint32(b, uint32(kv.Value.Type))
		b = appendPayload(b, kv.Value)
	}
	for _, t := range w.tensors {
		b = appendString(b, t.name)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(t.shape)))
		for _, d := range t.shape {
			b = binary.LittleEndian.AppendUint64(b, d)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(t.typ))
		b = binary.LittleEndian.AppendUint64(b, dataSize)
		dataSize += alignUp(t.size, align)
	}
	b = append(b, make([]byte, alignUp(uint64(len(b)), align)-uint64(len(b)))...)
	return b, align, dataSize, nil
}

// headSize is an upper bound of len(head) for preallocation.
func (w *Writer) headSize(align uint64) int {
	n := 24 + int(align)
	for _, kv := range w.kvs {
		n += 8 + len(kv.Key) + 4 + payloadSize(kv.Value)
	}
	for _, t := range w.tensors {
		n += 8 + len(t.name) + 4 + 8*len(t.shape) + 4 + 8
	}
	return n
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// Size returns the size of the file WriteTo will write.
func (w *Writer) Size() (int64, error) {
	head, _, dataSize, err := w.head()
	if err != nil {
		return 0, err
	}
	return int64(len(head)) + int64(dataSize), nil
}

// WriteTo writes the file to out. Tensor data added with AddTensorFunc is
// produced now, one tensor at a time.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	head, align, _, err := w.head()
	if err != nil {
		return 0, err
	}
	cw := &countingWriter{w: out}
	bw := bufio.NewWriterSize(cw, 1<<16)
	if _, err := bw.Write(head); err != nil {
		return cw.n, err
	}
	var zeros [64]byte
	for _, t := range w.tensors {
		if t.write != nil {
			lw := &limitedWriter{w: bw, left: t.size}
			if err := t.write(lw); err != nil {
				return cw.n, fmt.Errorf("gguf: writer: tensor %q: %w", t.name, err)
			}
			if lw.left != 0 {
				return cw.n, fmt.Errorf("gguf: writer: tensor %q: write produced %d bytes, want %d", t.name, t.size-lw.left, t.size)
			}
		} else if _, err := bw.Write(t.data); err != nil {
			return cw.n, err
		}
		for pad := alignUp(t.size, align) - t.size; pad > 0; {
			n := min(pad, uint64(len(zeros)))
			if _, err := bw.Write(zeros[:n]); err != nil {
				return cw.n, err
			}
			pad -= n
		}
	}
	err = bw.Flush()
	return cw.n, err
}

// Bytes returns the whole file in memory.
func (w *Writer) Bytes() ([]byte, error) {
	size, err := w.Size()
	if err != nil {
		return nil, err
	}
	if size > math.MaxInt {
		return nil, fmt.Errorf("gguf: writer: %d bytes do not fit in memory", size)
	}
	var buf bytes.Buffer
	buf.Grow(int(size))
	if _, err := w.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// errTensorOverrun is returned to an AddTensorFunc callback that writes past
// its tensor's size; left unchecked it would shift every later tensor.
var errTensorOverrun = errors.New("write past the end of the tensor")

type limitedWriter struct {
	w    io.Writer
	left uint64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if uint64(len(p)) > l.left {
		n, err := l.w.Write(p[:l.left])
		l.left -= uint64(n)
		if err == nil {
			err = errTensorOverrun
		}
		return n, err
	}
	n, err := l.w.Write(p)
	l.left -= uint64(n)
	return n, err
}
