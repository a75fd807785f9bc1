package gemma2

import (
	"math"
	"slices"
	"testing"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/internal/runtimetest"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// TestGeGLU checks gelu_tanh(x)·up against hand-computed values of
// 0.5·x·(1+tanh(√(2/π)·(x+0.044715·x³))), to f16 accuracy (ggml's table),
// and the clamps past ±10.
func TestGeGLU(t *testing.T) {
	tests := []struct {
		x, up, want float32
	}{
		{0, 3, 0},
		{1, 1, 0.84119199},
		{-1, 1, -0.15880801},
		{0.5, 2, 2 * 0.34571401},
		{2, -1, -1.95459769},
		{-3, 1, -0.00363739},
		{12, 0.5, 6},    // x >= 10: x·up
		{-12, 0.5, 0},   // x <= -10: 0
		{10, 1, 10},     // the boundary itself takes the linear branch
		{-10, 1, 0},     // and the zero branch
		{9.99, 1, 9.99}, // gelu(9.99) = 9.99 to f16 precision
	}
	for _, tt := range tests {
		dst := []float32{0}
		GeGLU(dst, []float32{tt.x}, []float32{tt.up})
		tol := 1e-3*math.Abs(float64(tt.want)) + 1e-6 // f16 rounding of x and of gelu(x)
		if d := math.Abs(float64(dst[0] - tt.want)); d > tol {
			t.Errorf("GeGLU(%g, %g) = %.8f, want %.8f", tt.x, tt.up, dst[0], tt.want)
		}
	}
	// In place, as the forward pass calls it.
	gate, up := []float32{1, -1}, []float32{2, 2}
	GeGLU(gate, gate, up)
	if math.Abs(float64(gate[0]-1.68238398)) > 2e-3 || math.Abs(float64(gate[1]+0.31761602)) > 1e-3 {
		t.Errorf("in-place GeGLU = %v", gate)
	}
}

// TestSoftCap checks the final-logit cap the model applies (kernels.SoftCap):
// c·tanh(x/c) with c = 15, by hand: 15·tanh(1) = 11.4239123, 15·tanh(2) =
// 14.4604137.
func TestSoftCap(t *testing.T) {
	x := []float32{0, 15, 30, -30, 1e6}
	want := []float32{0, 11.4239123, 14.4604137, -14.4604137, 15}
	kernels.SoftCap(x, 15)
	for i := range x {
		if math.Abs(float64(x[i]-want[i])) > 1e-5 {
			t.Errorf("SoftCap[%d] = %.7f, want %.7f", i, x[i], want[i])
		}
	}
}

func TestSlidingLayers(t *testing.T) {
	tests := []struct {
		layers, period, window int
		want                   []int
	}{
		{4, 2, 4096, []int{4096, 0, 4096, 0}}, // Gemma 2: even layers are local
		{6, 3, 8, []int{8, 8, 0, 8, 8, 0}},    // period n: n-1 local, then a global one
		{3, 1, 8, []int{0, 0, 0}},
		{3, 0, 8, []int{8, 8, 8}},
		{2, 2, 0, []int{0, 0}},
	}
	for _, tt := range tests {
		got := SlidingLayers(tt.layers, tt.period, tt.window)
		if !slices.Equal(got, tt.want) {
			t.Errorf("SlidingLayers(%d, %d, %d) = %v, want %v", tt.layers, tt.period, tt.window, got, tt.want)
		}
	}
}

// gemmaMeta describes a Gemma 2 size by its published hyper-parameters.
func gemmaMeta(layers, dim, heads, kvHeads, headDim int) runtimetest.Meta {
	return runtimetest.Meta{
		"general.architecture":                    "gemma2",
		"gemma2.context_length":                   8192,
		"gemma2.embedding_length":                 dim,
		"gemma2.block_count":                      layers,
		"gemma2.feed_forward_length":              4 * dim,
		"gemma2.attention.head_count":             heads,
		"gemma2.attention.head_count_kv":          kvHeads,
		"gemma2.attention.key_length":             headDim,
		"gemma2.attention.value_length":           headDim,
		"gemma2.attention.layer_norm_rms_epsilon": 1e-6,
		"gemma2.attention.sliding_window":         4096,
		"gemma2.attn_logit_softcapping":           50.0,
		"gemma2.final_logit_softcapping":          30.0,
		"gemma2.vocab_size":                       256000,
	}
}

// parse reads the shared and Gemma 2's own hyper-parameters of md.
func parse(t *testing.T, md runtimetest.Meta) (*model.Config, Params) {
	t.Helper()
	cfg, err := model.ParseConfig(md, "gemma2")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseParams(md, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, p
}

// TestQueryScale checks 1/√query_pre_attn_scalar for the three sizes: the
// head width 256 for 2B and 9B, n_embd/n_head = 4608/32 = 144 for 27B (not
// its head width 128), and a key in the file taking precedence.
func TestQueryScale(t *testing.T) {
	tests := []struct {
		name string
		md   runtimetest.Meta
		want float64
	}{
		{"2B", gemmaMeta(26, 2304, 8, 4, 256), 1.0 / 16},
		{"9B", gemmaMeta(42, 3584, 16, 8, 256), 1.0 / 16},
		{"27B", gemmaMeta(46, 4608, 32, 16, 128), 1.0 / 12},
	}
	override := gemmaMeta(42, 3584, 16, 8, 256)
	override["gemma2.attention.query_pre_attn_scalar"] = 64
	tests = append(tests, struct {
		name string
		md   runtimetest.Meta
		want float64
	}{"key", override, 1.0 / 8})
	for _, tt := range tests {
		_, p := parse(t, tt.md)
		if math.Abs(float64(p.QueryScale)-tt.want) > 1e-7 {
			t.Errorf("%s: query scale %g, want %g", tt.name, p.QueryScale, tt.want)
		}
	}
}

func TestParseParamsDefaults(t *testing.T) {
	md := gemmaMeta(4, 256, 4, 2, 64)
	delete(md, "gemma2.attention.sliding_window")
	delete(md, "gemma2.attn_logit_softcapping")
	delete(md, "gemma2.final_logit_softcapping")
	_, p := parse(t, md)
	if p.AttnSoftcap != 50 || p.FinalSoftcap != 30 || !slices.Equal(p.Windows, []int{4096, 0, 4096, 0}) || p.EmbedScale != 16 {
		t.Errorf("defaults: %+v, want softcaps 50/30, windows [4096 0 4096 0], embedding scale 16", p)
	}
}

// TestKVBytes9B checks the KV estimate of Gemma-2-9B by hand: 42 layers, 8
// KV heads of 256, q8_0 (256 values = 8 blocks of 34 bytes = 272 bytes), so
// K+V of one position of one layer is 2·8·272 = 4352 bytes. At a context of
// 8192 with chunk 512, the 21 global layers keep 8192 positions and the 21
// local ones a ring of 4096+512: 21·4352·(8192+4608) = 1,169,817,600 bytes.
// At 4096 the window covers the whole context: 42·4352·4096 = 748,683,264.
func TestKVBytes9B(t *testing.T) {
	md := gemmaMeta(42, 3584, 16, 8, 256)
	cfg, p := parse(t, md)
	m := &Model{cfg: cfg, p: p}
	tests := []struct {
		ctx  int
		kv   kvcache.Type
		want int64
	}{
		{8192, kvcache.Q8_0, 1_169_817_600},
		{4096, kvcache.Q8_0, 748_683_264},
		{8192, kvcache.F16, 21 * 2 * 8 * 512 * (8192 + 4608)},
	}
	for _, tt := range tests {
		if got := m.KVBytes(model.StateOptions{Context: tt.ctx, KVType: tt.kv, Chunk: 512}); got != tt.want {
			t.Errorf("context %d %v: KVBytes %d, want %d", tt.ctx, tt.kv, got, tt.want)
		}
	}
}

// goldenModel loads the small gemma2 model of the golden set (a local layer
// with a window of 32, then a global one).
func goldenModel(t *testing.T) (*Model, []int32) {
	t.Helper()
	m, err := New(runtimetest.GoldenSource(t, "gemma2-F32.gguf"), model.Env{Pool: runtimetest.Pool(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	return m, runtimetest.GoldenTokens(t, "gemma2")
}

func eval(t *testing.T, m *Model, ids []int32) []float32 {
	t.Helper()
	return runtimetest.Eval(t, m, ids, model.StateOptions{Context: 256, Chunk: len(ids)}, 0)
}

// TestWindowOnlyChangesLaterPositions: positions 0..31 see at most 32
// positions, so their logits must not depend on the window of 32; every later
// position's must (the golden sequence is 96 tokens long).
func TestWindowOnlyChangesLaterPositions(t *testing.T) {
	m, ids := goldenModel(t)
	if !slices.Equal(m.p.Windows, []int{32, 0}) {
		t.Fatalf("windows %v, want [32 0]", m.p.Windows)
	}
	windowed := eval(t, m, ids)
	m.p.Windows = []int{0, 0}
	global := eval(t, m, ids)
	vocab := m.cfg.Vocab
	for p := range ids {
		same := true
		for i := p * vocab; i < (p+1)*vocab; i++ {
			if windowed[i] != global[i] {
				same = false
				break
			}
		}
		if p < 32 && !same {
			t.Errorf("position %d: logits depend on the window", p)
		}
		if p >= 32 && same {
			t.Errorf("position %d: logits do not depend on the window", p)
		}
	}
}

// TestFinalSoftcapApplied checks the model's logits are the uncapped ones
// passed through c·tanh(x/c) with the file's cap of 15.
func TestFinalSoftcapApplied(t *testing.T) {
	m, ids := goldenModel(t)
	if m.p.FinalSoftcap != 15 || m.p.AttnSoftcap != 5 {
		t.Fatalf("softcaps %g/%g, want the file's 5/15", m.p.AttnSoftcap, m.p.FinalSoftcap)
	}
	capped := eval(t, m, ids[:8])
	m.w.Softcap = 0
	raw := eval(t, m, ids[:8])
	exceeds := 0
	for i := range raw {
		want := 15 * math.Tanh(float64(raw[i])/15)
		if math.Abs(float64(capped[i])-want) > 1e-5 {
			t.Fatalf("logit %d: %g, want 15·tanh(%g/15) = %g", i, capped[i], raw[i], want)
		}
		if math.Abs(float64(raw[i])) > 15 {
			exceeds++
		}
	}
	t.Logf("%d of %d uncapped logits exceed the cap", exceeds, len(raw))
}
