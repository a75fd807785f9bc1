package server

import (
	"cmp"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sched"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// The process has one memory budget (Options.MemoryBudget, --memory-budget):
// every model it serves holds the bytes of its weights (mapped and
// resident), one step's compute buffers, and its KV budget, reserved when
// the model is opened. A model opens only within what the other models
// leave; its served context is the largest that fits one full-context
// sequence in that (runtime.Plan), up to model.DefaultContextCap, unless
// the operator named one; its KV budget is what remains, at most
// MaxSeqs full-context sequences (more could never be used). A request
// without max_tokens reserves up to the served context, which by
// construction fits the KV budget, so it is admitted (or queued behind
// others). A superseded generation still draining is not counted: it is
// the same model's memory, and the loader's budget admits a new generation
// only when both copies of the weights fit beside each other.

// resolveMemoryBudget fills in the process's memory budget: 0 is the
// default (runtime.DefaultMemoryBudget), negative is no limit. It returns
// how the budget was derived, for the log.
func resolveMemoryBudget(o *Options) string {
	switch {
	case o.MemoryBudget < 0:
		o.MemoryBudget = 0
		return "no limit"
	case o.MemoryBudget > 0:
		return "--memory-budget"
	}
	b, how, err := runtime.DefaultMemoryBudget()
	if err != nil {
		return fmt.Sprintf("no limit (%v)", err)
	}
	o.MemoryBudget = b
	return how
}

// memoryFor is what a model id may hold: the process's budget less what
// the current generations of the other models reserved (held). 0: no
// limit.
func (r *registry) memoryFor(id string, budget int64) (avail, held int64) {
	if budget <= 0 {
		return 0, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.current {
		if e.id != id {
			held += e.reserved
		}
	}
	return max(budget-held, 1), held // 0 would mean no limit
}

// planMemory chooses the served context and the KV budget of m, whose
// tensors take weights bytes, within budget bytes (0: no limit), and sets
// them in sc. sc.Context and sc.KVBudget > 0 are the operator's: honoured
// or refused with the numbers, never lowered. It returns the plan and the
// bytes the model reserves.
func planMemory(m model.Model, weights int64, sc *sched.Config, budget int64) (runtime.Fit, int64, error) {
	cfg := m.Config()
	opts := model.StateOptions{Context: sc.Context, KVType: sc.KVType, Chunk: cmp.Or(sc.StepTokens, sched.DefaultStepTokens)}
	compute := runtime.ComputeBytes(cfg, opts.Chunk)
	planIn := budget
	if sc.KVBudget > 0 {
		if budget > 0 && weights+compute+sc.KVBudget > budget {
			return runtime.Fit{}, 0, fmt.Errorf("%w: --budget %s of KV cache does not fit beside the weights (%s) and compute buffers (%s) in the memory budget of %s: at most %s",
				runtime.ErrOverBudget, runtime.FormatBytes(sc.KVBudget), runtime.FormatBytes(weights), runtime.FormatBytes(compute),
				runtime.FormatBytes(budget), runtime.FormatBytes(max(budget-weights-compute, 0)))
		}
		planIn = weights + compute + sc.KVBudget
	}
	fit, err := runtime.Plan(m, weights, opts, planIn)
	if err != nil {
		if sc.KVBudget > 0 {
			return fit, 0, fmt.Errorf("within --budget %s of KV cache: %w", runtime.FormatBytes(sc.KVBudget), err)
		}
		return fit, 0, err
	}
	fit.Budget = budget
	sc.Context = fit.Context
	if sc.KVBudget == 0 && budget > 0 {
		sc.KVBudget = min(budget-fit.Need.Weights-fit.Need.Compute, int64(cmp.Or(sc.MaxSeqs, sched.DefaultMaxSeqs))*fit.Need.KV)
	}
	reserved := fit.Need.Weights + fit.Need.Compute + sc.KVBudget
	if sc.KVBudget == 0 {
		reserved = fit.Need.Total()
	}
	return fit, reserved, nil
}

// openLeased opens a published generation with a reader's lease: a shared
// flock held until the returned file closes, after the mapping is gone
// (the loader counts the generation in its budget while a lease is held;
// services/loader/server/budget.go). A generation whose name is gone once
// the lease is taken was superseded meanwhile, and is not served.
func openLeased(pm *corelmv1.PublishedModel) (*pack.File, *os.File, error) {
	f, err := os.Open(pm.GetPath())
	if err != nil {
		return nil, nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			err = errors.New("superseded: the loader is removing it")
		}
		return nil, nil, fmt.Errorf("%s: %w", pm.GetPath(), err)
	}
	var named, held unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &held); err != nil {
		f.Close()
		return nil, nil, err
	}
	if err := unix.Stat(pm.GetPath(), &named); err != nil || named.Dev != held.Dev || named.Ino != held.Ino {
		f.Close()
		return nil, nil, fmt.Errorf("%s: superseded while it was opened", pm.GetPath())
	}
	pf, err := pack.OpenFile(f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return pf, f, nil
}
