package runtime

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sched"
)

// ErrOverBudget is wrapped by the error CheckBudget returns when a model and
// the context asked for would not fit the memory budget.
var ErrOverBudget = errors.New("over the memory budget")

// Sized is what the memory estimate needs of a model; model.Model has it.
type Sized interface {
	Config() *model.Config
	KVBytes(opts model.StateOptions) int64
}

// Footprint is the memory one sequence of a model needs, by kind.
type Footprint struct {
	Weights int64 // the mapped tensors
	KV      int64 // the sequence's KV cache (sliding-window layers at their ring size)
	Compute int64 // activations of one step of up to Chunk tokens
}

// Total is the sum of the parts.
func (f Footprint) Total() int64 { return f.Weights + f.KV + f.Compute }

// Estimate returns the footprint of m with weightBytes of tensors and one
// sequence of opts. A Context of 0 (or beyond the model's) means the
// model's trained context, a Chunk of 0 the step serving takes
// (sched.DefaultStepTokens).
func Estimate(m Sized, weightBytes int64, opts model.StateOptions) Footprint {
	opts = normalize(m.Config(), opts)
	return Footprint{
		Weights: weightBytes,
		KV:      m.KVBytes(opts),
		Compute: ComputeBytes(m.Config(), opts.Chunk),
	}
}

func normalize(cfg *model.Config, opts model.StateOptions) model.StateOptions {
	opts = opts.Resolve(cfg)
	if opts.Chunk <= 0 {
		opts.Chunk = sched.DefaultStepTokens
	}
	return opts
}

// BudgetError is the error of a refused admission: what was asked, what it
// needs, and the largest context that would fit instead.
type BudgetError struct {
	Context    int // positions asked for
	KVType     string
	Need       Footprint
	Budget     int64
	MaxContext int // largest context that fits with the same options; 0 if none
}

func (e *BudgetError) Error() string {
	msg := fmt.Sprintf("%v: a context of %d (KV cache %s) needs %d bytes (weights %d + KV cache %d + compute %d), budget %d",
		ErrOverBudget, e.Context, e.KVType, e.Need.Total(), e.Need.Weights, e.Need.KV, e.Need.Compute, e.Budget)
	if e.MaxContext > 0 {
		return msg + fmt.Sprintf("; the largest context that fits is %d", e.MaxContext)
	}
	return msg + "; the weights and one step's activations leave no room for a KV cache"
}

func (e *BudgetError) Unwrap() error { return ErrOverBudget }

// CheckBudget returns a *BudgetError (wrapping ErrOverBudget) when m, with
// weightBytes of tensors and one sequence of opts, needs more than budget
// bytes. A budget <= 0 means no limit. Callers check before they allocate
// the sequence, so an over-large context is refused with a reason instead
// of running the host out of memory.
func CheckBudget(m Sized, weightBytes int64, opts model.StateOptions, budget int64) error {
	if budget <= 0 {
		return nil
	}
	opts = normalize(m.Config(), opts)
	need := Estimate(m, weightBytes, opts)
	if need.Total() <= budget {
		return nil
	}
	return &BudgetError{
		Context:    opts.Context,
		KVType:     opts.KVType.String(),
		Need:       need,
		Budget:     budget,
		MaxContext: MaxContext(m, weightBytes, opts, budget),
	}
}

// MaxContext is the largest context (at most opts.Context, or the model's)
// whose footprint fits budget, 0 if none does. The footprint grows with the
// context, so a binary search finds it.
func MaxContext(m Sized, weightBytes int64, opts model.StateOptions, budget int64) int {
	opts = normalize(m.Config(), opts)
	fits := func(ctx int) bool {
		o := opts
		o.Context, o.Length = ctx, 0
		return Estimate(m, weightBytes, o).Total() <= budget
	}
	lo, hi := 0, opts.Context // fits(lo) is assumed, hi is the answer if it fits
	if fits(hi) {
		return hi
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if fits(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// WeightBytes is the size of every tensor of src: the weights' share of
// the memory estimate.
func WeightBytes(src model.Source) int64 {
	var n int64
	for _, name := range src.TensorNames() {
		if t, ok := src.LookupTensor(name); ok {
			n += int64(len(t.Data))
		}
	}
	return n
}

// ComputeBytes estimates the activation memory of one forward step of up to
// chunk tokens (the workspace of the forward pass plus one logits row per
// token), which comes on top of weights and KV cache.
func ComputeBytes(cfg *model.Config, chunk int) int64 {
	perTok := 3*cfg.Dim + 2*cfg.QDim() + 2*cfg.KVDim() + 2*cfg.FFN
	act := int64(chunk) * int64(perTok) * 4
	// Activations quantized to 8 bits for the matmuls, and the logits.
	q8 := int64(chunk) * int64(max(cfg.Dim, cfg.FFN)+64)
	logits := int64(cfg.Vocab) * 4 * 2
	return act + q8 + logits
}

// ParseBytes parses a size such as "6GiB", "512MiB", "6G", "1.5GB" or
// "1048576". Binary (KiB, MiB, GiB, K, M, G) and decimal (KB, MB, GB)
// suffixes are accepted.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{
		{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3},
		{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1},
	}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(strings.ToUpper(t), strings.ToUpper(u.suffix)) {
			mult = u.mult
			t = strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || f*mult > 1<<62 {
		return 0, fmt.Errorf("invalid size %q (examples: 6GiB, 512MiB, 1073741824)", s)
	}
	return int64(f * mult), nil
}
