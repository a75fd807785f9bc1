package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sched"
)

// inspectReport is the --json form of `corelm inspect`.
type inspectReport struct {
	File         string            `json:"file"`
	Architecture string            `json:"architecture"`
	Config       *model.Config     `json:"config"`
	Formats      map[string]int    `json:"weight_formats"`
	WeightBytes  int64             `json:"weight_bytes"`
	Tensors      []tensorRow       `json:"tensors"`
	Memory       []memoryRow       `json:"memory"`
	Metadata     map[string]string `json:"metadata,omitempty"`
}

type tensorRow struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Shape []int  `json:"shape"`
	Bytes int64  `json:"bytes"`
}

type memoryRow struct {
	KVType      string `json:"kv_type"`
	Context     int    `json:"context"`
	WeightBytes int64  `json:"weight_bytes"`
	KVBytes     int64  `json:"kv_bytes"`
	ComputeB    int64  `json:"compute_bytes"`
	TotalBytes  int64  `json:"total_bytes"`
	BudgetBytes int64  `json:"budget_bytes"`
	Fits        bool   `json:"fits"`
	MaxContext  int    `json:"max_context"` // largest context within the budget (up to the model's)
}

func runInspect(ctx context.Context, args []string) error {
	fs := newFlags("inspect")
	asJSON := fs.Bool("json", false, "print one JSON object")
	ctxLen := fs.Int("ctx", 4096, "context length for the memory estimate")
	budgetS := fs.String("budget", "6GiB", "memory budget to check the estimate against")
	showMeta := fs.Bool("metadata", false, "also list every metadata key (long arrays abbreviated)")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if fs.NArg() != 1 {
		return usagef("usage: corelm inspect MODEL [--json] [--ctx N] [--budget 6GiB]")
	}
	budget, err := runtime.ParseBytes(*budgetS)
	if err != nil {
		return usagef("--budget: %v", err)
	}
	l, err := openModel(fs.Arg(0), 1)
	if err != nil {
		return err
	}
	defer l.Close()
	cfg := l.Model.Config()
	rep := inspectReport{File: fs.Arg(0), Architecture: cfg.Arch, Config: cfg, Formats: map[string]int{}}
	for _, name := range l.Source.TensorNames() {
		t, _ := l.Source.LookupTensor(name)
		rep.Tensors = append(rep.Tensors, tensorRow{Name: name, Type: t.Type.String(), Shape: t.Shape, Bytes: int64(len(t.Data))})
		rep.WeightBytes += int64(len(t.Data))
		if len(t.Shape) >= 2 {
			rep.Formats[t.Type.String()]++
		}
	}
	ctxN := cfg.ClampContext(*ctxLen)
	for _, kt := range []kvcache.Type{kvcache.F16, kvcache.Q8_0} {
		if kt == kvcache.Q8_0 && cfg.HeadDim%32 != 0 {
			continue // q8_0 KV needs 32-wide heads
		}
		// One step of the size serving takes (sched.DefaultStepTokens).
		opts := model.StateOptions{Context: ctxN, KVType: kt, Chunk: sched.DefaultStepTokens}
		need := runtime.Estimate(l.Model, rep.WeightBytes, opts)
		rep.Memory = append(rep.Memory, memoryRow{
			KVType:      kt.String(),
			Context:     ctxN,
			WeightBytes: need.Weights,
			KVBytes:     need.KV,
			ComputeB:    need.Compute,
			TotalBytes:  need.Total(),
			BudgetBytes: budget,
			Fits:        runtime.CheckBudget(l.Model, rep.WeightBytes, opts, budget) == nil,
			MaxContext:  runtime.MaxContext(l.Model, rep.WeightBytes, model.StateOptions{KVType: kt, Chunk: opts.Chunk}, budget),
		})
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
	fmt.Fprintf(w, "weights       %s in %d tensors (matrices: %s)\n\n", humanBytes(r.WeightBytes), len(r.Tensors), strings.Join(formats, ", "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TENSOR\tTYPE\tSHAPE\tBYTES")
	for _, t := range r.Tensors {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", t.Name, t.Type, t.Shape, humanBytes(t.Bytes))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KV\tCONTEXT\tWEIGHTS\tKV CACHE\tCOMPUTE\tTOTAL\tBUDGET\tFITS\tMAX CONTEXT")
	for _, m := range r.Memory {
		fit := "yes"
		if !m.Fits {
			fit = "NO"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", m.KVType, m.Context, humanBytes(m.WeightBytes), humanBytes(m.KVBytes),
			humanBytes(m.ComputeB), humanBytes(m.TotalBytes), humanBytes(m.BudgetBytes), fit, m.MaxContext)
	}
	tw.Flush()
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

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
