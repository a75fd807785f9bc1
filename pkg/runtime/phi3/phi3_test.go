package phi3

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// TestUseLongFactors follows llama.cpp's rule (get_rope_factors): long
// factors only when the sequence's context exceeds the original one.
func TestUseLongFactors(t *testing.T) {
	tests := []struct {
		ctx, orig int
		long      bool
	}{
		{256, 4096, false}, // the golden set's case
		{4096, 4096, false},
		{4097, 4096, true},
		{131072, 4096, true}, // Phi-3.5-mini at its full context
		{16384, 16384, false},
	}
	for _, tt := range tests {
		if got := UseLongFactors(tt.ctx, tt.orig); got != tt.long {
			t.Errorf("UseLongFactors(%d, %d) = %v, want %v", tt.ctx, tt.orig, got, tt.long)
		}
	}
}

// meta is an in-memory model.Metadata.
type meta map[string]any

func (m meta) String(k string) (string, bool) { v, ok := m[k].(string); return v, ok }
func (m meta) Uint(k string) (uint64, bool) {
	v, ok := m[k].(int)
	return uint64(v), ok && v >= 0
}
func (m meta) Int(k string) (int64, bool) { v, ok := m[k].(int); return int64(v), ok }
func (m meta) Float(k string) (float64, bool) {
	switch v := m[k].(type) {
	case float64:
		return v, true
	case int:
		return float64(v), true
	}
	return 0, false
}
func (m meta) Bool(k string) (bool, bool)          { v, ok := m[k].(bool); return v, ok }
func (m meta) Strings(k string) ([]string, bool)   { return nil, false }
func (m meta) Float32s(k string) ([]float32, bool) { return nil, false }
func (m meta) Int32s(k string) ([]int32, bool)     { return nil, false }

func phiMeta(ctx, orig int) meta {
	md := meta{
		"phi3.context_length":          ctx,
		"phi3.embedding_length":        3072,
		"phi3.block_count":             32,
		"phi3.feed_forward_length":     8192,
		"phi3.attention.head_count":    32,
		"phi3.attention.head_count_kv": 32,
	}
	if orig > 0 {
		md["phi3.rope.scaling.original_context_length"] = orig
	}
	return md
}

// TestLongRoPEAttnFactor: the key when present; otherwise, for a LongRoPE
// model, √(1 + ln(ctx/orig)/ln orig), by hand for Phi-3.5-mini
// √(1 + ln 32/ln 4096) = √(1 + 5/12) = 1.1902381; 1 when the context does not
// exceed the original or the model has no LongRoPE factors.
func TestLongRoPEAttnFactor(t *testing.T) {
	withKey := phiMeta(131072, 4096)
	withKey["phi3.rope.scaling.attn_factor"] = 1.25
	tests := []struct {
		name     string
		md       meta
		longRoPE bool
		want     float64
	}{
		{"key", withKey, true, 1.25},
		{"formula", phiMeta(131072, 4096), true, 1.1902381},
		{"no extension", phiMeta(4096, 4096), true, 1},
		{"no factors", phiMeta(16384, 0), false, 1}, // Phi-4
	}
	for _, tt := range tests {
		cfg, err := model.ParseConfig(tt.md, "phi3")
		if err != nil {
			t.Fatal(err)
		}
		if got := LongRoPEAttnFactor(tt.md, cfg, tt.longRoPE); math.Abs(float64(got)-tt.want) > 1e-6 {
			t.Errorf("%s: attention factor %.7f, want %.7f", tt.name, got, tt.want)
		}
	}
}

func goldenModel(t *testing.T) *Model {
	t.Helper()
	f, err := gguf.Open(filepath.Join("..", "testdata", "golden", "models", "phi3-F32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	pool := kernels.NewPool(1)
	t.Cleanup(pool.Close)
	m, err := Build(model.FromGGUF(f), model.Env{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestGoldenModelRoPE checks what the golden phi3 file binds: fused QKV,
// both factor sets, the file's attention factor and original context, and a
// per-sequence choice of factors by the sequence's context.
func TestGoldenModelRoPE(t *testing.T) {
	m := goldenModel(t)
	w := m.Weights()
	if !w.FusedQKV || w.RopeShort == nil || w.RopeLong == nil || w.OrigContext != 4096 {
		t.Fatalf("fused %v, short %v, long %v, original context %d", w.FusedQKV, w.RopeShort != nil, w.RopeLong != nil, w.OrigContext)
	}
	if math.Abs(float64(w.AttnFactor)-1.190238) > 1e-6 {
		t.Errorf("attention factor %g, want the file's 1.190238", w.AttnFactor)
	}
	if r := m.ropeFor(256); &r.FreqFactors[0] != &w.RopeShort[0] || r.AttnFactor != w.AttnFactor || !r.NeoX {
		t.Error("a context of 256 does not rotate with the short factors, the attention factor and NeoX pairs")
	}
	if r := m.ropeFor(8192); &r.FreqFactors[0] != &w.RopeLong[0] || r.AttnFactor != w.AttnFactor {
		t.Error("a context of 8192 does not rotate with the long factors")
	}
	// The choice follows each sequence's own context.
	short, err := m.NewState(model.StateOptions{Context: 4096, Chunk: 4})
	if err != nil {
		t.Fatal(err)
	}
	long, err := m.NewState(model.StateOptions{Context: 4097, Chunk: 4})
	if err != nil {
		t.Fatal(err)
	}
	ids := []int32{1, 17, 42, 99}
	b := &model.Batch{Seqs: []model.SeqBatch{
		{State: short, Tokens: ids, Logits: len(ids)},
		{State: long, Tokens: ids, Logits: len(ids)},
	}}
	if err := m.Forward(b); err != nil {
		t.Fatal(err)
	}
	vocab := m.Config().Vocab
	// Position 0 turns by no angle whatever the factors, so only later
	// positions can differ.
	first, later := 0.0, 0.0
	for i := 0; i < len(ids)*vocab; i++ {
		d := math.Abs(float64(b.Seqs[0].Out[i] - b.Seqs[1].Out[i]))
		if i < vocab {
			first = max(first, d)
		} else {
			later = max(later, d)
		}
	}
	if first != 0 || later == 0 {
		t.Errorf("short vs long context: max logit difference %g at position 0 (want 0), %g after (want > 0)", first, later)
	}
}
