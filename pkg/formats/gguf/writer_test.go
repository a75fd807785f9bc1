package gguf

import (
	"bytes"
	"errors"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/corelm/corelm/pkg/kernels"
)

func TestWriterRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		version uint32
		align   int // 0: general.alignment absent
		want    int
	}{
		{"v3 default alignment", 0, 0, DefaultAlignment},
		{"v2 default alignment", 2, 0, DefaultAlignment},
		{"v3 align 1", 3, 1, 1},
		{"v2 align 64", 2, 64, 64},
		{"v3 align 4096", 3, 4096, 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := sampleWriter(t, tt.version, tt.align)
			b := mustBytes(t, w)
			if size, err := w.Size(); err != nil || size != int64(len(b)) {
				t.Errorf("Size() = %d, %v; wrote %d bytes", size, err, len(b))
			}
			f := mustParse(t, b)

			wantVersion := tt.version
			if wantVersion == 0 {
				wantVersion = 3
			}
			if f.Version != wantVersion || f.Alignment != tt.want {
				t.Errorf("version %d alignment %d, want %d %d", f.Version, f.Alignment, wantVersion, tt.want)
			}
			if f.DataOffset%int64(tt.want) != 0 {
				t.Errorf("data section at %d is not %d-aligned", f.DataOffset, tt.want)
			}
			if len(f.KVs) != len(w.kvs) {
				t.Fatalf("%d KVs, want %d", len(f.KVs), len(w.kvs))
			}
			for i, kv := range w.kvs {
				if got := f.KVs[i]; got.Key != kv.Key || !sameValue(got.Value, kv.Value) {
					t.Errorf("KV %d: got %q=%v (%s), want %q=%v (%s)", i, got.Key, got.Value, got.Value.Type, kv.Key, kv.Value, kv.Value.Type)
				}
			}
			if len(f.Tensors) != len(sampleTensors) {
				t.Fatalf("%d tensors, want %d", len(f.Tensors), len(sampleTensors))
			}
			for i, tt2 := range sampleTensors {
				got := &f.Tensors[i]
				if got.Name != tt2.name || got.Type != tt2.typ || !slices.Equal(got.Shape, tt2.shape) {
					t.Errorf("tensor %d: got %v, want %s %s %v", i, got, tt2.name, tt2.typ, tt2.shape)
				}
				if got.Offset%uint64(tt.want) != 0 {
					t.Errorf("tensor %q offset %d not aligned", got.Name, got.Offset)
				}
				if data := f.TensorData(got); !bytes.Equal(data, w.tensors[i].data) {
					t.Errorf("tensor %q: data differs", got.Name)
				}
			}
			// Data ends on an alignment boundary, like llama.cpp's files.
			if rest := int64(len(b)) - f.DataOffset; rest%int64(tt.want) != 0 {
				t.Errorf("data section of %d bytes is not padded to %d", rest, tt.want)
			}
		})
	}
}

func TestValueAccessorsRoundTrip(t *testing.T) {
	f := mustParse(t, mustBytes(t, sampleWriter(t, 3, 0)))
	ints := []struct {
		key  string
		want int64
	}{
		{"test.u8", 200}, {"test.i8", -100}, {"test.u16", 60000}, {"test.i16", -30000},
		{"test.u32", 4000000000}, {"test.i32", -2000000000}, {"test.i64", -1 << 62},
	}
	for _, tt := range ints {
		if got, ok := f.Int(tt.key); !ok || got != tt.want {
			t.Errorf("Int(%q) = %d, %v; want %d", tt.key, got, ok, tt.want)
		}
	}
	if got, ok := f.Uint("test.u64"); !ok || got != 1<<63+5 {
		t.Errorf("Uint(test.u64) = %d, %v", got, ok)
	}
	if _, ok := f.Int("test.u64"); ok {
		t.Errorf("Int(test.u64) fits int64, but it does not")
	}
	if got, ok := f.Float("test.f32"); !ok || float32(got) != 1.5e-5 {
		t.Errorf("Float(test.f32) = %v, %v", got, ok)
	}
	if got, ok := f.Float("test.f64"); !ok || got != -2.25 {
		t.Errorf("Float(test.f64) = %v, %v", got, ok)
	}
	if got, ok := f.Bool("test.bool"); !ok || !got {
		t.Errorf("Bool(test.bool) = %v, %v", got, ok)
	}
	if got, ok := f.String("general.name"); !ok || got != "sample \xff model" {
		t.Errorf("String(general.name) = %q, %v", got, ok)
	}
	if got, ok := f.Strings("tokenizer.ggml.tokens"); !ok || !slices.Equal(got, vocab) {
		t.Errorf("Strings(tokens) = %q, %v", got, ok)
	}
	if got, ok := f.Float32s("tokenizer.ggml.scores"); !ok || len(got) != len(vocab) || got[4] != -2 {
		t.Errorf("Float32s(scores) = %v, %v", got, ok)
	}
	if got, ok := f.Float32s("test.f64s"); !ok || !slices.Equal(got, []float32{0.5, -1}) {
		t.Errorf("Float32s(test.f64s) = %v, %v", got, ok)
	}
	if got, ok := f.Int32s("tokenizer.ggml.token_type"); !ok || got[3] != 6 {
		t.Errorf("Int32s(token_type) = %v, %v", got, ok)
	}
	if got, ok := f.Int32s("test.u8s"); !ok || !slices.Equal(got, []int32{1, 2, 255}) {
		t.Errorf("Int32s(test.u8s) = %v, %v", got, ok)
	}
	if _, ok := f.Int32s("test.u64s"); ok {
		t.Errorf("Int32s(test.u64s) converted 1<<40 to int32")
	}
	if got, ok := f.Float32s("test.empty"); !ok || len(got) != 0 {
		t.Errorf("Float32s(test.empty) = %v, %v", got, ok)
	}

	nested, _ := f.Get("test.nested")
	outer, ok := nested.Values()
	if !ok || len(outer) != 4 {
		t.Fatalf("test.nested Values() = %v, %v", outer, ok)
	}
	if got, ok := outer[0].Int32s(); !ok || !slices.Equal(got, []int32{1, 2}) {
		t.Errorf("test.nested[0] = %v, %v", got, ok)
	}
	if got, ok := outer[1].Strings(); !ok || !slices.Equal(got, []string{"x", "\xff"}) {
		t.Errorf("test.nested[1] = %q, %v", got, ok)
	}
	inner, ok := outer[2].Values()
	if !ok || len(inner) != 1 {
		t.Fatalf("test.nested[2] = %v, %v", inner, ok)
	}
	if got, ok := inner[0].Int32s(); !ok || !slices.Equal(got, []int32{7}) {
		t.Errorf("test.nested[2][0] = %v, %v", got, ok)
	}
	if outer[3].Len != 0 || outer[3].Elem != TypeBool {
		t.Errorf("test.nested[3] = %v", outer[3])
	}
	if s := nested.String(); s != `[[1, 2], ["x", "\xff"], [[7]], []]` {
		t.Errorf("test.nested String() = %s", s)
	}
}

// TestValueStringShort checks that printing a vocabulary decodes only the
// few entries shown.
func TestValueStringShort(t *testing.T) {
	words := make([]string, 100000)
	for i := range words {
		words[i] = "token"
	}
	v := Strs(words)
	allocs := testing.AllocsPerRun(10, func() { _ = v.String() })
	if allocs > 40 {
		t.Errorf("String() of a 100k-entry array made %v allocations", allocs)
	}
	if s := v.String(); !strings.HasSuffix(s, `"token", … (100000 × string)]`) {
		t.Errorf("String() = %s", s)
	}
}

func TestAddKVReplaces(t *testing.T) {
	w := NewWriter(3)
	w.AddKV("a", U32(1))
	w.AddKV("b", U32(2))
	w.AddKV("a", Str("x"))
	f := mustParse(t, mustBytes(t, w))
	if len(f.KVs) != 2 || f.KVs[0].Key != "a" || f.KVs[0].Value.Type != TypeString {
		t.Errorf("KVs = %v", f.KVs)
	}
}

// TestVocabOnly covers the files that tokenizer tools write: no tensors, and
// often no padding after the metadata. Both must parse.
func TestVocabOnly(t *testing.T) {
	w := NewWriter(3)
	w.AddKV("tokenizer.ggml.model", Str("gpt2"))
	w.AddKV("tokenizer.ggml.tokens", Strs(vocab))
	w.AddKV("general.name", Str("end")) // last byte is not zero
	padded := mustBytes(t, w)
	unpadded := bytes.TrimRight(padded, "\x00")
	if len(unpadded)%DefaultAlignment == 0 {
		t.Fatalf("test needs a file whose metadata does not end aligned")
	}
	for _, b := range [][]byte{padded, unpadded} {
		f := mustParse(t, b)
		if got, _ := f.Strings("tokenizer.ggml.tokens"); !slices.Equal(got, vocab) {
			t.Errorf("tokens = %q", got)
		}
	}
}

// TestWriteToStreams checks that AddTensorFunc output equals AddTensor
// output, whatever the sizes of the callback's writes.
func TestWriteToStreams(t *testing.T) {
	data := randBytes(3*144, 7) // Q4_K [256, 3]
	shape := []uint64{256, 3}
	a := NewWriter(3)
	a.AddTensor("w", kernels.Q4_K, shape, data)
	a.AddTensor("v", kernels.F32, []uint64{3}, data[:12])
	b := NewWriter(3)
	b.AddTensorFunc("w", kernels.Q4_K, shape, func(w io.Writer) error {
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 17)
			if _, err := w.Write(rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
		}
		return nil
	})
	b.AddTensorFunc("v", kernels.F32, []uint64{3}, func(w io.Writer) error {
		_, err := io.Copy(w, bytes.NewReader(data[:12]))
		return err
	})
	want := mustBytes(t, a)
	var buf bytes.Buffer
	n, err := b.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) || !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("WriteTo = %d, %v; equal to Bytes: %v", n, err, bytes.Equal(buf.Bytes(), want))
	}
}

// TestWriterLargeModelStreams writes a file shaped like an 8B llama at
// Q4_K (about 4.6 GB) to io.Discard and checks the heap stays small.
func TestWriterLargeModelStreams(t *testing.T) {
	const (
		dim, ffn, vocabSize, layers, kvDim = 4096, 14336, 128256, 32, 1024
	)
	chunk := make([]byte, 1<<20)
	zeros := func(size uint64) func(io.Writer) error {
		return func(w io.Writer) error {
			for size > 0 {
				n := min(size, uint64(len(chunk)))
				if _, err := w.Write(chunk[:n]); err != nil {
					return err
				}
				size -= n
			}
			return nil
		}
	}
	w := NewWriter(3)
	w.AddKV("general.architecture", Str("llama"))
	w.AddKV("llama.block_count", U32(layers))
	add := func(name string, typ kernels.DType, shape ...uint64) {
		size, ok := typ.RowBytes(int(shapeElems(shape)))
		if !ok {
			t.Fatalf("%s: bad shape", name)
		}
		w.AddTensorFunc(name, typ, shape, zeros(uint64(size)))
	}
	add("token_embd.weight", kernels.Q4_K, dim, vocabSize)
	for i := range layers {
		p := "blk." + string(rune('a'+i/26)) + string(rune('a'+i%26)) + "."
		add(p+"attn_norm.weight", kernels.F32, dim)
		add(p+"attn_q.weight", kernels.Q4_K, dim, dim)
		add(p+"attn_k.weight", kernels.Q4_K, dim, kvDim)
		add(p+"attn_v.weight", kernels.Q6_K, dim, kvDim)
		add(p+"attn_output.weight", kernels.Q4_K, dim, dim)
		add(p+"ffn_norm.weight", kernels.F32, dim)
		add(p+"ffn_gate.weight", kernels.Q4_K, dim, ffn)
		add(p+"ffn_up.weight", kernels.Q4_K, dim, ffn)
		add(p+"ffn_down.weight", kernels.Q6_K, ffn, dim)
	}
	add("output_norm.weight", kernels.F32, dim)
	add("output.weight", kernels.Q6_K, dim, vocabSize)

	size, err := w.Size()
	if err != nil {
		t.Fatal(err)
	}
	if size < 4<<30 {
		t.Fatalf("model is only %d bytes", size)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	n, err := w.WriteTo(io.Discard)
	runtime.ReadMemStats(&after)
	if err != nil || n != size {
		t.Fatalf("WriteTo = %d, %v; want %d", n, err, size)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("writing %d bytes allocated %d bytes", size, alloc)
	}
}

func TestWriterRejects(t *testing.T) {
	f32 := func(n int) []byte { return make([]byte, 4*n) }
	tests := []struct {
		name  string
		build func(w *Writer)
		want  error
		msg   string
	}{
		{"data too short", func(w *Writer) { w.AddTensor("a", kernels.F32, []uint64{4, 2}, f32(7)) }, nil, `"a"`},
		{"duplicate tensor", func(w *Writer) {
			w.AddTensor("a", kernels.F32, []uint64{1}, f32(1))
			w.AddTensor("a", kernels.F32, []uint64{1}, f32(1))
		}, ErrDuplicateTensor, `"a"`},
		{"empty tensor name", func(w *Writer) { w.AddTensor("", kernels.F32, []uint64{1}, f32(1)) }, ErrEmptyName, `""`},
		{"invalid UTF-8 name", func(w *Writer) { w.AddTensor("a\xff", kernels.F32, []uint64{1}, f32(1)) }, ErrBadUTF8, `"a\xff"`},
		{"unknown type", func(w *Writer) { w.AddTensor("a", kernels.DType(4), []uint64{1}, nil) }, ErrTensorType, "type id 4"},
		{"no dims", func(w *Writer) { w.AddTensor("a", kernels.F32, nil, nil) }, ErrDims, "0 dimensions"},
		{"five dims", func(w *Writer) { w.AddTensor("a", kernels.F32, []uint64{1, 1, 1, 1, 1}, f32(1)) }, ErrDims, "5 dimensions"},
		{"zero dim", func(w *Writer) { w.AddTensor("a", kernels.F32, []uint64{4, 0}, nil) }, ErrDims, "dimension 1"},
		{"overflowing dims", func(w *Writer) {
			w.AddTensorFunc("a", kernels.F32, []uint64{1 << 32, 1 << 32}, func(io.Writer) error { return nil })
		}, ErrDims, "dimension 1"},
		{"partial block", func(w *Writer) { w.AddTensor("a", kernels.Q4_K, []uint64{100}, nil) }, ErrShape, "row length 100"},
		{"empty key", func(w *Writer) { w.AddKV("", U32(1)) }, ErrEmptyName, "metadata key"},
		{"invalid UTF-8 key", func(w *Writer) { w.AddKV("k\xc0", U32(1)) }, ErrBadUTF8, `"k\xc0"`},
		{"unknown value type", func(w *Writer) { w.AddKV("k", RawValue(13, 0, 0, nil)) }, ErrValueType, `"k"`},
		{"alignment 0", func(w *Writer) { w.SetAlignment(0) }, nil, "alignment 0"},
		{"alignment 48", func(w *Writer) { w.SetAlignment(48) }, nil, "alignment 48"},
		{"alignment as u64", func(w *Writer) { w.AddKV("general.alignment", U64(32)) }, ErrAlignment, "u64"},
		{"nil func", func(w *Writer) { w.AddTensorFunc("a", kernels.F32, []uint64{1}, nil) }, nil, "nil write"},
		{"func writes too little", func(w *Writer) {
			w.AddTensorFunc("a", kernels.F32, []uint64{2}, func(w io.Writer) error { _, err := w.Write(f32(1)); return err })
		}, nil, "produced 4 bytes, want 8"},
		{"func writes too much", func(w *Writer) {
			w.AddTensorFunc("a", kernels.F32, []uint64{2}, func(w io.Writer) error { _, err := w.Write(f32(3)); return err })
		}, errTensorOverrun, `"a"`},
		{"func fails", func(w *Writer) {
			w.AddTensorFunc("a", kernels.F32, []uint64{2}, func(io.Writer) error { return io.ErrUnexpectedEOF })
		}, io.ErrUnexpectedEOF, `"a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWriter(3)
			w.AddKV("general.architecture", Str("llama"))
			tt.build(w)
			_, err := w.WriteTo(io.Discard)
			if err == nil {
				t.Fatal("WriteTo succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %q is not %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
			if _, err2 := w.Bytes(); err2 == nil {
				t.Errorf("Bytes succeeded after WriteTo failed")
			}
		})
	}
	if w := NewWriter(4); w.err == nil {
		t.Errorf("NewWriter(4) accepted")
	}
}

func TestArrPanicsOnMixedTypes(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Arr accepted a u32 in an array of strings")
		}
	}()
	Arr(TypeString, Str("a"), U32(1))
}

// TestRawValueAccessors checks that accessors of a hand-made value whose
// payload disagrees with its header report failure instead of panicking.
func TestRawValueAccessors(t *testing.T) {
	vals := []Value{
		{},
		RawValue(TypeArray, TypeString, 3, []byte{1, 0, 0, 0, 0, 0, 0, 0}),
		RawValue(TypeArray, TypeString, 1, []byte{255, 255, 255, 255, 255, 255, 255, 255}),
		RawValue(TypeArray, TypeFloat32, 5, make([]byte, 4)),
		RawValue(TypeArray, TypeInt32, math.MaxInt, make([]byte, 4)),
		RawValue(TypeArray, TypeInt32, -1, nil),
		RawValue(TypeArray, TypeArray, 1, []byte{99, 0, 0, 0}),
		RawValue(TypeBool, 0, 0, nil),
		RawValue(TypeUint64, 0, 0, []byte{1}),
		RawValue(TypeFloat64, 0, 0, []byte{1}),
	}
	for i, v := range vals {
		exerciseValue(t, v, 0)
		if _, ok := v.Values(); ok && i > 0 {
			t.Errorf("value %d: Values() ok", i)
		}
	}
}

// TestNestedArrayEncoding pins the wire format of nested arrays to the GGUF
// spec (and gguf-py's writer): an element of an array of arrays is its
// element type, its length and its elements, with no type tag of its own.
func TestNestedArrayEncoding(t *testing.T) {
	w := NewWriter(3)
	w.AddKV("n", Arr(TypeArray, Arr(TypeUint16, U16(1), U16(2)), Arr(TypeString, Str("ab"))))
	got := mustBytes(t, w)
	want := []byte{
		'G', 'G', 'U', 'F', 3, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, // tensors
		1, 0, 0, 0, 0, 0, 0, 0, // KVs
		1, 0, 0, 0, 0, 0, 0, 0, 'n', // key
		9, 0, 0, 0, // array
		9, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, // of 2 arrays
		2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, // [u16 1, 2]
		8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 'a', 'b', // ["ab"]
	}
	want = append(want, make([]byte, 96-len(want))...) // padding to 32
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding\n got %v\nwant %v", got, want)
	}
	v, _ := mustParse(t, want).Get("n")
	if s := v.String(); s != `[[1, 2], ["ab"]]` {
		t.Errorf("parsed %s", s)
	}
}
