package runtime_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/gemma2"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// sized is a model's memory shape without its weights: its configuration
// and the window of each layer's KV cache (nil: every layer global).
type sized struct {
	cfg     model.Config
	windows []int
}

func (s *sized) Config() *model.Config                 { return &s.cfg }
func (s *sized) KVBytes(opts model.StateOptions) int64 { return model.KVBytes(&s.cfg, opts, s.windows) }

// newGemma9B sizes memory like Gemma-2-9B (42 layers, 16 heads, 8 KV heads
// of 256, FFN 14336, vocab 256000, 8192 context, even layers sliding over
// 4096).
func newGemma9B() *sized {
	cfg := model.Config{Arch: "gemma2", Context: 8192, Dim: 3584, Layers: 42, FFN: 14336,
		Heads: 16, KVHeads: 8, HeadDim: 256, ValueDim: 256, Vocab: 256000}
	return &sized{cfg: cfg, windows: gemma2.SlidingLayers(cfg.Layers, 2, 4096)}
}

// newLlama8B sizes memory like Llama-3.1-8B (32 layers, 32 heads, 8 KV
// heads of 128, FFN 14336, vocab 128256, trained on 131,072 positions).
func newLlama8B() *sized {
	return &sized{cfg: model.Config{Arch: "llama", Context: 131072, Dim: 4096, Layers: 32, FFN: 14336,
		Heads: 32, KVHeads: 8, HeadDim: 128, ValueDim: 128, Vocab: 128256}}
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

// llama8BWeights is the tensor data of the Llama-3.1-8B Q4_K_M shape
// (`corelm synth --like llama-3.1-8b --type Q4_K_M`).
const llama8BWeights = 4_920_733_696

// TestPlanDefaultContext: the served context a budget gives when none is
// asked for — the largest that fits up to 8192, with one full-context
// sequence beside the weights and one step's compute — and the refusals
// with their numbers.
func TestPlanDefaultContext(t *testing.T) {
	sixGiB, _, err := runtime.BudgetFrom(runtime.Memory{Limit: 6 << 30, Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		m              runtime.Sized
		weights        int64
		opts           model.StateOptions
		budget         int64
		wantLo, wantHi int      // the chosen context's range; 0, 0: an error
		words          []string // in the error
	}{
		{"8B f16, 6 GiB box", newLlama8B(), llama8BWeights, model.StateOptions{}, sixGiB, 4096, 8191, nil},
		{"8B q8_0, 6 GiB box", newLlama8B(), llama8BWeights, model.StateOptions{KVType: kvcache.Q8_0}, sixGiB, 8192, 8192, nil},
		{"8B f16, 32 GiB: the default cap", newLlama8B(), llama8BWeights, model.StateOptions{}, 32 << 30, 8192, 8192, nil},
		{"8B f16, no budget: the default cap", newLlama8B(), llama8BWeights, model.StateOptions{}, 0, 8192, 8192, nil},
		{"8B explicit 2048 fits", newLlama8B(), llama8BWeights, model.StateOptions{Context: 2048}, sixGiB, 2048, 2048, nil},
		{"8B explicit 32768 on a 32 GiB box", newLlama8B(), llama8BWeights, model.StateOptions{Context: 32768}, 32 << 30, 32768, 32768, nil},
		{"8B explicit beyond the trained context is clamped to it", newLlama8B(), llama8BWeights, model.StateOptions{Context: 1 << 20}, 0, 131072, 131072, nil},
		{"8B explicit 16384 on a 6 GiB box", newLlama8B(), llama8BWeights, model.StateOptions{Context: 16384}, sixGiB, 0, 0,
			[]string{"a context of 16384 (KV cache f16) needs", "2.00 GiB", "budget 5.56 GiB", "the largest context that fits is"}},
		{"8B on 4 GiB", newLlama8B(), llama8BWeights, model.StateOptions{}, 4 << 30, 0, 0,
			[]string{"a context of 128", "weights 4.58 GiB", "budget 4.00 GiB", "leave no room"}},
		{"8B with room for 50 positions", newLlama8B(), llama8BWeights, model.StateOptions{}, llama8BWeights + 29_083_648 + 50<<17, 0, 0,
			[]string{"a context of 128", "the largest context that fits is 50"}},
		{"Gemma-2-9B Q4_0 q8_0, 6 GiB box", newGemma9B(), 5_222_000_000, model.StateOptions{KVType: kvcache.Q8_0}, sixGiB, 128, 4096, nil},
		{"gemma 8192 trained: the cap is the trained context", newGemma9B(), 1 << 30, model.StateOptions{}, 32 << 30, 8192, 8192, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fit, err := runtime.Plan(tt.m, tt.weights, tt.opts, tt.budget)
			t.Logf("context %d, KV/token %d, need %+v (%d) of %d, max %d: %v", fit.Context, fit.KVPerToken, fit.Need, fit.Need.Total(), tt.budget, fit.MaxContext, err)
			if tt.wantHi == 0 {
				var be *runtime.BudgetError
				if !errors.As(err, &be) || !errors.Is(err, runtime.ErrOverBudget) || fit.Fits() {
					t.Fatalf("err = %v (fits %v), want a *BudgetError", err, fit.Fits())
				}
				for _, w := range tt.words {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil || !fit.Fits() {
				t.Fatalf("err = %v, fits %v", err, fit.Fits())
			}
			if fit.Context < tt.wantLo || fit.Context > tt.wantHi {
				t.Errorf("context %d, want %d..%d", fit.Context, tt.wantLo, tt.wantHi)
			}
			if fit.Need.Weights != tt.weights || fit.Need.KV != tt.m.KVBytes(model.StateOptions{Context: fit.Context, KVType: tt.opts.KVType, Chunk: 128}) {
				t.Errorf("need %+v is not the estimate at context %d", fit.Need, fit.Context)
			}
			// A chosen default is the largest that fits: one more does not.
			if tt.opts.Context == 0 && tt.budget > 0 && fit.Context < tt.m.Config().DefaultContext() {
				o := tt.opts
				o.Context = fit.Context + 1
				if runtime.CheckBudget(tt.m, tt.weights, o, tt.budget) == nil {
					t.Errorf("context %d is not the largest that fits", fit.Context)
				}
			}
			if tt.budget > 0 && fit.MaxContext < fit.Context {
				t.Errorf("MaxContext %d < context %d", fit.MaxContext, fit.Context)
			}
		})
	}
}

func TestKVPerToken(t *testing.T) {
	l := newLlama8B()
	if got := runtime.KVPerToken(l, model.StateOptions{Context: 8192}); got != 32*2*8*128*2 {
		t.Errorf("Llama-3.1-8B f16: %d bytes per token, want 131072", got)
	}
	// Past the sliding window only Gemma-2's 21 global layers grow.
	g := newGemma9B()
	if got := runtime.KVPerToken(g, model.StateOptions{Context: 8192}); got != 21*2*8*256*2 {
		t.Errorf("Gemma-2-9B f16 at 8192: %d bytes per token, want %d", got, 21*2*8*256*2)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.00 KiB", 6 << 30: "6.00 GiB", 1536 << 20: "1.50 GiB", -2048: "-2.00 KiB"} {
		if got := runtime.FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
