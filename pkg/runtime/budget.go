package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/corelm/corelm/pkg/runtime/kvcache"
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
	msg := fmt.Sprintf("%v: a context of %d (KV cache %s) needs %s (weights %s + KV cache %s + compute %s), budget %s",
		ErrOverBudget, e.Context, e.KVType, FormatBytes(e.Need.Total()), FormatBytes(e.Need.Weights), FormatBytes(e.Need.KV),
		FormatBytes(e.Need.Compute), FormatBytes(e.Budget))
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

// Fit is how a model is served within a memory budget: the context chosen
// and what one sequence of it costs. `corelm inspect` prints it, and the
// inference service logs it when it opens a model.
type Fit struct {
	Context    int          // the served context
	KVType     kvcache.Type // the KV cache's element type
	KVPerToken int64        // KV bytes the last position of Context adds (every layer that still grows)
	Need       Footprint    // weights, KV cache of one sequence of Context positions, one step's compute
	Budget     int64        // the budget it was planned in (0: no limit)
	MaxContext int          // the largest context up to the trained one within Budget (0: none)
}

// Fits reports whether Need is within Budget.
func (f Fit) Fits() bool { return f.Budget <= 0 || f.Need.Total() <= f.Budget }

// LogValue is the memory table as one log attribute group.
func (f Fit) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("context", f.Context),
		slog.String("kv_type", f.KVType.String()),
		slog.String("weights", FormatBytes(f.Need.Weights)),
		slog.String("kv_per_token", FormatBytes(f.KVPerToken)),
		slog.String("kv", FormatBytes(f.Need.KV)),
		slog.String("compute", FormatBytes(f.Need.Compute)),
		slog.String("total", FormatBytes(f.Need.Total())),
		slog.String("budget", FormatBytes(f.Budget)),
		slog.Int("max_context", f.MaxContext),
	)
}

// Plan chooses the context a model m, with weightBytes of tensors, is served
// at within budget bytes (budget <= 0: no limit), one sequence of opts
// fitting beside the weights and one step's compute:
//
//   - opts.Context > 0 is the operator's: clamped to the trained context
//     (Config.ClampContext) and otherwise honoured, or refused with a
//     *BudgetError naming the largest context that fits — never lowered
//     silently;
//   - opts.Context == 0 is the largest context up to Config.DefaultContext
//     (the trained context, at most model.DefaultContextCap) that fits. Less
//     than one step of positions (opts.Chunk) is refused with a *BudgetError
//     as well.
//
// The Fit describes the chosen context even with an error (Fits is then
// false).
func Plan(m Sized, weightBytes int64, opts model.StateOptions, budget int64) (Fit, error) {
	cfg := m.Config()
	opts.Length = 0
	explicit := opts.Context > 0
	if explicit {
		opts.Context = cfg.ClampContext(opts.Context)
	} else {
		opts.Context = cfg.DefaultContext()
	}
	opts = normalize(cfg, opts)
	if !explicit && budget > 0 {
		if n := MaxContext(m, weightBytes, opts, budget); n >= min(opts.Chunk, opts.Context) {
			opts.Context = n
		} else {
			// Report the smallest useful context, which does not fit.
			opts.Context = min(opts.Chunk, opts.Context)
		}
	}
	fit := Fit{
		Context:    opts.Context,
		KVType:     opts.KVType,
		KVPerToken: KVPerToken(m, opts),
		Need:       Estimate(m, weightBytes, opts),
		Budget:     budget,
		MaxContext: cfg.ClampContext(0),
	}
	if budget > 0 {
		all := opts
		all.Context = cfg.ClampContext(0)
		fit.MaxContext = MaxContext(m, weightBytes, all, budget)
	}
	return fit, CheckBudget(m, weightBytes, opts, budget)
}

// KVPerToken is what the last position of a sequence of opts.Context
// positions adds to its KV cache: K and V of every layer, or of the global
// layers only once the sliding-window layers' rings are full.
func KVPerToken(m Sized, opts model.StateOptions) int64 {
	opts = normalize(m.Config(), opts)
	if opts.Context <= 1 {
		return m.KVBytes(opts)
	}
	shorter := opts
	shorter.Context, shorter.Length = opts.Context-1, 0
	opts.Length = 0
	return m.KVBytes(opts) - m.KVBytes(shorter)
}

// WeightBytes is the size of every tensor of src: the weights' share of
// the memory estimate.
func WeightBytes(src model.Source) int64 {
	var n int64
	for _, name := range src.TensorNames() {
		if t, ok := src.LookupTensor(name); ok {
			n += t.Bytes()
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

// FormatBytes writes n as ParseBytes reads it, with binary units and two
// decimals ("4.58 GiB"), or in bytes below 1 KiB.
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := abs(n) / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
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
