package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/corelm/corelm/pkg/kernels"
)

// Minimum encoded sizes: a KV is a key length, a one-byte key, a type tag and
// a one-byte value; a tensor info a name length, a one-byte name, a dimension
// count, one dimension, a type and an offset.
const (
	minKVBytes     = 8 + 1 + 4 + 1
	minTensorBytes = 8 + 1 + 4 + 8 + 4 + 8
)

// seedFiles are valid files of several shapes plus the corruption table.
func seedFiles(t testing.TB) [][]byte {
	t.Helper()
	seeds := [][]byte{
		mustBytes(t, sampleWriter(t, 3, 0)),
		mustBytes(t, sampleWriter(t, 2, 64)),
		mustBytes(t, sampleWriter(t, 3, 1)),
	}
	w := NewWriter(3)
	w.AddKV("tokenizer.ggml.tokens", Strs(vocab))
	w.AddKV("general.name", Str("end"))
	seeds = append(seeds, bytes.TrimRight(mustBytes(t, w), "\x00")) // vocab-only, unpadded
	w = NewWriter(2)
	w.AddTensor("x", kernels.F32, []uint64{1}, []byte{0, 0, 128, 63})
	seeds = append(seeds, mustBytes(t, w)) // minimal model
	for _, c := range corruptions() {
		seeds = append(seeds, corruptFile(t, c))
	}
	return seeds
}

func FuzzParse(f *testing.F) {
	for _, s := range seedFiles(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParse(t, data, true)
	})
}

// TestParseMutations is FuzzParse's property over a fixed set of random
// mutations of the seeds, so plain `go test` covers it too.
func TestParseMutations(t *testing.T) {
	seeds := seedFiles(t)
	r := rand.New(rand.NewPCG(1, 2))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	accepted := 0
	for i := range n {
		b := slices.Clone(seeds[i%len(seeds)])
		mutate(r, b)
		if len(b) > 0 && r.IntN(8) == 0 {
			b = b[:r.IntN(len(b))]
		}
		if checkParse(t, b, false) {
			accepted++
		}
	}
	t.Logf("%d of %d mutated files accepted", accepted, n)
}

// mutate overwrites a few bytes, often with values that look like lengths,
// counts or type tags.
func mutate(r *rand.Rand, b []byte) {
	if len(b) == 0 {
		return
	}
	for range 1 + r.IntN(3) {
		i := r.IntN(len(b))
		switch r.IntN(4) {
		case 0:
			b[i] = byte(r.Uint32())
		case 1:
			b[i] ^= 1 << r.IntN(8)
		case 2:
			if i+4 <= len(b) {
				binary.LittleEndian.PutUint32(b[i:], uint32(r.IntN(16)))
			}
		case 3:
			if i+8 <= len(b) {
				binary.LittleEndian.PutUint64(b[i:], []uint64{0, 1, 1 << 31, 1 << 62, 1<<64 - 1}[r.IntN(5)])
			}
		}
	}
}

// checkParse parses data and checks what must hold whatever the bytes:
// errors are FormatErrors, memory is proportional to the input, and an
// accepted file is consistent, safe to read with every accessor and
// survives a round trip through the Writer. It reports acceptance.
func checkParse(t *testing.T, data []byte, measure bool) bool {
	t.Helper()
	var before, after runtime.MemStats
	if measure {
		runtime.ReadMemStats(&before)
	}
	f, err := Parse(data)
	if measure {
		runtime.ReadMemStats(&after)
		// Each KV of >= 14 input bytes costs < 250 bytes (entry, map
		// slot, key copy); each tensor of >= 33 bytes about as much.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32*uint64(len(data))+64<<10 {
			t.Fatalf("Parse of %d bytes allocated %d bytes", len(data), alloc)
		}
	}
	if err != nil {
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Fatalf("error %q is not a *FormatError", err)
		}
		return false
	}
	if len(f.KVs) > len(data)/minKVBytes || len(f.Tensors) > len(data)/minTensorBytes {
		t.Fatalf("%d bytes hold %d KVs and %d tensors", len(data), len(f.KVs), len(f.Tensors))
	}
	exerciseFile(t, f)
	roundTrip(t, f)
	return true
}

// exerciseFile calls every accessor of an accepted file.
func exerciseFile(t testing.TB, f *File) {
	t.Helper()
	for _, kv := range f.KVs {
		if v, ok := f.Get(kv.Key); !ok || !sameValue(v, kv.Value) {
			t.Fatalf("Get(%q) disagrees with KVs", kv.Key)
		}
		f.String(kv.Key)
		f.Uint(kv.Key)
		f.Int(kv.Key)
		f.Float(kv.Key)
		f.Bool(kv.Key)
		f.Strings(kv.Key)
		f.Float32s(kv.Key)
		f.Int32s(kv.Key)
		exerciseValue(t, kv.Value, 0)
	}
	for i := range f.Tensors {
		tt := &f.Tensors[i]
		if got, ok := f.Tensor(tt.Name); !ok || got != tt {
			t.Fatalf("Tensor(%q) disagrees with Tensors", tt.Name)
		}
		if data := f.TensorData(tt); uint64(len(data)) != tt.Size {
			t.Fatalf("tensor %q: %d bytes of data, size %d", tt.Name, len(data), tt.Size)
		}
		if size, ok := tt.Type.RowBytes(int(tt.Elements())); !ok || uint64(size) != tt.Size {
			t.Fatalf("tensor %v: size %d, RowBytes %d %v", tt, tt.Size, size, ok)
		}
		_ = tt.String()
		_ = tt.Rows() * tt.Cols()
	}
}

// exerciseValue calls every accessor of v and, for arrays, of its elements.
// The array accessors must agree with each other about the length.
func exerciseValue(t testing.TB, v Value, depth int) {
	t.Helper()
	if depth > maxNesting {
		t.Fatalf("value nested %d deep", depth)
	}
	_ = v.String()
	v.Uint()
	v.Int()
	v.Float()
	v.Bool()
	v.Str()
	_ = v.Payload()
	if ss, ok := v.Strings(); ok && len(ss) != v.Len {
		t.Fatalf("Strings() returned %d of %d", len(ss), v.Len)
	}
	if fs, ok := v.Float32s(); ok && len(fs) != v.Len {
		t.Fatalf("Float32s() returned %d of %d", len(fs), v.Len)
	}
	if is, ok := v.Int32s(); ok && len(is) != v.Len {
		t.Fatalf("Int32s() returned %d of %d", len(is), v.Len)
	}
	if elems, ok := v.Values(); ok {
		if len(elems) != v.Len {
			t.Fatalf("Values() returned %d of %d", len(elems), v.Len)
		}
		for _, e := range elems {
			exerciseValue(t, e, depth+1)
		}
	}
}

// roundTrip writes f again with the Writer and checks that the copy parses
// to the same metadata, tensors and data.
func roundTrip(t testing.TB, f *File) {
	t.Helper()
	w := NewWriter(f.Version)
	for _, kv := range f.KVs {
		w.AddKV(kv.Key, kv.Value)
	}
	for i := range f.Tensors {
		tt := &f.Tensors[i]
		w.AddTensor(tt.Name, tt.Type, tt.Shape, f.TensorData(tt))
	}
	b, err := w.Bytes()
	if err != nil {
		t.Fatalf("Writer rejected a parsed file: %v", err)
	}
	g, err := Parse(b)
	if err != nil {
		t.Fatalf("rewritten file does not parse: %v", err)
	}
	if g.Version != f.Version || g.Alignment != f.Alignment || len(g.KVs) != len(f.KVs) || len(g.Tensors) != len(f.Tensors) {
		t.Fatalf("rewritten file differs: v%d/%d align %d/%d, %d/%d KVs, %d/%d tensors",
			g.Version, f.Version, g.Alignment, f.Alignment, len(g.KVs), len(f.KVs), len(g.Tensors), len(f.Tensors))
	}
	for i := range f.KVs {
		if g.KVs[i].Key != f.KVs[i].Key || !sameValue(g.KVs[i].Value, f.KVs[i].Value) {
			t.Fatalf("KV %d differs after rewriting", i)
		}
	}
	for i := range f.Tensors {
		a, b := &f.Tensors[i], &g.Tensors[i]
		if a.Name != b.Name || a.Type != b.Type || !slices.Equal(a.Shape, b.Shape) || !bytes.Equal(f.TensorData(a), g.TensorData(b)) {
			t.Fatalf("tensor %d differs after rewriting: %v vs %v", i, a, b)
		}
	}
}
