package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"os"
	"sort"
	"syscall"
	"unicode/utf8"

	"github.com/corelm/corelm/pkg/kernels"
)

// maxNesting bounds array-of-array depth; real files use at most 2.
const maxNesting = 4

// maxDims is ggml's GGML_MAX_DIMS.
const maxDims = 4

// maxDim bounds one dimension, far above any real model's (a 256k vocab).
const maxDim = math.MaxInt32 * 16

// alignmentValue returns the alignment a general.alignment value declares,
// and whether it is valid: a u32 power of two up to 1 MiB.
func alignmentValue(v Value) (int, bool) {
	a, ok := v.Uint()
	if !ok || v.Type != TypeUint32 || a == 0 || a&(a-1) != 0 || a > 1<<20 {
		return 0, false
	}
	return int(a), true
}

// File is a parsed GGUF file. All slices point into the bytes it was parsed
// from; the File must not outlive them (Close unmaps what Open mapped).
type File struct {
	Version   uint32
	Alignment int
	KVs       []KV     // in file order
	Tensors   []Tensor // in directory order
	// DataOffset is where the tensor data section starts.
	DataOffset int64

	data    []byte
	kvIndex map[string]int
	tIndex  map[string]int
	mapped  bool
	dev     uint64
	ino     uint64
}

// KV is one metadata entry.
type KV struct {
	Key   string
	Value Value
}

// Open maps path read-only and parses it. Close releases the mapping.
func Open(path string) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("gguf: %s is not a regular file", path)
	}
	size := st.Size()
	if size == 0 {
		return nil, &FormatError{Offset: 0, Err: ErrTruncated, Detail: "empty file"}
	}
	if size > math.MaxInt {
		return nil, &FormatError{Offset: 0, Err: ErrTooLarge, Detail: "file larger than the address space"}
	}
	data, err := syscall.Mmap(int(fd.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("gguf: mmap %s: %w", path, err)
	}
	f, err := Parse(data)
	if err != nil {
		syscall.Munmap(data)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.mapped = true
	if st, ok := st.Sys().(*syscall.Stat_t); ok {
		f.dev, f.ino = uint64(st.Dev), st.Ino
	}
	return f, nil
}

// Identity returns the device and inode of the file Open mapped (zero for a
// File from Parse).
func (f *File) Identity() (dev, ino uint64) { return f.dev, f.ino }

// Close releases the mapping made by Open. It is a no-op for a File from Parse.
func (f *File) Close() error {
	if !f.mapped || f.data == nil {
		return nil
	}
	err := syscall.Munmap(f.data)
	f.data = nil
	return err
}

// Bytes returns the whole underlying file.
func (f *File) Bytes() []byte { return f.data }

// Parse parses and validates the GGUF container in data: header, metadata,
// tensor directory and the placement of every tensor's data.
func Parse(data []byte) (*File, error) {
	r := &reader{buf: data}
	f := &File{data: data, Alignment: DefaultAlignment}

	magic, err := r.u32("header magic")
	if err != nil {
		return nil, err
	}
	if magic != Magic {
		return nil, &FormatError{Offset: 0, Where: "header", Err: ErrBadMagic, Detail: fmt.Sprintf("got %#08x", magic)}
	}
	if f.Version, err = r.u32("header version"); err != nil {
		return nil, err
	}
	if f.Version != 2 && f.Version != 3 {
		detail := fmt.Sprintf("version %d; corelm reads 2 and 3", f.Version)
		if v := bits.ReverseBytes32(f.Version); v == 2 || v == 3 {
			detail = fmt.Sprintf("big-endian GGUF v%d; corelm reads little-endian files only", v)
		}
		return nil, &FormatError{Offset: 4, Where: "header", Err: ErrVersion, Detail: detail}
	}
	nTensors, err := r.u64("header tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := r.u64("header metadata count")
	if err != nil {
		return nil, err
	}
	// Each KV needs at least 8 (key len) + 1 (key) + 4 (type) + 1 bytes; each
	// tensor info at least 8 + 1 + 4 + 8 + 4 + 8; both must fit together.
	const minKV, minTensor = 14, 33
	if nKV > uint64(r.remaining())/minKV {
		return nil, &FormatError{Offset: 16, Where: "header", Err: ErrTooLarge, Detail: fmt.Sprintf("%d metadata entries", nKV)}
	}
	if nTensors > (uint64(r.remaining())-nKV*minKV)/minTensor {
		return nil, &FormatError{Offset: 8, Where: "header", Err: ErrTooLarge, Detail: fmt.Sprintf("%d tensors", nTensors)}
	}

	f.KVs = make([]KV, 0, nKV)
	f.kvIndex = make(map[string]int, nKV)
	for i := uint64(0); i < nKV; i++ {
		start := r.off
		key, err := r.str(fmt.Sprintf("metadata entry %d key", i))
		if err != nil {
			return nil, err
		}
		where := fmt.Sprintf("metadata key %q", key)
		if key == "" {
			return nil, &FormatError{Offset: int64(start), Where: fmt.Sprintf("metadata entry %d", i), Err: ErrEmptyName}
		}
		if _, dup := f.kvIndex[key]; dup {
			return nil, &FormatError{Offset: int64(start), Where: where, Err: ErrDuplicateKey}
		}
		typ, err := r.u32Field(where, " type")
		if err != nil {
			return nil, err
		}
		v, err := r.value(ValueType(typ), where, 0)
		if err != nil {
			return nil, err
		}
		f.kvIndex[key] = len(f.KVs)
		f.KVs = append(f.KVs, KV{Key: key, Value: v})
	}

	if v, ok := f.Get("general.alignment"); ok {
		a, ok := alignmentValue(v)
		if !ok {
			return nil, &FormatError{Offset: -1, Where: `metadata key "general.alignment"`, Err: ErrAlignment,
				Detail: fmt.Sprintf("must be a u32 power of two up to 1 MiB, got %s %v", v.Type, v)}
		}
		f.Alignment = a
	}

	f.Tensors = make([]Tensor, 0, nTensors)
	f.tIndex = make(map[string]int, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		start := r.off
		name, err := r.str(fmt.Sprintf("tensor %d name", i))
		if err != nil {
			return nil, err
		}
		where := fmt.Sprintf("tensor %d %q", i, name)
		if name == "" {
			return nil, &FormatError{Offset: int64(start), Where: fmt.Sprintf("tensor %d", i), Err: ErrEmptyName}
		}
		if _, dup := f.tIndex[name]; dup {
			return nil, &FormatError{Offset: int64(start), Where: where, Err: ErrDuplicateTensor}
		}
		nDims, err := r.u32Field(where, " dimension count")
		if err != nil {
			return nil, err
		}
		if nDims == 0 || nDims > maxDims {
			return nil, &FormatError{Offset: int64(r.off - 4), Where: where, Err: ErrDims, Detail: fmt.Sprintf("%d dimensions; must be 1..%d", nDims, maxDims)}
		}
		t := Tensor{Name: name, Index: int(i), Shape: make([]uint64, nDims)}
		elems := uint64(1)
		for d := range t.Shape {
			dim, err := r.u64Field(where, " dimension")
			if err != nil {
				return nil, err
			}
			if dim == 0 {
				return nil, &FormatError{Offset: int64(r.off - 8), Where: where, Err: ErrDims, Detail: fmt.Sprintf("dimension %d is zero", d)}
			}
			if dim > maxDim || elems > math.MaxInt64/dim {
				return nil, &FormatError{Offset: int64(r.off - 8), Where: where, Err: ErrDims, Detail: fmt.Sprintf("dimension %d = %d overflows", d, dim)}
			}
			elems *= dim
			t.Shape[d] = dim
		}
		typ, err := r.u32Field(where, " type")
		if err != nil {
			return nil, err
		}
		t.Type = kernels.DType(typ)
		if !t.Type.Known() {
			return nil, &FormatError{Offset: int64(r.off - 4), Where: where, Err: ErrTensorType, Detail: fmt.Sprintf("type id %d", typ)}
		}
		if t.Shape[0]%uint64(t.Type.BlockSize()) != 0 {
			return nil, &FormatError{Offset: -1, Where: where, Err: ErrShape,
				Detail: fmt.Sprintf("row length %d is not a multiple of %s's block size %d", t.Shape[0], t.Type, t.Type.BlockSize())}
		}
		blocks := elems / uint64(t.Type.BlockSize())
		if blocks > math.MaxInt64/uint64(t.Type.BlockBytes()) {
			return nil, &FormatError{Offset: -1, Where: where, Err: ErrDims, Detail: "byte size overflows"}
		}
		t.Size = blocks * uint64(t.Type.BlockBytes())
		if t.Offset, err = r.u64Field(where, " offset"); err != nil {
			return nil, err
		}
		if t.Offset%uint64(f.Alignment) != 0 {
			return nil, &FormatError{Offset: int64(r.off - 8), Where: where, Err: ErrMisaligned,
				Detail: fmt.Sprintf("offset %d is not a multiple of the alignment %d", t.Offset, f.Alignment)}
		}
		f.tIndex[name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}

	f.DataOffset = int64(alignUp(uint64(r.off), uint64(f.Alignment)))
	if err := f.checkPlacement(); err != nil {
		return nil, err
	}
	return f, nil
}

// checkPlacement verifies that every tensor's bytes lie inside the file and
// that no two tensors share bytes.
func (f *File) checkPlacement() error {
	if len(f.Tensors) == 0 {
		return nil
	}
	avail := uint64(0)
	if int64(len(f.data)) > f.DataOffset {
		avail = uint64(int64(len(f.data)) - f.DataOffset)
	}
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return f.Tensors[order[a]].Offset < f.Tensors[order[b]].Offset })
	var prevEnd uint64
	prev := -1
	for _, i := range order {
		t := &f.Tensors[i]
		where := fmt.Sprintf("tensor %d %q", i, t.Name)
		if t.Offset > avail || t.Size > avail-t.Offset {
			return &FormatError{Offset: -1, Where: where, Err: ErrOutOfBounds,
				Detail: fmt.Sprintf("data [%d, +%d) but the data section holds %d bytes", t.Offset, t.Size, avail)}
		}
		if prev >= 0 && t.Offset < prevEnd {
			return &FormatError{Offset: -1, Where: where, Err: ErrOverlap,
				Detail: fmt.Sprintf("starts at %d inside tensor %q which ends at %d", t.Offset, f.Tensors[prev].Name, prevEnd)}
		}
		prevEnd = t.Offset + t.Size
		prev = i
	}
	return nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// Get returns the metadata value of key.
func (f *File) Get(key string) (Value, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return Value{}, false
	}
	return f.KVs[i].Value, true
}

// Tensor returns the directory entry of the named tensor.
func (f *File) Tensor(name string) (*Tensor, bool) {
	i, ok := f.tIndex[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// TensorData returns the bytes of t, a sub-slice of the mapping (no copy).
func (f *File) TensorData(t *Tensor) []byte {
	start := f.DataOffset + int64(t.Offset)
	return f.data[start : start+int64(t.Size) : start+int64(t.Size)]
}

// Typed accessors. Each returns ok=false when the key is missing or holds
// another type, so callers can tell "absent" from "present"; Validate-style
// callers that need to distinguish use Get.

// String returns a string value.
func (f *File) String(key string) (string, bool) { return lookup(f, key, Value.Str) }

// Uint returns an integer value of any width that is non-negative.
func (f *File) Uint(key string) (uint64, bool) { return lookup(f, key, Value.Uint) }

// Int returns an integer value of any width.
func (f *File) Int(key string) (int64, bool) { return lookup(f, key, Value.Int) }

// Float returns a float (or integer) value.
func (f *File) Float(key string) (float64, bool) { return lookup(f, key, Value.Float) }

// Bool returns a bool value.
func (f *File) Bool(key string) (bool, bool) { return lookup(f, key, Value.Bool) }

// Strings returns an array of strings (copied out of the mapping).
func (f *File) Strings(key string) ([]string, bool) { return lookup(f, key, Value.Strings) }

// Float32s returns an array of f32.
func (f *File) Float32s(key string) ([]float32, bool) { return lookup(f, key, Value.Float32s) }

// Int32s returns an array of i32 (or of any integer type that fits).
func (f *File) Int32s(key string) ([]int32, bool) { return lookup(f, key, Value.Int32s) }

// lookup reads the value of key with as (false when key is missing).
func lookup[T any](f *File, key string, as func(Value) (T, bool)) (T, bool) {
	v, ok := f.Get(key)
	if !ok {
		var zero T
		return zero, false
	}
	return as(v)
}

// reader is a bounds-checked little-endian cursor.
type reader struct {
	buf []byte
	off int
}

func (r *reader) remaining() int { return len(r.buf) - r.off }

func (r *reader) need(n uint64, what string) error {
	if n > uint64(r.remaining()) {
		return &FormatError{Offset: int64(r.off), Where: what, Err: ErrTruncated,
			Detail: fmt.Sprintf("needs %d bytes, %d remain", n, r.remaining())}
	}
	return nil
}

func (r *reader) take(n uint64, what string) ([]byte, error) {
	if err := r.need(n, what); err != nil {
		return nil, err
	}
	b := r.buf[r.off : r.off+int(n) : r.off+int(n)]
	r.off += int(n)
	return b, nil
}

func (r *reader) u32(what string) (uint32, error) {
	b, err := r.take(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *reader) u64(what string) (uint64, error) {
	b, err := r.take(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// u64Field is u64 for a field named what+suffix; the name is only built on
// error, since strings and arrays are read hundreds of thousands of times
// for a tokenizer vocabulary.
func (r *reader) u64Field(what, suffix string) (uint64, error) {
	if r.remaining() < 8 {
		return 0, r.need(8, what+suffix)
	}
	v := binary.LittleEndian.Uint64(r.buf[r.off:])
	r.off += 8
	return v, nil
}

func (r *reader) u32Field(what, suffix string) (uint32, error) {
	if r.remaining() < 4 {
		return 0, r.need(4, what+suffix)
	}
	v := binary.LittleEndian.Uint32(r.buf[r.off:])
	r.off += 4
	return v, nil
}

func (r *reader) strBytes(what string) ([]byte, error) {
	start := r.off
	n, err := r.u64Field(what, " length")
	if err != nil {
		return nil, err
	}
	if n > uint64(r.remaining()) {
		return nil, &FormatError{Offset: int64(start), Where: what, Err: ErrTooLarge,
			Detail: fmt.Sprintf("string of %d bytes, %d remain", n, r.remaining())}
	}
	return r.take(n, what)
}

func (r *reader) str(what string) (string, error) {
	b, err := r.strBytes(what)
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		off := int64(r.off - len(b))
		if len(b) > 80 {
			b = b[:80]
		}
		return "", &FormatError{Offset: off, Where: what, Err: ErrBadUTF8, Detail: fmt.Sprintf("%q", b)}
	}
	return string(b), nil
}

// value reads one value of type typ. Strings inside metadata are kept as
// raw bytes (tokenizer vocabularies contain arbitrary byte sequences).
func (r *reader) value(typ ValueType, where string, depth int) (Value, error) {
	start := r.off
	if !typ.valid() {
		return Value{}, &FormatError{Offset: int64(start - 4), Where: where, Err: ErrValueType, Detail: fmt.Sprintf("type id %d", uint32(typ))}
	}
	switch typ {
	case TypeString:
		b, err := r.strBytes(where)
		if err != nil {
			return Value{}, err
		}
		return Value{Type: TypeString, raw: b}, nil
	case TypeArray:
		if depth >= maxNesting {
			return Value{}, &FormatError{Offset: int64(start), Where: where, Err: ErrNesting, Detail: fmt.Sprintf("more than %d levels", maxNesting)}
		}
		et, err := r.u32Field(where, " array element type")
		if err != nil {
			return Value{}, err
		}
		elem := ValueType(et)
		if !elem.valid() {
			return Value{}, &FormatError{Offset: int64(r.off - 4), Where: where + " array", Err: ErrValueType, Detail: fmt.Sprintf("element type id %d", et)}
		}
		n, err := r.u64Field(where, " array length")
		if err != nil {
			return Value{}, err
		}
		minSize := uint64(elem.fixedSize())
		switch elem {
		case TypeString:
			minSize = 8
		case TypeArray:
			minSize = 12
		}
		if n > uint64(r.remaining())/minSize {
			return Value{}, &FormatError{Offset: int64(r.off - 8), Where: where, Err: ErrTooLarge,
				Detail: fmt.Sprintf("array of %d %s, %d bytes remain", n, elem, r.remaining())}
		}
		body := r.off
		if fs := elem.fixedSize(); fs > 0 {
			if _, err := r.take(n*uint64(fs), where); err != nil {
				return Value{}, err
			}
			if elem == TypeBool {
				for i, b := range r.buf[body:r.off] {
					if b > 1 {
						return Value{}, &FormatError{Offset: int64(body + i), Where: fmt.Sprintf("%s element %d", where, i), Err: ErrBadValue, Detail: fmt.Sprintf("bool byte %d; must be 0 or 1", b)}
					}
				}
			}
		} else {
			for i := uint64(0); i < n; i++ {
				if elem == TypeString {
					if _, err := r.strBytes(where); err != nil {
						return Value{}, err
					}
					continue
				}
				// A nested array element is itself encoded as an array
				// (element type, length, elements) with no type tag of its
				// own: the outer element type already says "array".
				if _, err := r.value(TypeArray, where, depth+1); err != nil {
					return Value{}, err
				}
			}
		}
		return Value{Type: TypeArray, Elem: elem, Len: int(n), raw: r.buf[body:r.off:r.off]}, nil
	default:
		b, err := r.take(uint64(typ.fixedSize()), where)
		if err != nil {
			return Value{}, err
		}
		if typ == TypeBool && b[0] > 1 {
			return Value{}, &FormatError{Offset: int64(start), Where: where, Err: ErrBadValue, Detail: fmt.Sprintf("bool byte %d; must be 0 or 1", b[0])}
		}
		return Value{Type: typ, raw: b}, nil
	}
}
