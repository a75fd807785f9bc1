// Package runtimetest holds what the runtime packages' tests share: an
// in-memory model.Metadata, the committed golden set and readers of its
// files. It imports no architecture, so their own tests can use it.
package runtimetest

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// Meta is an in-memory model.Metadata: ints serve as unsigned integers and
// as floats, float64s as floats.
type Meta map[string]any

var _ model.Metadata = Meta(nil)

func (m Meta) String(k string) (string, bool) { v, ok := m[k].(string); return v, ok }
func (m Meta) Uint(k string) (uint64, bool) {
	v, ok := m[k].(int)
	return uint64(v), ok && v >= 0
}
func (m Meta) Int(k string) (int64, bool) { v, ok := m[k].(int); return int64(v), ok }
func (m Meta) Float(k string) (float64, bool) {
	switch v := m[k].(type) {
	case float64:
		return v, true
	case int:
		return float64(v), true
	}
	return 0, false
}
func (m Meta) Bool(k string) (bool, bool)          { v, ok := m[k].(bool); return v, ok }
func (m Meta) Strings(k string) ([]string, bool)   { return nil, false }
func (m Meta) Float32s(k string) ([]float32, bool) { return nil, false }
func (m Meta) Int32s(k string) ([]int32, bool)     { return nil, false }

// Golden is the path of elem inside the committed golden set
// (pkg/runtime/testdata/golden), from any test's working directory.
func Golden(elem ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), "..", "..", "testdata", "golden"}, elem...)...)
}

// Pool is a kernel pool of n workers, closed when the test ends.
func Pool(tb testing.TB, n int) *kernels.Pool {
	tb.Helper()
	p := kernels.NewPool(n)
	tb.Cleanup(p.Close)
	return p
}

// GoldenSource maps a model of the golden set, e.g. "phi3-F32.gguf", until
// the test ends.
func GoldenSource(tb testing.TB, file string) model.Source {
	tb.Helper()
	f, err := gguf.Open(Golden("models", file))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return model.FromGGUF(f)
}

// GoldenTokens reads the token ids the golden set evaluates arch on.
func GoldenTokens(tb testing.TB, arch string) []int32 {
	tb.Helper()
	return ReadTokens(tb, Golden("tokens", arch+".txt"))
}

// ReadTokens reads a file of token ids separated by white space.
func ReadTokens(tb testing.TB, path string) []int32 {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var ids []int32
	for _, f := range strings.Fields(string(raw)) {
		v, err := strconv.Atoi(f)
		if err != nil {
			tb.Fatal(err)
		}
		ids = append(ids, int32(v))
	}
	return ids
}

// ReadF32 reads a little-endian float32 array.
func ReadF32(tb testing.TB, path string) []float32 {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if len(raw)%4 != 0 {
		tb.Fatalf("%s: %d bytes is not a float32 array", path, len(raw))
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

// Eval runs ids through a new sequence of m with opts, step tokens per
// forward step (0: all in one), and returns the logits of every position.
func Eval(tb testing.TB, m model.Model, ids []int32, opts model.StateOptions, step int) []float32 {
	tb.Helper()
	if step <= 0 {
		step = len(ids)
	}
	st, err := m.NewState(opts)
	if err != nil {
		tb.Fatal(err)
	}
	var out []float32
	b := &model.Batch{Seqs: []model.SeqBatch{{State: st}}}
	for i := 0; i < len(ids); i += step {
		toks := ids[i:min(i+step, len(ids))]
		b.Seqs[0].Tokens, b.Seqs[0].Logits = toks, len(toks)
		if err := m.Forward(b); err != nil {
			tb.Fatal(err)
		}
		out = append(out, b.Seqs[0].Out...)
	}
	return out
}
