package gguf

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/corelm/corelm/pkg/kernels"
)

// testTensor is a tensor of the sample model.
type testTensor struct {
	name  string
	typ   kernels.DType
	shape []uint64
}

// sampleTensors mixes block sizes (1, 32, 256) and ranks; two names have the
// same length so a test can turn one into the other in place.
var sampleTensors = []testTensor{
	{"token_embd.weight", kernels.F32, []uint64{8, 4}},
	{"blk.0.attn_q.weight", kernels.Q4_K, []uint64{256, 2}},
	{"blk.0.attn_k.weight", kernels.Q8_0, []uint64{64, 3}},
	{"output_norm.weight", kernels.F16, []uint64{8}},
	{"blk.0.ffn_up.weight", kernels.Q6_K, []uint64{256, 1, 2, 1}},
}

// vocab holds what tokenizer vocabularies hold: byte tokens, invalid UTF-8,
// NUL, multi-byte runes, the empty string.
var vocab = []string{"<unk>", "<s>", "</s>", "<0x00>", "\xff\xfe", "\x00", "▁the", "", "é", "\xe2\x96", "日本"}

// sampleWriter builds a small model that uses every value type.
func sampleWriter(t testing.TB, version uint32, align int) *Writer {
	t.Helper()
	w := NewWriter(version)
	w.AddKV("general.architecture", Str("llama"))
	if align != 0 {
		w.SetAlignment(align)
	}
	w.AddKV("general.name", Str("sample \xff model")) // metadata strings may hold any bytes
	w.AddKV("test.u8", U8(200))
	w.AddKV("test.i8", I8(-100))
	w.AddKV("test.u16", U16(60000))
	w.AddKV("test.i16", I16(-30000))
	w.AddKV("test.u32", U32(4000000000))
	w.AddKV("test.i32", I32(-2000000000))
	w.AddKV("test.f32", F32(1.5e-5))
	w.AddKV("test.bool", Bool(true))
	w.AddKV("test.u64", U64(1<<63+5))
	w.AddKV("test.i64", I64(-1<<62))
	w.AddKV("test.f64", F64(-2.25))
	w.AddKV("test.dup.a", U32(1))
	w.AddKV("test.dup.b", U32(2))
	w.AddKV("test.bools", Arr(TypeBool, Bool(true), Bool(false), Bool(true)))
	w.AddKV("test.u8s", Arr(TypeUint8, U8(1), U8(2), U8(255)))
	w.AddKV("test.i16s", Arr(TypeInt16, I16(-1), I16(2)))
	w.AddKV("test.u64s", Arr(TypeUint64, U64(1), U64(1<<40)))
	w.AddKV("test.f64s", Arr(TypeFloat64, F64(0.5), F64(-1)))
	w.AddKV("test.empty", Arr(TypeFloat32))
	w.AddKV("tokenizer.ggml.tokens", Strs(vocab))
	w.AddKV("tokenizer.ggml.scores", F32s([]float32{0, 0, 0, -1, -2, -3, -4, -5, -6, -7, -8}))
	w.AddKV("tokenizer.ggml.token_type", I32s([]int32{2, 3, 3, 6, 6, 6, 1, 1, 1, 1, 1}))
	w.AddKV("test.nested", Arr(TypeArray,
		Arr(TypeInt32, I32(1), I32(2)),
		Arr(TypeString, Str("x"), Str("\xff")),
		Arr(TypeArray, Arr(TypeUint8, U8(7))), // three levels
		Arr(TypeBool),
	))
	// Four levels of arrays: the most Parse accepts.
	w.AddKV("test.deep", Arr(TypeArray, Arr(TypeArray, Arr(TypeArray, Arr(TypeUint16, U16(9))))))
	w.AddKV("test.key.x", U32(7))
	for i, tt := range sampleTensors {
		size, ok := tt.typ.RowBytes(int(shapeElems(tt.shape)))
		if !ok {
			t.Fatalf("bad sample tensor %s", tt.name)
		}
		w.AddTensor(tt.name, tt.typ, tt.shape, randBytes(size, uint64(i)))
	}
	return w
}

func shapeElems(shape []uint64) uint64 {
	n := uint64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 42))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mustBytes(t testing.TB, w *Writer) []byte {
	t.Helper()
	b, err := w.Bytes()
	if err != nil {
		t.Fatalf("Bytes: %v", err)
	}
	return b
}

func mustParse(t testing.TB, b []byte) *File {
	t.Helper()
	f, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return f
}

// sameValue compares two values by type and encoding.
func sameValue(a, b Value) bool {
	return a.Type == b.Type && a.Elem == b.Elem && a.Len == b.Len && bytes.Equal(a.raw, b.raw)
}

// kvOffset is where the entry of key starts (its key length field).
func kvOffset(t testing.TB, b []byte, key string) int {
	t.Helper()
	enc := binary.LittleEndian.AppendUint64(nil, uint64(len(key)))
	enc = append(enc, key...)
	i := bytes.Index(b, enc)
	if i < 0 {
		t.Fatalf("key %q not in file", key)
	}
	return i
}

// tensorInfo locates the fields of a tensor's directory entry.
type tensorInfo struct {
	name, nDims, dims, typ, offset int
}

func tensorInfoAt(t testing.TB, b []byte, name string) tensorInfo {
	t.Helper()
	i := kvOffset(t, b, name) // same encoding as a key
	ti := tensorInfo{name: i, nDims: i + 8 + len(name), dims: i + 8 + len(name) + 4}
	n := int(binary.LittleEndian.Uint32(b[ti.nDims:]))
	ti.typ = ti.dims + 8*n
	ti.offset = ti.typ + 4
	return ti
}

func putU32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
func putU64(b []byte, off int, v uint64) { binary.LittleEndian.PutUint64(b[off:], v) }
