package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/corelm/corelm/internal/smaps"
	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/sched"
)

// benchReport is the --json output of `corelm bench`.
type benchReport struct {
	Model          string    `json:"model"`
	Threads        int       `json:"threads"`
	Seqs           int       `json:"seqs"`
	KernelTier     string    `json:"kernel_tier"`
	PromptTokens   int       `json:"prompt_tokens"`
	GenTokens      int       `json:"gen_tokens"`
	Reps           int       `json:"reps"`
	PrefillTokS    float64   `json:"prefill_tok_s"`
	DecodeTokS     float64   `json:"decode_tok_s"`
	PrefillAll     []float64 `json:"prefill_tok_s_runs"`
	DecodeAll      []float64 `json:"decode_tok_s_runs"`
	Context        int       `json:"context"`
	PeakRSSBytes   int64     `json:"peak_rss_bytes"`
	RSSBytes       int64     `json:"rss_bytes"`
	RSSAnonBytes   int64     `json:"rss_anon_bytes"`
	RSSMappedBytes int64     `json:"rss_mapped_bytes"`
	RSSHugeBytes   int64     `json:"rss_huge_mapped_bytes"`
	WeightBytesTok int64     `json:"weight_bytes_per_token"`
	KVBytesStep    int64     `json:"kv_bytes_per_step"` // the KV cache one decode step reads, at the mean depth of the decode
	// Mixtures of experts: the experts' stacked tensors, what of them a
	// decode step read (measured, the mean over the timed steps, included
	// in weight_bytes_per_token), and the active-parameter bytes per token
	// (inspect's active_weight_bytes_per_token).
	ExpertBytesAll  int64 `json:"expert_bytes,omitempty"`
	ExpertBytesStep int64 `json:"expert_bytes_per_step,omitempty"`
	ActiveBytes     int64 `json:"active_weight_bytes_per_token,omitempty"`
	// The model file's pages this process had mapped in (the Rss of its
	// mappings, /proc/self/smaps) after the untimed warm-up's first
	// forward step (its prompt's first chunk: with --prompt-tokens 1, one
	// token's step, of which ExpertBytesFirst were routed experts'
	// matrices) and after the whole warm-up, before the read-bandwidth
	// pass touches every weight: what routing made the process fault in.
	TouchedFirst     int64     `json:"touched_first_step_bytes,omitempty"`
	ExpertBytesFirst int64     `json:"expert_bytes_first_step,omitempty"`
	TouchedWarmup    int64     `json:"touched_warmup_bytes,omitempty"`
	DecodeBandwidth  float64   `json:"decode_bandwidth_gb_s"`
	StreamGBs        float64   `json:"stream_gb_s"`
	StreamAll        []float64 `json:"stream_gb_s_runs"`
	DecodeOfStream   float64   `json:"decode_of_stream"`
	GoVersion        string    `json:"go_version"`
}

func runBench(ctx context.Context, args []string) error {
	fs := newFlags("bench")
	path := fs.String("model", "", "model file (default: the embedded "+models.Name+")")
	threads := fs.Int("threads", 0, "threads (default: the CPUs this process may use)")
	p := fs.Int("prompt-tokens", 128, "prompt tokens to prefill per repetition")
	g := fs.Int("gen-tokens", 32, "tokens to decode per repetition")
	reps := fs.Int("reps", 3, "repetitions (the median is reported)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	kvType := fs.String("kv-type", "f16", "KV cache type: f16 or q8_0")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the timed runs to this file")
	seqs := fs.Int("seqs", 1, "sequences decoded together in one batch (continuous batching); decode_tok_s is their aggregate")
	ctxLen := fs.Int("ctx", 0, "context each sequence is created with (default: prompt + generated tokens + 1)")
	fs.IntVar(ctxLen, "context", 0, "the same as --ctx")
	shortWarm := fs.Bool("short-warmup", false, "warm up with one prompt step and two decoded tokens instead of a whole repetition: enough to fault in a dense model's weights, and what makes runs at a depth of thousands of tokens affordable")
	step := fs.Int("step", sched.DefaultStepTokens, "most prompt tokens per forward step, as the server's --step-tokens (0: the whole prompt)")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if *p < 1 || *g < 1 || *reps < 1 || *seqs < 1 {
		return usagef("--prompt-tokens, --gen-tokens, --reps and --seqs must be ≥ 1")
	}
	if *ctxLen == 0 {
		*ctxLen = *p + *g + 1
	}
	if *ctxLen < *p+*g+1 {
		return usagef("--ctx %d cannot hold %d prompt and %d generated tokens", *ctxLen, *p, *g)
	}
	if *step <= 0 || *step > *p {
		*step = *p
	}
	kt, err := kvcache.ParseType(*kvType)
	if err != nil {
		return usagef("--kv-type: %v", err)
	}
	if *threads <= 0 {
		*threads = kernels.DefaultThreads()
	}
	l, err := openModel(*path, *threads)
	if err != nil {
		return err
	}
	defer l.Close()
	m := l.Model
	cfg := m.Config()
	rep := benchReport{Model: *path, Threads: *threads, Seqs: *seqs, KernelTier: kernels.ActiveTier().String(), PromptTokens: *p, GenTokens: *g, Reps: *reps, Context: *ctxLen, GoVersion: runtime.Version()}
	if rep.Model == "" {
		rep.Model = models.Name + " (embedded)"
	}
	weights := decodeWeights(l.Source)
	for _, w := range weights {
		rep.WeightBytesTok += int64(len(w))
	}
	// A mixture of experts reads of its experts' tensors only what routing
	// chose: the model counts it (moe.Model.ExpertBytes).
	experts, _ := m.(interface{ ExpertBytes() int64 })
	var expertRead int64
	var ino uint64 // the model file's, to find its mappings
	if l.Packed != nil {
		_, ino = l.Packed.Identity()
	} else if st, err := os.Stat(*path); err == nil && *path != "" {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			ino = sys.Ino
		}
	}
	streamPool := kernels.NewPool(*threads)
	defer streamPool.Close()
	rng := rand.New(rand.NewPCG(42, 7))
	prompt := make([]int32, *p)
	for i := range prompt {
		prompt[i] = int32(rng.IntN(cfg.Vocab))
	}
	// One untimed warm-up pass faults the weights in (they are mmapped).
	warmP, warmG := *p, *g
	if *shortWarm {
		warmP, warmG = min(*p, max(*step, 1)), min(*g, 2)
	}
	for r := -1; r < *reps; r++ {
		if r == 0 && *cpuProfile != "" {
			pf, err := os.Create(*cpuProfile)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(pf); err != nil {
				return err
			}
			defer func() { pprof.StopCPUProfile(); pf.Close() }()
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// Each sequence gets its own prompt prefill (timed together: prefill
		// tok/s counts every sequence's prompt), then all decode in one batch
		// per step. The previous repetition's states are collected first, so
		// that their KV caches' memory is reused rather than added to the
		// peak.
		runtime.GC()
		b := &model.Batch{}
		ctxN := *ctxLen
		if r < 0 && *shortWarm {
			// A cache only as long as the warm-up: one of the whole
			// context, its first positions written in every head's
			// stretch, would be resident next to the timed run's.
			ctxN = min(ctxN, warmP+warmG+1)
		}
		for i := 0; i < *seqs; i++ {
			st, err := m.NewState(model.StateOptions{Context: ctxN, KVType: kt, Chunk: *step})
			if err != nil {
				return err
			}
			b.Seqs = append(b.Seqs, model.SeqBatch{State: st})
		}
		t0 := time.Now()
		np, ng := *p, *g
		if r < 0 {
			np, ng = warmP, warmG
		}
		for i := range b.Seqs {
			for lo := 0; lo < np; lo += *step {
				if err := ctx.Err(); err != nil {
					return err
				}
				one := &model.Batch{Seqs: []model.SeqBatch{{State: b.Seqs[i].State, Tokens: prompt[lo:min(lo+*step, np)], Logits: 1}}}
				if err := m.Forward(one); err != nil {
					return err
				}
				b.Seqs[i].Out = one.Seqs[0].Out
				if r < 0 && i == 0 && lo == 0 && ino != 0 {
					rep.TouchedFirst = mappedRSS(ino)
					if experts != nil {
						rep.ExpertBytesFirst = experts.ExpertBytes()
					}
				}
			}
		}
		prefill := time.Since(t0)
		toks := make([]int32, *seqs)
		var e0 int64
		if experts != nil {
			e0 = experts.ExpertBytes()
		}
		t0 = time.Now()
		for i := 0; i < ng; i++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			for j := range b.Seqs {
				toks[j] = sample.Argmax(b.Seqs[j].Out[:cfg.Vocab])
				b.Seqs[j].Tokens, b.Seqs[j].Logits = toks[j:j+1], 1
			}
			if err := m.Forward(b); err != nil {
				return err
			}
		}
		decode := time.Since(t0)
		if experts != nil && r >= 0 {
			expertRead += experts.ExpertBytes() - e0
		}
		if r < 0 && ino != 0 {
			rep.TouchedWarmup = mappedRSS(ino)
		}
		// The machine's read bandwidth over the same bytes, measured
		// right after the decode it bounds.
		t0 = time.Now()
		kernels.StreamRead(streamPool, weights)
		stream := float64(rep.WeightBytesTok) / time.Since(t0).Seconds() / 1e9
		if r < 0 {
			continue
		}
		rep.StreamAll = append(rep.StreamAll, stream)
		rep.PrefillAll = append(rep.PrefillAll, float64(*p**seqs)/prefill.Seconds())
		rep.DecodeAll = append(rep.DecodeAll, float64(*g**seqs)/decode.Seconds())
		if !*asJSON {
			fmt.Fprintf(os.Stderr, "rep %d: prefill %.2f tok/s, decode %.2f tok/s\n", r+1, rep.PrefillAll[r], rep.DecodeAll[r])
		}
	}
	rep.PrefillTokS = median(rep.PrefillAll)
	rep.DecodeTokS = median(rep.DecodeAll)
	rep.PeakRSSBytes = peakRSS()
	rep.RSSBytes, rep.RSSAnonBytes, rep.RSSHugeBytes = rssNow()
	rep.RSSMappedBytes = rep.RSSBytes - rep.RSSAnonBytes
	// A step reads the weights once and each sequence's whole KV cache
	// (attention reads every cached position, or the window's): at the
	// decode's mean depth, that is the cache of that many positions.
	if experts != nil && *reps > 0 && *g > 0 {
		// The weights a step reads: all but the experts' stacked tensors,
		// plus the experts routing chose (measured), against the active
		// parameters (used/count of every stack).
		rep.ExpertBytesAll = expertStacks(l.Source, cfg)
		rep.ExpertBytesStep = expertRead / int64(*reps**g)
		rep.WeightBytesTok += rep.ExpertBytesStep - rep.ExpertBytesAll
		rep.ActiveBytes, _, _ = activeWeights(l.Source, cfg)
	}
	depth := *p + (*g+1)/2
	rep.KVBytesStep = int64(*seqs) * m.KVBytes(model.StateOptions{Context: depth, KVType: kt})
	steps := rep.DecodeTokS / float64(*seqs)
	rep.DecodeBandwidth = float64(rep.WeightBytesTok+rep.KVBytesStep) * steps / 1e9
	rep.StreamGBs = median(rep.StreamAll)
	rep.DecodeOfStream = rep.DecodeBandwidth / rep.StreamGBs
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(rep)
	}
	fmt.Printf("model      %s (%s, %d layers, dim %d)\n", rep.Model, cfg.Arch, cfg.Layers, cfg.Dim)
	fmt.Printf("threads    %d · kernels %s · %s · %d sequence(s) per batch\n", rep.Threads, rep.KernelTier, rep.GoVersion, rep.Seqs)
	fmt.Printf("prefill    %.2f tok/s median of %d (min %.2f, max %.2f), %d tokens\n", rep.PrefillTokS, *reps, minOf(rep.PrefillAll), maxOf(rep.PrefillAll), *p)
	fmt.Printf("decode     %.2f tok/s median of %d (min %.2f, max %.2f), %d tokens\n", rep.DecodeTokS, *reps, minOf(rep.DecodeAll), maxOf(rep.DecodeAll), *g)
	fmt.Printf("reads      %s per decode step (weights %s + KV cache %s at depth %d) → %.2f GB/s, %.0f%% of the %.2f GB/s a plain read of the weights reaches (median of %d)\n",
		humanBytes(rep.WeightBytesTok+rep.KVBytesStep), humanBytes(rep.WeightBytesTok), humanBytes(rep.KVBytesStep), depth,
		rep.DecodeBandwidth, 100*rep.DecodeOfStream, rep.StreamGBs, *reps)
	if rep.ExpertBytesAll > 0 {
		fmt.Printf("experts    %s of the experts' %s read per decode step (routing, measured); the weights read per step are %.1f%% of the active-parameter %s\n",
			humanBytes(rep.ExpertBytesStep), humanBytes(rep.ExpertBytesAll), 100*float64(rep.WeightBytesTok)/float64(rep.ActiveBytes), humanBytes(rep.ActiveBytes))
	}
	if rep.TouchedFirst > 0 {
		fmt.Printf("touched    %s of the model file mapped in after the first step (%d prompt tokens; routed experts %s of it), %s after the warm-up (%d+%d tokens)\n",
			humanBytes(rep.TouchedFirst), min(*p, *step), humanBytes(rep.ExpertBytesFirst), humanBytes(rep.TouchedWarmup), warmP, warmG)
	}
	fmt.Printf("memory     at a %d-token context: resident %s = %s mapped (weights) + %s private; peak %s\n",
		rep.Context, humanBytes(rep.RSSBytes), humanBytes(rep.RSSMappedBytes), humanBytes(rep.RSSAnonBytes), humanBytes(rep.PeakRSSBytes))
	if *path != "" && rep.RSSMappedBytes > 0 {
		fmt.Printf("pages      %.0f%% of the mapped weights in 2 MiB pages", 100*float64(rep.RSSHugeBytes)/float64(rep.RSSMappedBytes))
		switch {
		case rep.RSSHugeBytes < rep.RSSMappedBytes/2:
			fmt.Print(" (decode is faster from a tmpfs mounted huge=within_size)")
		case smaps.PartlyHuge(rep.RSSMappedBytes, rep.RSSHugeBytes):
			fmt.Print(" (the tmpfs ran short of free 2 MiB blocks when the file was written; for the best decode write it again after `echo 1 > /proc/sys/vm/compact_memory`)")
		}
		fmt.Println()
	}
	return nil
}

// expertStacks is the bytes of a mixture of experts' stacked expert
// tensors (3-D, expert_count last), 0 for a dense model.
func expertStacks(src model.Source, cfg *model.Config) int64 {
	n, ok := src.Uint(cfg.Key(model.KeyExpertCount))
	if !ok || n == 0 {
		return 0
	}
	var b int64
	for _, name := range src.TensorNames() {
		if t, _ := src.LookupTensor(name); len(t.Shape) == 3 && uint64(t.Shape[2]) == n {
			b += t.Bytes()
		}
	}
	return b
}

// decodeWeights is what one decode step reads: every tensor except the
// token embedding, of which only one row is read (unless it doubles as the
// output projection).
func decodeWeights(src model.Source) [][]byte {
	var ws [][]byte
	_, untied := src.LookupTensor("output.weight")
	for _, name := range src.TensorNames() {
		t, _ := src.LookupTensor(name)
		if name == "token_embd.weight" && untied {
			continue
		}
		ws = append(ws, t.Pieces()...)
	}
	return ws
}

// mappedRSS is how much of the file with inode ino this process has
// mapped in: the Rss of its mappings of it in /proc/self/smaps (0 if that
// cannot be read).
func mappedRSS(ino uint64) int64 {
	rss, _ := smaps.File(ino)
	return rss
}

// rssNow reads this process's resident memory and the anonymous (private:
// heap, KV cache, stacks) part of it from /proc/self/smaps_rollup; the rest
// is mapped file pages, here the model's weights, of which huge is mapped
// with 2 MiB pages.
func rssNow() (rss, anon, huge int64) {
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		return 0, 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Rss:":
			rss = kb * 1024
		case "Anonymous:":
			anon = kb * 1024
		case "FilePmdMapped:", "ShmemPmdMapped:":
			huge += kb * 1024
		}
	}
	return rss, anon, huge
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minOf(xs []float64) float64 { s := append([]float64(nil), xs...); sort.Float64s(s); return s[0] }
func maxOf(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)-1]
}

// peakRSS reads VmHWM (peak resident set, including mapped file pages) of this process.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
