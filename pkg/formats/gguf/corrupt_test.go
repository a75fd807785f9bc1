package gguf

import (
	"errors"
	"strings"
	"testing"
)

// sentinels lists every error Parse may wrap; each corruption must match
// exactly one.
var sentinels = []error{
	ErrBadMagic, ErrVersion, ErrTruncated, ErrTooLarge, ErrValueType, ErrBadValue,
	ErrNesting, ErrDuplicateKey, ErrEmptyName, ErrBadUTF8, ErrAlignment,
	ErrDuplicateTensor, ErrTensorType, ErrDims, ErrShape, ErrMisaligned,
	ErrOverlap, ErrOutOfBounds, ErrMetadataType,
}

// corruption damages a valid sample file. extra, if set, adds to the writer
// before the file is built; mutate edits (or cuts) the bytes.
type corruption struct {
	name   string
	extra  func(w *Writer)
	mutate func(t testing.TB, b []byte) []byte
	want   error
	msg    []string // substrings the error message must contain
}

func corruptions() []corruption {
	// Shorthands for the common edits.
	cut := func(n int) func(testing.TB, []byte) []byte {
		return func(_ testing.TB, b []byte) []byte { return b[:n] }
	}
	kvU32 := func(key string, delta int, v uint32) func(testing.TB, []byte) []byte {
		return func(t testing.TB, b []byte) []byte { putU32(b, kvOffset(t, b, key)+delta, v); return b }
	}
	kvU64 := func(key string, delta int, v uint64) func(testing.TB, []byte) []byte {
		return func(t testing.TB, b []byte) []byte { putU64(b, kvOffset(t, b, key)+delta, v); return b }
	}
	// Offsets inside an entry: the key length is at 0, the type tag at
	// 8+len(key), the payload after it.
	typeAt := func(key string) int { return 8 + len(key) }
	valAt := func(key string) int { return 12 + len(key) }
	tensor := func(name string, edit func(b []byte, ti tensorInfo)) func(testing.TB, []byte) []byte {
		return func(t testing.TB, b []byte) []byte { edit(b, tensorInfoAt(t, b, name)); return b }
	}
	const (
		q = "blk.0.attn_q.weight" // Q4_K [256, 2], tensor 1
		k = "blk.0.attn_k.weight" // Q8_0 [64, 3], tensor 2
	)

	return []corruption{
		// Header.
		{name: "bad magic", mutate: func(_ testing.TB, b []byte) []byte { copy(b, "GGML"); return b },
			want: ErrBadMagic, msg: []string{"header", "bad magic", "at byte 0"}},
		{name: "version 0", mutate: func(_ testing.TB, b []byte) []byte { putU32(b, 4, 0); return b },
			want: ErrVersion, msg: []string{"header", "version 0", "at byte 4"}},
		{name: "version 1", mutate: func(_ testing.TB, b []byte) []byte { putU32(b, 4, 1); return b },
			want: ErrVersion, msg: []string{"version 1"}},
		{name: "version 4", mutate: func(_ testing.TB, b []byte) []byte { putU32(b, 4, 4); return b },
			want: ErrVersion, msg: []string{"version 4"}},
		{name: "big-endian", mutate: func(_ testing.TB, b []byte) []byte { putU32(b, 4, 3<<24); return b },
			want: ErrVersion, msg: []string{"big-endian"}},
		{name: "empty file", mutate: cut(0), want: ErrTruncated, msg: []string{"header magic"}},
		{name: "truncated in magic", mutate: cut(3), want: ErrTruncated, msg: []string{"header magic", "needs 4 bytes, 3 remain"}},
		{name: "truncated in version", mutate: cut(6), want: ErrTruncated, msg: []string{"header version", "at byte 4"}},
		{name: "truncated in tensor count", mutate: cut(12), want: ErrTruncated, msg: []string{"header tensor count", "at byte 8"}},
		{name: "truncated in metadata count", mutate: cut(20), want: ErrTruncated, msg: []string{"header metadata count", "at byte 16"}},
		{name: "tensor count too large", mutate: func(_ testing.TB, b []byte) []byte { putU64(b, 8, 1<<40); return b },
			want: ErrTooLarge, msg: []string{"header", "1099511627776 tensors"}},
		{name: "metadata count too large", mutate: func(_ testing.TB, b []byte) []byte { putU64(b, 16, 1<<62); return b },
			want: ErrTooLarge, msg: []string{"header", "metadata entries"}},

		// Metadata keys.
		{name: "key length past EOF", mutate: kvU64("general.architecture", 0, 1<<40),
			want: ErrTooLarge, msg: []string{"metadata entry 0 key", "string of 1099511627776 bytes"}},
		{name: "empty key", mutate: kvU64("general.architecture", 0, 0),
			want: ErrEmptyName, msg: []string{"metadata entry 0"}},
		{name: "duplicate key", mutate: func(t testing.TB, b []byte) []byte {
			i := kvOffset(t, b, "test.dup.b")
			b[i+8+len("test.dup.b")-1] = 'a'
			return b
		}, want: ErrDuplicateKey, msg: []string{`metadata key "test.dup.a"`}},
		{name: "invalid UTF-8 key", mutate: func(t testing.TB, b []byte) []byte {
			b[kvOffset(t, b, "test.key.x")+8+len("test.key.x")-1] = 0xff
			return b
		}, want: ErrBadUTF8, msg: []string{"metadata entry", "key", "not valid UTF-8", `"test.key.\xff"`}},

		// Metadata values.
		{name: "unknown value type", mutate: kvU32("general.architecture", typeAt("general.architecture"), 13),
			want: ErrValueType, msg: []string{`"general.architecture"`, "type id 13"}},
		{name: "unknown array element type", mutate: kvU32("tokenizer.ggml.tokens", valAt("tokenizer.ggml.tokens"), 99),
			want: ErrValueType, msg: []string{`"tokenizer.ggml.tokens"`, "element type id 99"}},
		{name: "array length too large", mutate: kvU64("tokenizer.ggml.tokens", valAt("tokenizer.ggml.tokens")+4, 1<<50),
			want: ErrTooLarge, msg: []string{`"tokenizer.ggml.tokens"`, "array of 1125899906842624 string"}},
		{name: "f32 array length past EOF", mutate: kvU64("tokenizer.ggml.scores", valAt("tokenizer.ggml.scores")+4, 1<<61),
			want: ErrTooLarge, msg: []string{`"tokenizer.ggml.scores"`, "f32"}},
		{name: "array string length past EOF", mutate: kvU64("tokenizer.ggml.tokens", valAt("tokenizer.ggml.tokens")+12, 1<<33),
			want: ErrTooLarge, msg: []string{`"tokenizer.ggml.tokens"`, "string of 8589934592 bytes"}},
		{name: "string value length past EOF", mutate: kvU64("general.architecture", valAt("general.architecture"), 1<<60),
			want: ErrTooLarge, msg: []string{`"general.architecture"`}},
		{name: "nested arrays too deep",
			extra: func(w *Writer) {
				w.AddKV("test.too_deep", Arr(TypeArray, Arr(TypeArray, Arr(TypeArray, Arr(TypeArray, Arr(TypeUint8, U8(1)))))))
			},
			want: ErrNesting, msg: []string{`"test.too_deep"`, "more than 4 levels"}},
		{name: "unknown element type in nested array",
			extra: func(w *Writer) {
				w.AddKV("test.bad_nested", Arr(TypeArray, Arr(TypeInt32), RawValue(TypeArray, 42, 0, nil)))
			},
			want: ErrValueType, msg: []string{`"test.bad_nested"`, "element type id 42"}},
		{name: "invalid bool", mutate: func(t testing.TB, b []byte) []byte {
			b[kvOffset(t, b, "test.bool")+valAt("test.bool")] = 2
			return b
		}, want: ErrBadValue, msg: []string{`metadata key "test.bool"`, "bool byte 2"}},
		{name: "invalid bool in array", mutate: func(t testing.TB, b []byte) []byte {
			b[kvOffset(t, b, "test.bools")+valAt("test.bools")+12+1] = 7
			return b
		}, want: ErrBadValue, msg: []string{`"test.bools" element 1`, "bool byte 7"}},
		{name: "truncated in a value", mutate: func(t testing.TB, b []byte) []byte {
			return b[:kvOffset(t, b, "test.key.x")+valAt("test.key.x")+2]
		}, want: ErrTruncated, msg: []string{`metadata key "test.key.x"`, "needs 4 bytes, 2 remain"}},
		{name: "KVs and tensors together too many", mutate: func(_ testing.TB, b []byte) []byte {
			// Each count fits the file alone, but not both together.
			putU64(b, 16, uint64(len(b)-24)/14)
			return b
		}, want: ErrTooLarge, msg: []string{"header", "5 tensors"}},

		// general.alignment (written explicitly as u32 32 by the base file).
		{name: "alignment 0", mutate: kvU32("general.alignment", valAt("general.alignment"), 0),
			want: ErrAlignment, msg: []string{"general.alignment", "got u32 0"}},
		{name: "alignment not a power of two", mutate: kvU32("general.alignment", valAt("general.alignment"), 48),
			want: ErrAlignment, msg: []string{"general.alignment", "got u32 48"}},
		{name: "alignment too large", mutate: kvU32("general.alignment", valAt("general.alignment"), 1<<21),
			want: ErrAlignment, msg: []string{"general.alignment", "2097152"}},
		{name: "alignment of the wrong type", mutate: kvU32("general.alignment", typeAt("general.alignment"), uint32(TypeInt32)),
			want: ErrAlignment, msg: []string{"general.alignment", "got i32 32"}},

		// Tensor directory.
		{name: "duplicate tensor name", mutate: tensor(k, func(b []byte, ti tensorInfo) { b[ti.name+8+len("blk.0.attn_")] = 'q' }),
			want: ErrDuplicateTensor, msg: []string{`tensor 2 "blk.0.attn_q.weight"`}},
		{name: "empty tensor name", mutate: tensor("token_embd.weight", func(b []byte, ti tensorInfo) { putU64(b, ti.name, 0) }),
			want: ErrEmptyName, msg: []string{"tensor 0"}},
		{name: "invalid UTF-8 tensor name", mutate: tensor(q, func(b []byte, ti tensorInfo) { b[ti.name+8] = 0xc3; b[ti.name+9] = 0x28 }),
			want: ErrBadUTF8, msg: []string{"tensor 1 name", `"\xc3(k.0.attn_q.weight"`}},
		{name: "tensor name past EOF", mutate: tensor(q, func(b []byte, ti tensorInfo) { putU64(b, ti.name, 1<<40) }),
			want: ErrTooLarge, msg: []string{"tensor 1 name"}},
		{name: "unknown tensor type", mutate: tensor(q, func(b []byte, ti tensorInfo) { putU32(b, ti.typ, 4) }),
			want: ErrTensorType, msg: []string{`tensor 1 "blk.0.attn_q.weight"`, "type id 4"}},
		{name: "zero dimensions", mutate: tensor(q, func(b []byte, ti tensorInfo) { putU32(b, ti.nDims, 0) }),
			want: ErrDims, msg: []string{`"blk.0.attn_q.weight"`, "0 dimensions"}},
		{name: "too many dimensions", mutate: tensor(q, func(b []byte, ti tensorInfo) { putU32(b, ti.nDims, 5) }),
			want: ErrDims, msg: []string{`"blk.0.attn_q.weight"`, "5 dimensions"}},
		{name: "zero dimension", mutate: tensor(q, func(b []byte, ti tensorInfo) { putU64(b, ti.dims+8, 0) }),
			want: ErrDims, msg: []string{`"blk.0.attn_q.weight"`, "dimension 1 is zero"}},
		{name: "huge dimension", mutate: tensor(q, func(b []byte, ti tensorInfo) { putU64(b, ti.dims+8, 1<<62) }),
			want: ErrDims, msg: []string{`"blk.0.attn_q.weight"`, "dimension 1 = 4611686018427387904"}},
		{name: "overflowing element count", mutate: tensor(q, func(b []byte, ti tensorInfo) {
			putU64(b, ti.dims, 1<<34)
			putU64(b, ti.dims+8, 1<<34)
		}), want: ErrDims, msg: []string{`"blk.0.attn_q.weight"`, "overflows"}},
		{name: "row not a whole number of blocks", mutate: tensor(q, func(b []byte, ti tensorInfo) { putU64(b, ti.dims, 100) }),
			want: ErrShape, msg: []string{`"blk.0.attn_q.weight"`, "row length 100", "Q4_K", "256"}},
		{name: "truncated in tensor dims", mutate: func(t testing.TB, b []byte) []byte { return b[:tensorInfoAt(t, b, k).dims+3] },
			want: ErrTruncated, msg: []string{`"blk.0.attn_k.weight" dimension`}},

		// Tensor data placement.
		{name: "misaligned offset", mutate: tensor(q, func(b []byte, ti tensorInfo) { putU64(b, ti.offset, getU64(b, ti.offset)+16) }),
			want: ErrMisaligned, msg: []string{`"blk.0.attn_q.weight"`, "not a multiple of the alignment 32"}},
		{name: "overlapping tensors", mutate: tensor(k, func(b []byte, ti tensorInfo) { putU64(b, ti.offset, 256) }),
			want: ErrOverlap, msg: []string{`"blk.0.attn_k.weight"`, `"blk.0.attn_q.weight"`}},
		{name: "tensor past EOF", mutate: tensor(q, func(b []byte, ti tensorInfo) { putU64(b, ti.offset, 1<<40) }),
			want: ErrOutOfBounds, msg: []string{`tensor 1 "blk.0.attn_q.weight"`, "1099511627776"}},
		{name: "offset overflows with size", mutate: tensor(q, func(b []byte, ti tensorInfo) { putU64(b, ti.offset, 1<<64-32) }),
			want: ErrOutOfBounds, msg: []string{`"blk.0.attn_q.weight"`}},
		{name: "truncated data section", mutate: func(_ testing.TB, b []byte) []byte { return b[:len(b)-200] },
			want: ErrOutOfBounds, msg: []string{`"blk.0.ffn_up.weight"`, "data section holds"}},
		{name: "data section missing", mutate: func(t testing.TB, b []byte) []byte {
			end := tensorInfoAt(t, b, "blk.0.ffn_up.weight").offset + 8
			return b[:end]
		}, want: ErrOutOfBounds, msg: []string{"tensor 0", `"token_embd.weight"`, "holds 0 bytes"}},
	}
}

func getU64(b []byte, off int) uint64 {
	return uint64(b[off]) | uint64(b[off+1])<<8 | uint64(b[off+2])<<16 | uint64(b[off+3])<<24 |
		uint64(b[off+4])<<32 | uint64(b[off+5])<<40 | uint64(b[off+6])<<48 | uint64(b[off+7])<<56
}

// corruptFile builds the base sample (alignment written explicitly) with c
// applied.
func corruptFile(t testing.TB, c corruption) []byte {
	t.Helper()
	w := sampleWriter(t, 3, DefaultAlignment)
	if c.extra != nil {
		c.extra(w)
	}
	b := mustBytes(t, w)
	if c.mutate != nil {
		b = c.mutate(t, b)
	}
	return b
}

func TestCorruptions(t *testing.T) {
	// The base file must be valid for the table to mean anything.
	mustParse(t, mustBytes(t, sampleWriter(t, 3, DefaultAlignment)))

	tests := corruptions()
	if len(tests) < 25 {
		t.Fatalf("only %d corruptions", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := corruptFile(t, tt)
			f, err := Parse(b)
			if err == nil {
				t.Fatalf("Parse accepted the file: %d KVs, %d tensors", len(f.KVs), len(f.Tensors))
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %q is not a *FormatError", err)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("error %q is not %q", err, tt.want)
			}
			for _, s := range sentinels {
				if s != tt.want && errors.Is(err, s) {
					t.Errorf("error %q also matches %q", err, s)
				}
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
		})
	}
}
