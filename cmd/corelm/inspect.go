package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sched"
)

// inspectReport is the --json form of `corelm inspect`.
type inspectReport struct {
	File         string         `json:"file"`
	Architecture string         `json:"architecture"`
	Config       *model.Config  `json:"config"`
	Formats      map[string]int `json:"weight_formats"`
	WeightBytes  int64          `json:"weight_bytes"`
	// ActiveBytes is what one token's forward pass reads of the weights:
	// every tensor but the token embedding (one row of it, unless it is
	// also the output) and, of a mixture of experts, the used of the
	// experts' stacked tensors. The budget counts WeightBytes: all experts
	// must be resident or mappable, whichever a token routes to.
	ActiveBytes int64 `json:"active_weight_bytes_per_token"`
	Experts     int   `json:"experts,omitempty"`      // experts per block (mixtures of experts)
	ExpertsUsed int   `json:"experts_used,omitempty"` // experts per token
	// ExpertStorage is how the file stores the experts' matrices:
	// "stacks" (each 3-D stack's experts one after another: GGUF, packed
	// format 1) or "by_expert" (each expert's gate, up and down together
	// from a page boundary: packed format 2), empty for a dense model.
	ExpertStorage string      `json:"expert_storage,omitempty"`
	Tensors       []tensorRow `json:"tensors"`
	Memory        []memoryRow `json:"memory"`
	Budget        string      `json:"budget_from"` // how the memory budget was derived
	// PackedWeightBytes is the weights as the loader publishes a GGUF file
	// (packed for this CPU), and PackedContexts the plan with them.
	PackedWeightBytes int64             `json:"packed_weight_bytes,omitempty"`
	PackedContexts    []packedContext   `json:"packed_contexts,omitempty"`
	Metadata          map[string]string `json:"metadata,omitempty"`
}

type packedContext struct {
	KVType  string `json:"kv_type"`
	Context int    `json:"context"`
	Fits    bool   `json:"fits"`
}

type tensorRow struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Shape []int  `json:"shape"`
	Bytes int64  `json:"bytes"`
}

// memoryRow is the memory table of `corelm inspect`, one row per KV cache
// type: what the inference service logs when it opens the model
// (runtime.Plan).
type memoryRow struct {
	KVType      string `json:"kv_type"`
	Context     int    `json:"context"` // the context served (chosen within the budget unless --ctx)
	WeightBytes int64  `json:"weight_bytes"`
	ActiveBytes int64  `json:"active_weight_bytes_per_token"` // inspectReport.ActiveBytes
	KVPerToken  int64  `json:"kv_per_token_bytes"`
	KVBytes     int64  `json:"kv_bytes"` // one sequence of the whole context
	ComputeB    int64  `json:"compute_bytes"`
	TotalBytes  int64  `json:"total_bytes"`
	BudgetBytes int64  `json:"budget_bytes"`
	Fits        bool   `json:"fits"`
	MaxContext  int    `json:"max_context"` // largest context within the budget (up to the model's)
	Error       string `json:"error,omitempty"`
}

func runInspect(ctx context.Context, args []string) error {
	fs := newFlags("inspect")
	asJSON := fs.Bool("json", false, "print one JSON object")
	ctxLen := fs.Int("ctx", 0, "context for the memory estimate (0: what serving chooses within the budget, up to the model's and 8192)")
	budgetS := fs.String("memory-budget", "auto", "memory budget to plan in, e.g. 6GiB (auto: the inference service's default, this machine's memory limit less the margin)")
	fs.StringVar(budgetS, "budget", "auto", "the same as --memory-budget (deprecated)")
	machine := fs.String("machine", "", "plan as the inference service would by default on a machine (or cgroup) of this much memory, e.g. 6GiB: its limit less the margin")
	showMeta := fs.Bool("metadata", false, "also list every metadata key (long arrays abbreviated)")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if fs.NArg() > 1 {
		return usagef("usage: corelm inspect [MODEL] [--json] [--ctx N] [--memory-budget 6GiB]")
	}
	budget, budgetHow, err := inspectBudget(*budgetS)
	if err != nil {
		return usagef("--memory-budget: %v", err)
	}
	if *machine != "" {
		limit, err := runtime.ParseBytes(*machine)
		if err != nil {
			return usagef("--machine: %v", err)
		}
		if budget, budgetHow, err = runtime.BudgetFrom(runtime.Memory{Limit: limit, Source: "--machine"}); err != nil {
			return err
		}
	}
	file := fs.Arg(0)
	l, err := openWith(file, 1, nil) // the file as it is: no packing to inspect it
	if err != nil {
		return err
	}
	defer l.Close()
	if file == "" {
		file = models.Name
	}
	cfg := l.Model.Config()
	rep := inspectReport{File: file, Architecture: cfg.Arch, Config: cfg, Formats: map[string]int{}, Budget: budgetHow}
	for _, name := range l.Source.TensorNames() {
		t, _ := l.Source.LookupTensor(name)
		rep.Tensors = append(rep.Tensors, tensorRow{Name: name, Type: t.Type.String(), Shape: t.Shape, Bytes: t.Bytes()})
		rep.WeightBytes += t.Bytes()
		if len(t.Shape) >= 2 {
			rep.Formats[t.Type.String()]++
		}
	}
	rep.ActiveBytes, rep.Experts, rep.ExpertsUsed = activeWeights(l.Source, cfg)
	if rep.Experts > 0 {
		rep.ExpertStorage = "stacks"
		for _, name := range l.Source.TensorNames() {
			if t, _ := l.Source.LookupTensor(name); t.Parts != nil {
				rep.ExpertStorage = "by_expert"
			}
		}
	}
	for _, kt := range []kvcache.Type{kvcache.F16, kvcache.Q8_0} {
		if kt == kvcache.Q8_0 && cfg.HeadDim%32 != 0 {
			continue // q8_0 KV needs 32-wide heads
		}
		// One step of the size serving takes (sched.DefaultStepTokens).
		opts := model.StateOptions{Context: *ctxLen, KVType: kt, Chunk: sched.DefaultStepTokens}
		fit, err := runtime.Plan(l.Model, rep.WeightBytes, opts, budget)
		row := memoryRow{
			KVType:      kt.String(),
			Context:     fit.Context,
			WeightBytes: fit.Need.Weights,
			ActiveBytes: rep.ActiveBytes,
			KVPerToken:  fit.KVPerToken,
			KVBytes:     fit.Need.KV,
			ComputeB:    fit.Need.Compute,
			TotalBytes:  fit.Need.Total(),
			BudgetBytes: budget,
			Fits:        err == nil,
			MaxContext:  fit.MaxContext,
		}
		if err != nil {
			row.Error = err.Error()
		}
		rep.Memory = append(rep.Memory, row)
	}
	if l.Packed == nil && file != models.Name {
		// The loader serves a GGUF file in its packed layout, whose
		// interleaved rows with unpacked scales are a little larger.
		if rep.PackedWeightBytes, err = packedWeights(file); err != nil {
			return err
		}
		for _, m := range rep.Memory {
			kt, _ := kvcache.ParseType(m.KVType)
			fit, err := runtime.Plan(l.Model, rep.PackedWeightBytes, model.StateOptions{Context: *ctxLen, KVType: kt, Chunk: sched.DefaultStepTokens}, budget)
			rep.PackedContexts = append(rep.PackedContexts, packedContext{KVType: m.KVType, Context: fit.Context, Fits: err == nil})
		}
	}
	if *showMeta {
		rep.Metadata = map[string]string{}
		for _, kv := range l.KVs {
			rep.Metadata[kv.Key] = kv.Value.String()
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printInspect(&rep)
	return nil
}

func printInspect(r *inspectReport) {
	c := r.Config
	w := os.Stdout
	fmt.Fprintf(w, "file          %s\narchitecture  %s\n", r.File, r.Architecture)
	fmt.Fprintf(w, "layers %d · dim %d · ffn %d · heads %d (kv %d, head %d) · vocab %d · context %d\n",
		c.Layers, c.Dim, c.FFN, c.Heads, c.KVHeads, c.HeadDim, c.Vocab, c.Context)
	fmt.Fprintf(w, "rope dims %d base %g scale %g · rms eps %g\n", c.RopeDims, c.RopeBase, c.RopeScale, c.RMSEps)
	var formats []string
	for f, n := range r.Formats {
		formats = append(formats, fmt.Sprintf("%s×%d", f, n))
	}
	sort.Strings(formats)
	fmt.Fprintf(w, "weights       %s in %d tensors (matrices: %s)\n", humanBytes(r.WeightBytes), len(r.Tensors), strings.Join(formats, ", "))
	if r.Experts > 0 {
		storage := "stored as ggml's stacks"
		if r.ExpertStorage == "by_expert" {
			storage = "stored expert by expert, gate, up and down together from a page boundary"
		}
		fmt.Fprintf(w, "experts       %d per block, %d per token: %s of the weights read per token; %s\n", r.Experts, r.ExpertsUsed, humanBytes(r.ActiveBytes), storage)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TENSOR\tTYPE\tSHAPE\tBYTES")
	for _, t := range r.Tensors {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", t.Name, t.Type, t.Shape, humanBytes(t.Bytes))
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintf(w, "memory budget: %s\n", r.Budget)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KV\tCONTEXT\tWEIGHTS\tACTIVE/TOKEN\tKV/TOKEN\tKV CACHE\tCOMPUTE\tTOTAL\tBUDGET\tFITS\tMAX CONTEXT")
	for _, m := range r.Memory {
		fit := "yes"
		if !m.Fits {
			fit = "NO"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", m.KVType, m.Context, humanBytes(m.WeightBytes), humanBytes(m.ActiveBytes), humanBytes(m.KVPerToken),
			humanBytes(m.KVBytes), humanBytes(m.ComputeB), humanBytes(m.TotalBytes), humanBytes(m.BudgetBytes), fit, m.MaxContext)
	}
	tw.Flush()
	for _, m := range r.Memory {
		if m.Error != "" {
			fmt.Fprintf(w, "%s: %s\n", m.KVType, m.Error)
		}
	}
	if r.PackedWeightBytes > 0 {
		fmt.Fprintf(w, "through the loader (packed for this CPU, weights %s):", humanBytes(r.PackedWeightBytes))
		for _, p := range r.PackedContexts {
			fit := ""
			if !p.Fits {
				fit = " (does not fit)"
			}
			fmt.Fprintf(w, " %s context %d%s", p.KVType, p.Context, fit)
		}
		fmt.Fprintln(w)
	}
	if len(r.Metadata) > 0 {
		fmt.Fprintln(w)
		keys := make([]string, 0, len(r.Metadata))
		for k := range r.Metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "%s = %s\n", k, r.Metadata[k])
		}
	}
}

// activeWeights is the bytes of weights one token's forward pass reads
// (inspectReport.ActiveBytes), and the expert counts of a mixture of
// experts (0, 0 for a dense model). A tensor is a stack of experts when it
// is 3-D with expert_count as its last dimension.
func activeWeights(src model.Source, cfg *model.Config) (int64, int, int) {
	u := func(tmpl string) int {
		v, _ := src.Uint(cfg.Key(tmpl))
		return int(min(v, 1<<20))
	}
	experts, used := u(model.KeyExpertCount), u(model.KeyExpertUsedCount)
	_, untied := src.LookupTensor(model.TOutput)
	var active int64
	for _, name := range src.TensorNames() {
		t, _ := src.LookupTensor(name)
		n := t.Bytes()
		switch {
		case name == model.TTokenEmbd && untied && len(t.Shape) == 2 && t.Shape[1] > 0:
			n /= int64(t.Shape[1]) // one row
		case experts > 0 && len(t.Shape) == 3 && t.Shape[2] == experts:
			n = n / int64(experts) * int64(used)
		}
		active += n
	}
	if experts == 0 {
		used = 0
	}
	return active, experts, used
}

func humanBytes(n int64) string { return runtime.FormatBytes(n) }

// inspectBudget reads --memory-budget as the inference service does: auto
// is its default (runtime.DefaultMemoryBudget), none no limit.
func inspectBudget(v string) (int64, string, error) {
	switch v {
	case "auto":
		return runtime.DefaultMemoryBudget()
	case "none":
		return 0, "no limit", nil
	}
	b, err := runtime.ParseBytes(v)
	if err != nil || b == 0 {
		return 0, "", fmt.Errorf("%q: give a size (6GiB), auto or none", v)
	}
	return b, fmt.Sprintf("%s (--memory-budget)", runtime.FormatBytes(b)), nil
}

// packedWeights is the size of the tensors of the GGUF file path as the
// loader packs them for this CPU.
func packedWeights(path string) (int64, error) {
	g, err := gguf.Open(path)
	if err != nil {
		return 0, err
	}
	defer g.Close()
	plan, err := pack.NewPlan(g, pack.Options{Generation: 1, Tier: runtime.HostTier()})
	if err != nil {
		return 0, err
	}
	return plan.DataBytes(), nil
}
