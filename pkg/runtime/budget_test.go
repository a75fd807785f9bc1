package runtime_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/gemma2"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// gemma9B sizes memory like Gemma-2-9B (42 layers, 16 heads, 8 KV heads of
// 256, FFN 14336, vocab 256000, 8192 context, even layers sliding over 4096)
// without its weights.
type gemma9B struct{ cfg model.Config }

func newGemma9B() *gemma9B {
	return &gemma9B{cfg: model.Config{Arch: "gemma2", Context: 8192, Dim: 3584, Layers: 42, FFN: 14336,
		Heads: 16, KVHeads: 8, HeadDim: 256, ValueDim: 256, Vocab: 256000}}
}

func (g *gemma9B) Config() *model.Config { return &g.cfg }
func (g *gemma9B) KVBytes(opts model.StateOptions) int64 {
	geo := model.CacheGeometry(&g.cfg, opts, gemma2.SlidingLayers(g.cfg.Layers, 2, 4096))
	return geo.Bytes()
}

// TestBudgetGemma2_9B is the 6 GiB case: with a q8_0 KV cache and a context
// of 4096, the KV cache is 42·4096·2·8·272 = 748,683,264 bytes and one step
// of 512 tokens ~115 MB, so weights of 5.76 GB (a Q4_K_M file) do not fit
// 6 GiB while 5.48 GB (Q4_K_S) do; with an f16 cache neither does.
func TestBudgetGemma2_9B(t *testing.T) {
	const budget = 6 << 30
	m := newGemma9B()
	tests := []struct {
		name    string
		weights int64
		kv      kvcache.Type
		fits    bool
	}{
		{"Q4_K_M q8_0", 5_760_000_000, kvcache.Q8_0, false},
		{"Q4_K_S q8_0", 5_480_000_000, kvcache.Q8_0, true},
		{"Q4_K_S f16", 5_480_000_000, kvcache.F16, false},
	}
	for _, tt := range tests {
		opts := model.StateOptions{Context: 4096, KVType: tt.kv}
		need := runtime.Estimate(m, tt.weights, opts)
		err := runtime.CheckBudget(m, tt.weights, opts, budget)
		t.Logf("%s: KV %d, compute %d, total %d of %d: %v", tt.name, need.KV, need.Compute, need.Total(), int64(budget), err)
		if tt.kv == kvcache.Q8_0 && need.KV != 748_683_264 {
			t.Errorf("%s: KV estimate %d, want 748683264", tt.name, need.KV)
		}
		if (err == nil) != tt.fits {
			t.Errorf("%s: CheckBudget = %v, want fits=%v", tt.name, err, tt.fits)
			continue
		}
		if tt.fits {
			continue
		}
		var be *runtime.BudgetError
		if !errors.Is(err, runtime.ErrOverBudget) || !errors.As(err, &be) {
			t.Fatalf("%s: error %v is not a *BudgetError wrapping ErrOverBudget", tt.name, err)
		}
		if be.Context != 4096 || be.Budget != budget || be.Need != need {
			t.Errorf("%s: error fields %+v", tt.name, be)
		}
		// MaxContext is the boundary: it fits, one more does not.
		o := opts
		o.Context = be.MaxContext
		if be.MaxContext <= 0 || runtime.Estimate(m, tt.weights, o).Total() > budget {
			t.Errorf("%s: MaxContext %d does not fit", tt.name, be.MaxContext)
		}
		o.Context++
		if runtime.Estimate(m, tt.weights, o).Total() <= budget {
			t.Errorf("%s: MaxContext %d is not the largest that fits", tt.name, be.MaxContext)
		}
	}
}

func TestCheckBudgetLoadedModel(t *testing.T) {
	pool := kernels.NewPool(1)
	defer pool.Close()
	l, err := runtime.OpenGGUF(filepath.Join("testdata", "golden", "models", "gemma2-F32.gguf"), model.Env{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	w := runtime.WeightBytes(l.Source)
	if w != 5_055_488 {
		t.Errorf("WeightBytes = %d, want the 5055488 bytes of tensor data", w)
	}
	opts := model.StateOptions{Context: 256, KVType: kvcache.Q8_0, Chunk: 96}
	if err := runtime.CheckBudget(l.Model, w, opts, 0); err != nil {
		t.Errorf("no budget: %v", err)
	}
	if err := runtime.CheckBudget(l.Model, w, opts, 1<<30); err != nil {
		t.Errorf("1 GiB: %v", err)
	}
	if err := runtime.CheckBudget(l.Model, w, opts, w); !errors.Is(err, runtime.ErrOverBudget) {
		t.Errorf("a budget of the weights alone: %v, want ErrOverBudget", err)
	}
}
