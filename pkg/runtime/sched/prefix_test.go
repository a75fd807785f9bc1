package sched

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/corelm/corelm/internal/leakcheck"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/runtime/gemma2"
	"github.com/corelm/corelm/pkg/runtime/internal/runtimetest"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/llama"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/quantize"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/synth"
)

// loadSynth binds the synthetic tiny llama (Q8_0 weights, heads 32 wide so
// a q8_0 KV cache fits).
func loadSynth(tb testing.TB) model.Model {
	tb.Helper()
	return loadShape(tb, synth.Presets["tiny-llama"])
}

// loadShape binds a synthetic model of shape sh with Q8_0 weights.
func loadShape(tb testing.TB, sh synth.Shape) model.Model {
	tb.Helper()
	scheme, err := quantize.ParseScheme("Q8_0")
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := synth.Write(&buf, sh, "tiny", scheme, 1); err != nil {
		tb.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		tb.Fatal(err)
	}
	var m model.Model
	env := model.Env{Pool: runtimetest.Pool(tb, 2)}
	switch sh.Arch {
	case "gemma2":
		m, err = gemma2.New(model.FromGGUF(f), env)
	default:
		m, err = llama.New(model.FromGGUF(f), env)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// output is what a client sees of a generation: tokens and logprobs.
type output struct {
	toks  []int32
	lps   []sample.TokenLogprob
	top   [][]sample.TokenLogprob
	final *Final
}

func run(t *testing.T, s *Scheduler, req Request) output {
	t.Helper()
	h, err := s.Submit(t.Context(), req)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	var o output
	for {
		ev, err := h.Recv(t.Context())
		if err == io.EOF {
			return o
		}
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		switch ev.Kind {
		case EventToken:
			o.toks = append(o.toks, ev.Token)
			if ev.Logprob != nil {
				o.lps = append(o.lps, *ev.Logprob)
			}
			o.top = append(o.top, ev.Top)
		case EventFinal:
			o.final = ev.Final
		}
	}
}

// runAlone runs each request by itself on a fresh one-sequence scheduler
// of cfg: the output it must also have when it shares a scheduler.
func runAlone(t *testing.T, m model.Model, cfg Config, reqs []Request) []output {
	t.Helper()
	cfg.MaxSeqs = 1
	want := make([]output, len(reqs))
	for i, r := range reqs {
		s := New(m, cfg)
		want[i] = run(t, s, r)
		shutdown(t, s)
	}
	return want
}

func (o output) equal(p output) bool {
	return slices.Equal(o.toks, p.toks) && slices.Equal(o.lps, p.lps) &&
		slices.EqualFunc(o.top, p.top, func(a, b []sample.TokenLogprob) bool { return slices.Equal(a, b) })
}

// sharedPrompt is BOS, prefix-1 tokens every variant shares, then a tail of
// its own.
func sharedPrompt(prefix, tail, variant, vocab int) []int32 {
	p := []int32{1}
	for j := 1; j < prefix; j++ {
		p = append(p, int32(3+(j*37)%(vocab-10)))
	}
	for j := range tail {
		p = append(p, int32(3+(variant*101+j*13)%(vocab-10)))
	}
	return p
}

// TestPrefixReuseEqualsUncached: a second request sharing a prefix with a
// finished one reuses its KV (cached_tokens counts it, whole blocks and the
// part of a block the prefix ends in) and its greedy tokens and logprobs
// are those of a run without the cache.
func TestPrefixReuseEqualsUncached(t *testing.T) {
	leakcheck.Check(t)
	stories, tiny := loadStories(t, 2), loadSynth(t)
	tests := []struct {
		name   string
		m      model.Model
		kv     kvcache.Type
		prefix int
	}{
		{"stories f16 200", stories, kvcache.F16, 200}, // 3 blocks and 8 positions
		{"stories f16 128", stories, kvcache.F16, 128}, // ends on a block boundary
		{"stories f16 13", stories, kvcache.F16, 13},   // inside the first block
		// stories' heads are 8 wide: no q8_0 cache; the synthetic model's are 32.
		{"synth f16 200", tiny, kvcache.F16, 200},
		{"synth q8_0 200", tiny, kvcache.Q8_0, 200},
		{"synth q8_0 77", tiny, kvcache.Q8_0, 77},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vocab := tt.m.Config().Vocab
			req := func(variant int) Request {
				return Request{Prompt: sharedPrompt(tt.prefix, 20, variant, vocab), MaxTokens: 16, Logprobs: true, TopLogprobs: 3}
			}
			plain := New(tt.m, Config{MaxSeqs: 2, KVType: tt.kv, Context: 512})
			want := run(t, plain, req(2))
			shutdown(t, plain)
			if want.final.Usage.CachedTokens != 0 {
				t.Fatalf("cached tokens without a cache: %d", want.final.Usage.CachedTokens)
			}

			s := New(tt.m, Config{MaxSeqs: 2, KVType: tt.kv, Context: 512, CacheBudget: 1 << 30})
			defer shutdown(t, s)
			first := run(t, s, req(1))
			if first.final.Usage.CachedTokens != 0 {
				t.Errorf("first request: %d cached tokens from an empty cache", first.final.Usage.CachedTokens)
			}
			got := run(t, s, req(2))
			if c := got.final.Usage.CachedTokens; c != tt.prefix {
				t.Errorf("cached tokens %d, want the shared prefix %d", c, tt.prefix)
			}
			if !got.equal(want) {
				t.Errorf("with the cache:\n%v %v\nwithout:\n%v %v", got.toks, got.lps, want.toks, want.lps)
			}
			// The same prompt again: all but its last token come from the cache.
			again := run(t, s, req(2))
			if c, n := again.final.Usage.CachedTokens, len(req(2).Prompt)-1; c != n {
				t.Errorf("a repeated prompt: %d cached tokens, want %d", c, n)
			}
			if !again.equal(want) {
				t.Errorf("a repeated prompt differs: %v, want %v", again.toks, want.toks)
			}
			// An opted-out request neither uses nor counts the cache.
			r := req(2)
			r.NoCache = true
			if out := run(t, s, r); out.final.Usage.CachedTokens != 0 || !out.equal(want) {
				t.Errorf("opted out: %d cached tokens, tokens %v", out.final.Usage.CachedTokens, out.toks)
			}
			if st := s.Stats(); st.CacheHits != 2 || st.CacheMisses != 1 || st.CacheBytes == 0 {
				t.Errorf("stats %+v: want 2 hits, 1 miss, cached bytes", st)
			}
		})
	}
}

// TestAdmitsWithoutMaxTokens: requests without max_tokens take a slot for
// their prompt, not the whole context, so a pool of one context admits all
// eight at once (no queue: a refusal would fail the test); they run to the
// end, preempting one another as the pool fills, with the output each has
// alone.
func TestAdmitsWithoutMaxTokens(t *testing.T) {
	leakcheck.Check(t)
	m := loadStories(t, 2)
	const ctx = 512
	probe := New(m, Config{Context: ctx})
	pool := probe.bytesFor(ctx)
	shutdown(t, probe)
	reqs := make([]Request, 8)
	for i := range reqs {
		reqs[i] = Request{Prompt: sharedPrompt(3, 12, i, m.Config().Vocab), StopTokens: []int32{2}}
	}
	want := runAlone(t, m, Config{Context: ctx}, reqs)
	for _, cache := range []int64{0, pool} {
		t.Run(fmt.Sprintf("cache %d", cache), func(t *testing.T) {
			// Buffer: each sequence, unread, pauses after a few tokens, inside
			// its first block, until all eight are in: otherwise a fast host
			// (or a descheduled test) lets the first ones grow into a second
			// block before the last is submitted, and the full pool, with no
			// queue, refuses it.
			s := New(m, Config{MaxSeqs: 8, MaxQueue: -1, Context: ctx, KVBudget: pool, CacheBudget: cache, Buffer: 4})
			defer shutdown(t, s)
			hs := make([]*Handle, len(reqs))
			for i, r := range reqs {
				h, err := s.Submit(t.Context(), r)
				if err != nil {
					t.Fatalf("request %d refused: %v", i, err)
				}
				hs[i] = h
			}
			var wg sync.WaitGroup
			got := make([]output, len(reqs))
			for i, h := range hs {
				wg.Go(func() { got[i] = drainOutput(t, h) })
			}
			wg.Wait()
			for i := range reqs {
				if !got[i].equal(want[i]) {
					t.Errorf("request %d: %v, alone %v", i, got[i].toks, want[i].toks)
				}
			}
			st := s.Stats()
			t.Logf("preempted %d, hits %d, cached tokens %d", st.Preempted, st.CacheHits, st.CachedTokens)
			if st.Rejected != 0 || st.KVBytesInUse != 0 {
				t.Errorf("stats after the run: %+v", st)
			}
		})
	}
}

// TestPreemptionLosesNothing: long generations exhaust a small pool; the
// youngest sequences are preempted and resume by recomputing, and every
// output (greedy and seeded sampling) equals an unpreempted run.
func TestPreemptionLosesNothing(t *testing.T) {
	leakcheck.Check(t)
	m := loadStories(t, 2)
	const ctx = 512
	probe := New(m, Config{Context: ctx})
	pool := probe.bytesFor(240) // one request's whole length, not three
	shutdown(t, probe)
	reqs := make([]Request, 3)
	for i := range reqs {
		reqs[i] = Request{Prompt: sharedPrompt(2, 38, i, m.Config().Vocab), MaxTokens: 200, Logprobs: true}
	}
	reqs[1].Sampling = sample.Params{Temperature: 0.9, TopK: 40, Seed: 7, RepeatPenalty: 1.1}
	want := runAlone(t, m, Config{Context: ctx}, reqs)
	for _, cache := range []int64{0, pool / 2} {
		t.Run(fmt.Sprintf("cache %d", cache), func(t *testing.T) {
			s := New(m, Config{MaxSeqs: 3, Context: ctx, KVBudget: pool, CacheBudget: cache})
			defer shutdown(t, s)
			hs := submitAll(t, s, reqs...)
			for i, h := range hs {
				got := drainOutput(t, h)
				if !slices.Equal(got.toks, want[i].toks) {
					t.Errorf("request %d: %v, unpreempted %v", i, got.toks, want[i].toks)
					continue
				}
				var worst float64
				for j := range got.lps {
					worst = max(worst, math.Abs(float64(got.lps[j].Logprob-want[i].lps[j].Logprob)))
				}
				t.Logf("request %d: largest logprob difference %.3g", i, worst)
				if worst > 1e-5 { // recomputed in prefill batches, decoded one row at a time
					t.Errorf("request %d: logprobs differ by up to %.3g", i, worst)
				}
			}
			if st := s.Stats(); st.Preempted == 0 {
				t.Errorf("no preemption in a pool of %d bytes: %+v", pool, st)
			}
		})
	}
}

// TestCacheBudgetHolds: a stream of distinct prompts never keeps more
// cached bytes than the cache budget; the oldest blocks are evicted.
func TestCacheBudgetHolds(t *testing.T) {
	leakcheck.Check(t)
	m := loadStories(t, 2)
	probe := New(m, Config{Context: 256})
	budget := probe.bytesFor(100) // 4 blocks
	shutdown(t, probe)
	s := New(m, Config{MaxSeqs: 2, Context: 256, CacheBudget: budget})
	defer shutdown(t, s)
	var most int64
	for i := range 24 {
		run(t, s, Request{Prompt: sharedPrompt(1, 40+i%7, i, m.Config().Vocab), MaxTokens: 8})
		st := s.Stats()
		most = max(most, st.CacheBytes)
		if st.CacheBytes > budget {
			t.Fatalf("after request %d: %d cached bytes, budget %d", i, st.CacheBytes, budget)
		}
	}
	st := s.Stats()
	t.Logf("most cached %d of %d bytes; %d evictions", most, budget, st.CacheEvictions)
	if st.CacheEvictions == 0 || most == 0 {
		t.Errorf("stats %+v: want evictions and a used cache", st)
	}
}

func drainOutput(t *testing.T, h *Handle) output {
	t.Helper()
	var o output
	for {
		ev, err := h.Recv(t.Context())
		if err == io.EOF {
			return o
		}
		if err != nil {
			t.Errorf("recv: %v", err)
			return o
		}
		switch ev.Kind {
		case EventToken:
			o.toks = append(o.toks, ev.Token)
			if ev.Logprob != nil {
				o.lps = append(o.lps, *ev.Logprob)
			}
			o.top = append(o.top, ev.Top)
		case EventFinal:
			o.final = ev.Final
		}
	}
}

// loadGemma2 binds the synthetic tiny model as Gemma-2 with a window of
// 32 positions on every other layer, served at 512: its sliding layers
// slide after half a block.
func loadGemma2(t *testing.T) model.Model {
	sh := synth.Presets["tiny-llama"]
	sh.Arch, sh.SlidingWin, sh.Context = "gemma2", 32, 512
	return loadShape(t, sh)
}

// TestSlidingWindowReuse: Gemma-2's sliding-window layers keep blocks of
// their own, given up once out of the window, so their memory stops at a
// window and a step; a request reuses a cached prefix (longer than the
// window, ending mid-block, or inside the first block) with greedy tokens
// and logprobs identical to an uncached run, in f16 and q8_0.
func TestSlidingWindowReuse(t *testing.T) {
	leakcheck.Check(t)
	m := loadGemma2(t)
	const ctx, step = 512, 16
	probe := New(m, Config{Context: ctx, StepTokens: step})
	g := probe.geo
	shutdown(t, probe)
	// 256 positions: 4 blocks of the global layers, of the sliding ones
	// only the 2 a window of 32 and a step of 16 can span (both groups
	// have 2 layers: their blocks are the same size).
	block := g.BytesFor(64) / 2
	if got := g.BytesFor(256); got != (4+2)*block {
		t.Fatalf("BytesFor(256) = %d with blocks of %d: the sliding layers do not stop at the window", got, block)
	}
	tests := []struct {
		name   string
		kv     kvcache.Type
		prefix int
	}{
		{"f16 200", kvcache.F16, 200}, // 3 blocks and 8 positions, past the window
		{"f16 128", kvcache.F16, 128}, // on a block boundary
		{"f16 20", kvcache.F16, 20},   // inside the first block and the window
		{"q8_0 200", kvcache.Q8_0, 200},
		{"q8_0 77", kvcache.Q8_0, 77},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vocab := m.Config().Vocab
			req := func(variant int) Request {
				return Request{Prompt: sharedPrompt(tt.prefix, 20, variant, vocab), MaxTokens: 40, Logprobs: true, TopLogprobs: 3}
			}
			cfg := Config{MaxSeqs: 2, KVType: tt.kv, Context: ctx, StepTokens: step}
			plain := New(m, cfg)
			want := run(t, plain, req(2))
			shutdown(t, plain)
			cfg.CacheBudget = 1 << 30
			s := New(m, cfg)
			defer shutdown(t, s)
			run(t, s, req(1))
			got := run(t, s, req(2))
			if c := got.final.Usage.CachedTokens; c != tt.prefix {
				t.Errorf("cached tokens %d, want the shared prefix %d", c, tt.prefix)
			}
			if !got.equal(want) {
				t.Errorf("with the cache:\n%v %v\nwithout:\n%v %v", got.toks, got.lps, want.toks, want.lps)
			}
			again := run(t, s, req(2))
			if c, n := again.final.Usage.CachedTokens, len(req(2).Prompt)-1; c != n || !again.equal(want) {
				t.Errorf("a repeated prompt: %d cached tokens (want %d), tokens %v, want %v", c, n, again.toks, want.toks)
			}
		})
	}
}

// TestSlidingWindowPreempts: Gemma-2 sequences that outgrow a small pool
// are preempted and resume, from the cache as far as it holds them, with
// the output each has alone; nothing is held at the end.
func TestSlidingWindowPreempts(t *testing.T) {
	leakcheck.Check(t)
	m := loadGemma2(t)
	const ctx, step = 512, 16
	probe := New(m, Config{Context: ctx, StepTokens: step})
	// Two sequences grow to 5 blocks; the third does not fit beside them.
	pool := 2 * probe.bytesFor(270)
	shutdown(t, probe)
	reqs := make([]Request, 3)
	for i := range reqs {
		reqs[i] = Request{Prompt: sharedPrompt(60, 10, i, m.Config().Vocab), MaxTokens: 200}
	}
	want := runAlone(t, m, Config{Context: ctx, StepTokens: step}, reqs)
	s := New(m, Config{MaxSeqs: 3, Context: ctx, StepTokens: step, KVBudget: pool, CacheBudget: pool})
	defer shutdown(t, s)
	hs := submitAll(t, s, reqs...)
	for i, h := range hs {
		got := drainOutput(t, h)
		if !slices.Equal(got.toks, want[i].toks) {
			t.Errorf("request %d: %v, alone %v", i, got.toks, want[i].toks)
		}
	}
	st := s.Stats()
	t.Logf("%+v", st)
	if st.Preempted == 0 || st.KVBytesInUse != 0 || st.CacheHits == 0 {
		t.Errorf("stats %+v: want preemptions, hits, nothing held at the end", st)
	}
}

// TestStartAllocatesNoKV: starting a scheduler for Gemma-2 allocates no KV
// memory (it used to allocate a sequence's rings twice, to learn the
// geometry and to load the cache: ~0.7 GB of zero pages for 9B); KV memory
// comes block by block as sequences grow.
func TestStartAllocatesNoKV(t *testing.T) {
	leakcheck.Check(t)
	sh := synth.Presets["tiny-llama"]
	sh.Arch, sh.SlidingWin = "gemma2", 2048
	m := loadShape(t, sh)
	cfg := Config{Context: 4096, CacheBudget: 1 << 30, CacheDir: t.TempDir(), CacheKey: "k"}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s := New(m, cfg)
	runtime.ReadMemStats(&after)
	defer shutdown(t, s)
	ring := s.geo.RingBytes() // what one sequence's rings would take
	if ring < 1<<20 {
		t.Fatalf("rings of %d bytes: the window does not slide", ring)
	}
	grew := int64(after.TotalAlloc - before.TotalAlloc)
	t.Logf("start allocated %d bytes; a sequence's rings would be %d", grew, ring)
	if grew > ring/4 {
		t.Errorf("starting the scheduler allocated %d bytes (a sequence's rings: %d)", grew, ring)
	}
}

// TestCacheSurvivesRestart: a scheduler with a cache directory writes its
// prefixes at shutdown; the next one (a restart) reuses them, with the same
// output; a corrupt entry is reported and ignored, and the output is still
// right.
func TestCacheSurvivesRestart(t *testing.T) {
	leakcheck.Check(t)
	m := loadStories(t, 2)
	dir := t.TempDir()
	var mu sync.Mutex
	var warned []string
	cfg := Config{MaxSeqs: 2, Context: 512, CacheBudget: 1 << 24, CacheDir: dir, CacheKey: "stories f16 test",
		CacheFileError: func(path string, err error) {
			mu.Lock()
			warned = append(warned, path+": "+err.Error())
			mu.Unlock()
		}}
	req := Request{Prompt: sharedPrompt(150, 10, 1, m.Config().Vocab), MaxTokens: 12, Logprobs: true}
	plain := New(m, Config{MaxSeqs: 1, Context: 512})
	want := run(t, plain, req)
	shutdown(t, plain)

	first := New(m, cfg)
	run(t, first, req)
	shutdown(t, first)

	second := New(m, cfg)
	got := run(t, second, req)
	shutdown(t, second)
	if c := got.final.Usage.CachedTokens; c < 128 || !got.equal(want) {
		t.Errorf("after a restart: %d cached tokens (want ≥ 128), tokens %v, want %v", c, got.toks, want.toks)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*", "*.kvb"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no persisted blocks: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		raw[len(raw)-100] ^= 1
		if err := os.WriteFile(f, raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	third := New(m, cfg)
	got = run(t, third, req)
	shutdown(t, third)
	mu.Lock()
	defer mu.Unlock()
	if len(warned) != len(files) {
		t.Errorf("%d warnings for %d corrupt files: %v", len(warned), len(files), warned)
	}
	if c := got.final.Usage.CachedTokens; c != 0 || !got.equal(want) {
		t.Errorf("with corrupt files: %d cached tokens, tokens %v, want %v", c, got.toks, want.toks)
	}
}

// TestEightShapedAdmitsEight: with the 8B model's KV geometry (32 layers,
// 8 KV heads of 128), the served context of 8192 and the KV budget the
// service plans on a 6 GiB box (~1 GiB: one whole context), eight requests
// without max_tokens are all admitted at once (no queue: a refusal fails
// the test): each takes a block for its prompt, not a whole context.
func TestEightShapedAdmitsEight(t *testing.T) {
	leakcheck.Check(t)
	m := newFakeModel()
	m.cfg.Layers, m.cfg.KVHeads, m.cfg.HeadDim, m.cfg.Heads, m.cfg.Context = 32, 8, 128, 32, 131072
	m.gate = make(chan struct{})
	const ctx = 8192
	budget := model.KVBytes(&m.cfg, model.StateOptions{Context: ctx}, nil) // 1 GiB
	s := New(m, Config{MaxSeqs: 8, MaxQueue: -1, Context: ctx, KVBudget: budget})
	var hs []*Handle
	for i := range 8 {
		h, err := s.Submit(t.Context(), Request{Prompt: testPrompt(i, 100)})
		if err != nil {
			t.Fatalf("request %d refused: %v", i, err)
		}
		hs = append(hs, h)
	}
	if st := s.Stats(); st.Active != 8 || st.KVBytesInUse > budget/8 {
		t.Errorf("stats %+v: want 8 active holding a block each", st)
	}
	for _, h := range hs {
		h.Cancel()
	}
	release(t, m, s, hs...)
}

// TestSharedBlocksAdmittedOnce: admission counts a block several running
// sequences share once. Four requests sharing a 192-token prefix, each
// needing 4 blocks, are all admitted to a pool of 8 blocks while the
// first holds the prefix (3 shared blocks + 4 own), where counting per
// sequence (16) would refuse the third; as they grow past the pool, the
// youngest are preempted, the pool's blocks and cache never pass the
// budget, and every output is the one it has alone.
func TestSharedBlocksAdmittedOnce(t *testing.T) {
	leakcheck.Check(t)
	m := loadSynth(t)
	const ctx = 512
	probe := New(m, Config{Context: ctx})
	budget := 8 * probe.bytesFor(64)
	shutdown(t, probe)
	reqs := make([]Request, 4)
	for i := range reqs {
		reqs[i] = Request{Prompt: sharedPrompt(192, 8, i, m.Config().Vocab), MaxTokens: 100}
	}
	want := runAlone(t, m, Config{Context: ctx}, reqs)
	var s *Scheduler
	var most atomic.Int64
	cfg := Config{MaxSeqs: 4, MaxQueue: -1, Context: ctx, KVBudget: budget, CacheBudget: budget,
		Buffer: 4, // the first request, unread, pauses after a few tokens, holding its blocks
		Hooks: Hooks{Step: func(*StepInfo) {
			st := s.pool.Stats()
			if used := st.InUseBytes + st.CacheBytes; used > most.Load() {
				most.Store(used)
			}
		}}}
	s = New(m, cfg)
	defer shutdown(t, s)
	if per := 4 * s.bytesFor(len(reqs[0].Prompt)+1); per <= budget {
		t.Fatalf("counted per sequence, %d bytes fit the budget of %d: the test proves nothing", per, budget)
	}
	first := submitAll(t, s, reqs[0])[0]
	// Its second token comes from a step after the prefill: the prompt's
	// full blocks are sealed by then.
	var head []int32
	for len(head) < 2 {
		ev, err := first.Recv(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == EventToken {
			head = append(head, ev.Token)
		}
	}
	hs := []*Handle{first}
	for i, r := range reqs[1:] {
		h, err := s.Submit(t.Context(), r)
		if err != nil {
			t.Fatalf("request %d sharing the prefix refused: %v", i+1, err)
		}
		hs = append(hs, h)
	}
	if st := s.Stats(); st.Active != 4 || st.KVBytesInUse > budget {
		t.Errorf("stats %+v: want 4 active within %d bytes", st, budget)
	}
	got := make([]output, len(hs))
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Go(func() { got[i] = drainOutput(t, h) }) // all at once: an unread sequence pauses
	}
	wg.Wait()
	got[0].toks = append(head, got[0].toks...)
	for i := range reqs {
		if !slices.Equal(got[i].toks, want[i].toks) {
			t.Errorf("request %d: %v, alone %v", i, got[i].toks, want[i].toks)
		}
	}
	st := s.Stats()
	t.Logf("preempted %d, hits %d, cached tokens %d, most pool bytes %d of %d", st.Preempted, st.CacheHits, st.CachedTokens, most.Load(), budget)
	if most.Load() > budget || st.Preempted == 0 || st.KVBytesInUse != 0 {
		t.Errorf("pool held up to %d bytes of %d, %d preemptions (want some), %d bytes in use at the end", most.Load(), budget, st.Preempted, st.KVBytesInUse)
	}
}
