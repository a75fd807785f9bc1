package phi3

import (
	"math"
	"slices"
	"testing"

	"github.com/corelm/corelm/pkg/runtime/internal/runtimetest"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// TestUseLongFactors follows llama.cpp's rule (get_rope_factors): long
// factors only when the served context exceeds the original one.
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

func phiMeta(ctx, orig int) runtimetest.Meta {
	md := runtimetest.Meta{
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
		md       runtimetest.Meta
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
	m, err := New(runtimetest.GoldenSource(t, "phi3-F32.gguf"), model.Env{Pool: runtimetest.Pool(t, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestGoldenModelRoPE checks what the golden phi3 file binds: fused QKV,
// both factor sets, the file's attention factor and original context, and
// the choice of factors by the context the model is served at.
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
	ids := []int32{1, 17, 42, 99}
	short := runtimetest.Eval(t, m, ids, model.StateOptions{Context: 4096, Chunk: 4}, 0)
	long := runtimetest.Eval(t, m, ids, model.StateOptions{Context: 4097, Chunk: 4}, 0)
	vocab := m.Config().Vocab
	// Position 0 turns by no angle whatever the factors, so only later
	// positions can differ.
	first, later := 0.0, 0.0
	for i := range short {
		d := math.Abs(float64(short[i] - long[i]))
		if i < vocab {
			first = max(first, d)
		} else {
			later = max(later, d)
		}
	}
	if first != 0 || later == 0 {
		t.Errorf("served at 4096 vs 4097: max logit difference %g at position 0 (want 0), %g after (want > 0)", first, later)
	}
}

// TestFactorsFollowTheServedContext: a sequence's logits depend on the
// context the model is served at, not on how many positions its own cache
// holds (the scheduler sizes that to prompt + max_tokens), so the same
// prompt gives the same logits whatever max_tokens a request asks for.
// llama.cpp chooses the factors from its context's n_ctx the same way.
func TestFactorsFollowTheServedContext(t *testing.T) {
	m := goldenModel(t)
	ids := []int32{1, 17, 42, 99}
	for _, served := range []int{256, 8192} {
		full := runtimetest.Eval(t, m, ids, model.StateOptions{Context: served, Chunk: 4}, 0)
		for _, length := range []int{len(ids), 4096, 4097} {
			got := runtimetest.Eval(t, m, ids, model.StateOptions{Context: served, Length: length, Chunk: 4}, 0)
			if !slices.Equal(got, full) {
				t.Errorf("served at %d: a cache of %d positions changes the logits", served, length)
			}
		}
	}
	// One step serves one context.
	a, err := m.NewState(model.StateOptions{Context: 4096})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.NewState(model.StateOptions{Context: 4097})
	if err != nil {
		t.Fatal(err)
	}
	batch := &model.Batch{Seqs: []model.SeqBatch{{State: a, Tokens: ids}, {State: b, Tokens: ids}}}
	if err := m.Forward(batch); err == nil {
		t.Error("a batch of sequences served at two contexts ran")
	}
}
