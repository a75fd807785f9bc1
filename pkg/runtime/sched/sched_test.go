package sched

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corelm/corelm/internal/leakcheck"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sample"
)

// collect submits req and reads every event, returning the tokens and the
// final event.
func collect(t *testing.T, s *Scheduler, req Request) ([]int32, *Final) {
	t.Helper()
	h, err := s.Submit(t.Context(), req)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return drain(t, h)
}

func drain(t *testing.T, h *Handle) ([]int32, *Final) {
	t.Helper()
	var toks []int32
	var final *Final
	for {
		ev, err := h.Recv(t.Context())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		switch ev.Kind {
		case EventToken:
			if final != nil {
				t.Fatal("token after the final event")
			}
			toks = append(toks, ev.Token)
		case EventFinal:
			final = ev.Final
		}
	}
	if final == nil {
		t.Fatal("stream ended without a final event")
	}
	return toks, final
}

func shutdown(t *testing.T, s *Scheduler) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func TestConcurrentEqualsSolo(t *testing.T) {
	leakcheck.Check(t)
	reqs := make([]Request, 8)
	for i := range reqs {
		reqs[i] = Request{Prompt: testPrompt(i, 5+i*23), MaxTokens: 10 + 3*i}
	}
	want := make([][]int32, len(reqs))
	for i, r := range reqs {
		want[i] = soloFake(t, r)
	}
	m := newFakeModel()
	s := New(m, Config{MaxSeqs: 8, StepTokens: 32})
	defer shutdown(t, s)
	var wg sync.WaitGroup
	got := make([][]int32, len(reqs))
	finals := make([]*Final, len(reqs))
	for i := range reqs {
		wg.Go(func() { got[i], finals[i] = collect(t, s, reqs[i]) })
	}
	wg.Wait()
	for i := range reqs {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("request %d: batched %v, solo %v", i, got[i], want[i])
		}
		if f := finals[i]; f.Reason != FinishLength || f.Usage.CompletionTokens != reqs[i].MaxTokens || f.Usage.PromptTokens != len(reqs[i].Prompt) {
			t.Errorf("request %d: final %+v", i, f)
		}
	}
	if st := s.Stats(); st.Completed != 8 || st.Active != 0 || st.KVBytesInUse != 0 {
		t.Errorf("stats after: %+v", st)
	}
}

func TestStopTokensAndEOG(t *testing.T) {
	leakcheck.Check(t)
	base := Request{Prompt: testPrompt(3, 9), MaxTokens: 20}
	all := soloFake(t, base)
	s := New(newFakeModel(), Config{})
	defer shutdown(t, s)

	req := base
	req.StopTokens = []int32{all[4]}
	toks, f := collect(t, s, req)
	if i := slices.Index(all, all[4]); !slices.Equal(toks, all[:i]) || f.Reason != FinishStop || f.Usage.CompletionTokens != i {
		t.Errorf("stop token: got %v %v, want %v", toks, f.Reason, all[:i])
	}
	req = base
	req.IsEOG = func(t int32) bool { return t == all[2] }
	toks, f = collect(t, s, req)
	if i := slices.Index(all, all[2]); !slices.Equal(toks, all[:i]) || f.Reason != FinishStop {
		t.Errorf("eog: got %v %v, want %v", toks, f.Reason, all[:i])
	}
}

func TestStopStrings(t *testing.T) {
	leakcheck.Check(t)
	base := Request{Prompt: testPrompt(5, 7), MaxTokens: 24}
	all := soloFake(t, base)
	text := lettersOf(all)
	stop := text[6:9]
	cut := len(stop) // first occurrence may be earlier
	for i := 0; i+len(stop) <= len(text); i++ {
		if text[i:i+len(stop)] == stop {
			cut = i
			break
		}
	}
	s := New(newFakeModel(), Config{})
	defer shutdown(t, s)
	req := base
	req.Decoder = letters{}
	req.StopStrings = []string{"#never", stop}
	h, err := s.Submit(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	var final *Final
	for {
		ev, err := h.Recv(t.Context())
		if err == io.EOF {
			break
		}
		if ev.Kind == EventToken {
			got += ev.Text
		}
		if ev.Kind == EventFinal {
			final = ev.Final
			got += final.Text
		}
	}
	if got != text[:cut] || final.Reason != FinishStopSequence || final.StopSequence != stop {
		t.Errorf("text %q reason %v stop %q; want %q before %q", got, final.Reason, final.StopSequence, text[:cut], stop)
	}
	if final.Usage.CompletionTokens != cut+len(stop) {
		t.Errorf("completion tokens %d, want %d", final.Usage.CompletionTokens, cut+len(stop))
	}
}

func TestStopMatcher(t *testing.T) {
	tests := []struct {
		stops  []string
		pieces []string
		want   []string // emitted per push
		match  string
		rest   string
	}{
		{[]string{"END"}, []string{"ab", "cE", "N", "x"}, []string{"ab", "c", "", "ENx"}, "", ""},
		{[]string{"END"}, []string{"abE", "ND", "zz"}, []string{"ab", ""}, "END", ""},
		{[]string{"lo", "hello"}, []string{"hel"}, []string{""}, "", "hel"},
		{[]string{"é!"}, []string{"caf", "é", "!"}, []string{"caf", "", ""}, "é!", ""},
	}
	for _, tt := range tests {
		m := stopMatcher{stops: tt.stops}
		var match string
		for i, p := range tt.pieces {
			out, mt := m.push(p)
			if out != tt.want[i] {
				t.Errorf("%v: push(%q) = %q, want %q", tt.stops, p, out, tt.want[i])
			}
			if mt != "" {
				match = mt
				break
			}
		}
		if match != tt.match || m.flush() != tt.rest {
			t.Errorf("%v: match %q, want %q", tt.stops, match, tt.match)
		}
	}
}

func TestCancelOneLeavesOthers(t *testing.T) {
	leakcheck.Check(t)
	reqs := []Request{
		{Prompt: testPrompt(1, 20), MaxTokens: 40},
		{Prompt: testPrompt(2, 30), MaxTokens: 200},
		{Prompt: testPrompt(3, 10), MaxTokens: 40},
	}
	want0, want2 := soloFake(t, reqs[0]), soloFake(t, reqs[2])
	m := newFakeModel()
	m.gate = make(chan struct{})
	s := New(m, Config{MaxSeqs: 4})
	ctx, cancel := context.WithCancel(t.Context())
	h1, err := s.Submit(ctx, reqs[1])
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var got0, got2 []int32
	wg.Go(func() { got0, _ = collect(t, s, reqs[0]) })
	wg.Go(func() { got2, _ = collect(t, s, reqs[2]) })
	// Let a few steps run, read a token of h1, then cancel it.
	for range 3 {
		m.gate <- struct{}{}
	}
	if _, err := h1.Recv(t.Context()); err != nil {
		t.Fatal(err)
	}
	kvBefore := s.Stats().KVBytesInUse
	cancel()
	// context.AfterFunc runs the cancellation on its own goroutine; hold
	// the steps until it has, so the test checks the drop, not that race.
	for h1.seq.cancelled.Load() == nil {
		runtime.Gosched()
	}
	// Run steps until the cancelled request's final arrives.
	finalCh := make(chan *Final, 1)
	go func() {
		_, f := drain(t, h1)
		finalCh <- f
	}()
	var f1 *Final
	for f1 == nil {
		select {
		case f1 = <-finalCh:
		case m.gate <- struct{}{}:
		}
	}
	if f1.Reason != FinishCancelled || !errors.Is(f1.Err, context.Canceled) {
		t.Errorf("cancelled final: %+v", f1)
	}
	// The others may have taken a block each since: KV is paged.
	if st := s.Stats(); st.KVBytesInUse > kvBefore+m.blockBytes() || st.Active > 2 || st.Cancelled != 1 {
		t.Errorf("after cancel: %+v (kv before %d)", st, kvBefore)
	}
	close(m.gate)
	wg.Wait()
	shutdown(t, s)
	if !slices.Equal(got0, want0) || !slices.Equal(got2, want2) {
		t.Errorf("others changed: %v / %v, want %v / %v", got0, got2, want0, want2)
	}
}

func TestOverload(t *testing.T) {
	leakcheck.Check(t)
	m := newFakeModel()
	m.gate = make(chan struct{})
	s := New(m, Config{MaxSeqs: 1, MaxQueue: 1})
	req := Request{Prompt: testPrompt(1, 4), MaxTokens: 3}
	hs := submitAll(t, s, req, req)
	_, err := s.Submit(t.Context(), req)
	var oe *OverloadError
	if !errors.Is(err, ErrOverloaded) || !errors.As(err, &oe) || oe.RetryAfter <= 0 {
		t.Fatalf("third submit: %v, want ErrOverloaded with a retry hint", err)
	}
	if st := s.Stats(); st.Active != 1 || st.Queued != 1 || st.Rejected != 1 {
		t.Errorf("stats: %+v", st)
	}
	release(t, m, s, hs...)
}

// submitAll submits every request, failing the test on an error.
func submitAll(t *testing.T, s *Scheduler, reqs ...Request) []*Handle {
	t.Helper()
	hs := make([]*Handle, len(reqs))
	for i, req := range reqs {
		h, err := s.Submit(t.Context(), req)
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		hs[i] = h
	}
	return hs
}

// release opens m's gate, reads every handle to its end and shuts s down.
func release(t *testing.T, m *fakeModel, s *Scheduler, hs ...*Handle) {
	t.Helper()
	close(m.gate)
	for _, h := range hs {
		drain(t, h)
	}
	shutdown(t, s)
}

func TestBudgetQueues(t *testing.T) {
	leakcheck.Check(t)
	m := newFakeModel()
	one := m.blockBytes() // 4 + 3 positions take one block
	m.gate = make(chan struct{})
	s := New(m, Config{MaxSeqs: 8, KVBudget: one + one/2, MaxQueue: 4})
	req := Request{Prompt: testPrompt(1, 4), MaxTokens: 3}
	hs := submitAll(t, s, req, req)
	if st := s.Stats(); st.Active != 1 || st.Queued != 1 || st.KVBytesInUse != one {
		t.Errorf("stats: %+v, want 1 active, 1 queued, %d bytes", st, one)
	}
	big := Request{Prompt: testPrompt(1, 4), MaxTokens: 200}
	if _, err := s.Submit(t.Context(), big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("request over the whole budget: %v", err)
	}
	release(t, m, s, hs...)
}

// TestBudgetRefusalIsPrecise: a request whose KV cache alone exceeds the
// budget is refused at once as invalid (ErrTooLarge: retrying cannot help), with the numbers the
// client needs (what it asked, what the budget holds, the max_tokens that
// would fit); one without max_tokens is admitted when the budget holds the
// served context.
func TestBudgetRefusalIsPrecise(t *testing.T) {
	leakcheck.Check(t)
	m := newFakeModel()
	full := m.KVBytes(model.StateOptions{Context: 128, Chunk: DefaultStepTokens})
	tests := []struct {
		name   string
		budget int64
		req    Request
		words  []string // in the error; none: admitted
	}{
		{"no max_tokens, budget holds the context", full, Request{Prompt: testPrompt(1, 4)}, nil},
		// The budget holds whole blocks of 64 positions.
		{"no max_tokens, budget one position short", full - 1, Request{Prompt: testPrompt(1, 4)},
			[]string{"128 positions (prompt 4 + generation up to the served context of 128)", fmt.Sprint(full - 1), "holds 64 positions: ask for max_tokens ≤ 60"}},
		{"max_tokens over the budget", full / 2, Request{Prompt: testPrompt(1, 4), MaxTokens: 100},
			[]string{"104 positions (prompt 4 + max_tokens 100)", "holds 64 positions", "max_tokens ≤ 60"}},
		{"prompt alone over the budget", full / 2, Request{Prompt: testPrompt(1, 70), MaxTokens: 1},
			[]string{"71 positions", "holds 64 positions: shorten the prompt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(m, Config{MaxSeqs: 2, KVBudget: tt.budget, Context: 128})
			defer shutdown(t, s)
			h, err := s.Submit(t.Context(), tt.req)
			if tt.words == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				drain(t, h)
				return
			}
			var oe *OverloadError
			if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrInvalidRequest) || errors.As(err, &oe) {
				t.Fatalf("err = %v, want ErrTooLarge (an invalid request, not an overload)", err)
			}
			for _, w := range tt.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestInvalidRequests(t *testing.T) {
	leakcheck.Check(t)
	s := New(newFakeModel(), Config{Context: 64})
	defer shutdown(t, s)
	tests := []struct {
		name string
		req  Request
		want error
	}{
		{"empty", Request{}, ErrInvalidRequest},
		{"token range", Request{Prompt: []int32{1, fakeVocab}}, ErrInvalidRequest},
		{"negative max", Request{Prompt: []int32{1}, MaxTokens: -1}, ErrInvalidRequest},
		{"stop without decoder", Request{Prompt: []int32{1}, StopStrings: []string{"x"}}, ErrInvalidRequest},
		{"empty stop string", Request{Prompt: []int32{1}, StopStrings: []string{""}, Decoder: letters{}}, ErrInvalidRequest},
		{"long stop string", Request{Prompt: []int32{1}, StopStrings: []string{strings.Repeat("x", MaxStopStringBytes+1)}, Decoder: letters{}}, ErrInvalidRequest},
		{"many stop strings", Request{Prompt: []int32{1}, StopStrings: make([]string, MaxStopStrings+1), Decoder: letters{}}, ErrInvalidRequest},
		{"stop token range", Request{Prompt: []int32{1}, StopTokens: []int32{fakeVocab}}, ErrInvalidRequest},
		{"top_logprobs", Request{Prompt: []int32{1}, TopLogprobs: MaxTopLogprobs + 1}, ErrInvalidRequest},
		{"sampling", Request{Prompt: []int32{1}, Sampling: sample.Params{TopP: 2}}, sample.ErrParams},
		{"too long", Request{Prompt: make([]int32, 64)}, ErrPromptTooLong},
		{"at the limits", Request{Prompt: []int32{1}, MaxTokens: 1, TopLogprobs: MaxTopLogprobs, StopTokens: []int32{fakeVocab - 1},
			StopStrings: []string{strings.Repeat("x", MaxStopStringBytes)}, Decoder: letters{}}, nil},
	}
	for _, tt := range tests {
		h, err := s.Submit(t.Context(), tt.req)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if err == nil {
			drain(t, h)
		}
	}
}

func TestSlowReaderDoesNotStall(t *testing.T) {
	leakcheck.Check(t)
	m := newFakeModel()
	s := New(m, Config{MaxSeqs: 2, Buffer: 4})
	slow, err := s.Submit(t.Context(), Request{Prompt: testPrompt(1, 5), MaxTokens: 50})
	if err != nil {
		t.Fatal(err)
	}
	fastReq := Request{Prompt: testPrompt(2, 5), MaxTokens: 100}
	got, f := collect(t, s, fastReq)
	if len(got) != 100 || f.Reason != FinishLength {
		t.Fatalf("fast request: %d tokens, %v", len(got), f.Reason)
	}
	// The slow one filled its buffer (leaving the final's slot) and paused.
	if n := len(slow.events); n != cap(slow.events)-1 {
		t.Errorf("slow buffer holds %d events, want %d", n, cap(slow.events)-1)
	}
	toks, f := drain(t, slow)
	if want := soloFake(t, Request{Prompt: testPrompt(1, 5), MaxTokens: 50}); !slices.Equal(toks, want) || f.Reason != FinishLength {
		t.Errorf("slow request after draining: %v, want %v", toks, want)
	}
	shutdown(t, s)
}

func TestFairPrefill(t *testing.T) {
	leakcheck.Check(t)
	m := newFakeModel()
	var steps []StepInfo
	s := New(m, Config{MaxSeqs: 4, StepTokens: 16, Hooks: Hooks{Step: func(si *StepInfo) {
		c := *si
		c.Requests = slices.Clone(si.Requests)
		steps = append(steps, c)
	}}})
	m.gate = make(chan struct{})
	short, err := s.Submit(t.Context(), Request{Prompt: testPrompt(1, 3), MaxTokens: 30})
	if err != nil {
		t.Fatal(err)
	}
	m.gate <- struct{}{} // short prefills and samples its first token
	long, err := s.Submit(t.Context(), Request{Prompt: testPrompt(2, 200), MaxTokens: 2})
	if err != nil {
		t.Fatal(err)
	}
	close(m.gate)
	var wg sync.WaitGroup
	wg.Go(func() { drain(t, short) })
	drain(t, long)
	wg.Wait()
	shutdown(t, s)
	// While the long prompt is prefilled, the short stream decodes in
	// every step, and no step exceeds the token budget.
	prefillSteps := 0
	for _, st := range steps {
		if st.DecodeTokens+st.PrefillTokens > 16 {
			t.Errorf("step of %d+%d tokens exceeds the budget", st.DecodeTokens, st.PrefillTokens)
		}
		if st.PrefillTokens > 0 && st.Seqs > 0 && slices.Contains(st.Requests, long.ID()) {
			prefillSteps++
			if !slices.Contains(st.Requests, short.ID()) && len(steps) > 1 {
				t.Errorf("a prefill step left the decoding stream out: %+v", st)
			}
		}
	}
	if prefillSteps < 200/16 {
		t.Errorf("long prompt prefilled in %d steps, want chunks of ≤ 15", prefillSteps)
	}
}

func TestShutdownDrains(t *testing.T) {
	leakcheck.Check(t)
	s := New(newFakeModel(), Config{MaxSeqs: 2})
	var hs []*Handle
	for i := range 4 {
		h, err := s.Submit(t.Context(), Request{Prompt: testPrompt(i, 8), MaxTokens: 20})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Go(func() {
			if toks, f := drain(t, h); len(toks) != 20 || f.Reason != FinishLength {
				t.Errorf("drained request: %d tokens, %v", len(toks), f.Reason)
			}
		})
	}
	shutdown(t, s)
	wg.Wait()
	if _, err := s.Submit(t.Context(), Request{Prompt: []int32{1}}); !errors.Is(err, ErrClosed) {
		t.Errorf("submit after shutdown: %v", err)
	}
}

// TestStopQueued: StopQueued ends the requests still queued at once with
// ErrShed (which is ErrClosed: retryable) and no token, while the running
// one (paused here on its full buffer, so that it is certainly still
// running) drains to its end afterwards.
func TestStopQueued(t *testing.T) {
	leakcheck.Check(t)
	s := New(newFakeModel(), Config{MaxSeqs: 1, MaxQueue: 2, Buffer: 4})
	running, err := s.Submit(t.Context(), Request{Prompt: testPrompt(1, 8), MaxTokens: 20})
	if err != nil {
		t.Fatal(err)
	}
	var queued []*Handle
	for i := range 2 {
		h, err := s.Submit(t.Context(), Request{Prompt: testPrompt(2+i, 8), MaxTokens: 20})
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, h)
	}
	for st := s.Stats(); st.Active != 1 || st.Queued != 2; st = s.Stats() {
		runtime.Gosched()
	}
	stopped := make(chan error, 1)
	go func() { stopped <- s.StopQueued(t.Context()) }()
	for i, h := range queued {
		toks, f := drain(t, h)
		if len(toks) != 0 || f.Reason != FinishCancelled || !errors.Is(f.Err, ErrShed) || !errors.Is(f.Err, ErrClosed) {
			t.Errorf("queued request %d: %d tokens, %v %v; want none, cancelled with ErrShed", i, len(toks), f.Reason, f.Err)
		}
	}
	if _, err := s.Submit(t.Context(), Request{Prompt: []int32{1}}); !errors.Is(err, ErrClosed) {
		t.Errorf("submit after StopQueued: %v", err)
	}
	if toks, f := drain(t, running); len(toks) != 20 || f.Reason != FinishLength {
		t.Errorf("running request: %d tokens, %v; want all 20 (drained)", len(toks), f.Reason)
	}
	if err := <-stopped; err != nil {
		t.Errorf("StopQueued: %v", err)
	}
}

func TestShutdownTimeoutCancels(t *testing.T) {
	leakcheck.Check(t)
	s := New(newFakeModel(), Config{MaxSeqs: 1, Buffer: 4})
	// Nobody reads: the request pauses with a full buffer and cannot finish.
	h, err := s.Submit(t.Context(), Request{Prompt: testPrompt(1, 8), MaxTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	queued, err := s.Submit(t.Context(), Request{Prompt: testPrompt(2, 8), MaxTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("shutdown: %v", err)
	}
	for _, h := range []*Handle{h, queued} {
		if _, f := drain(t, h); f.Reason != FinishCancelled || !errors.Is(f.Err, ErrClosed) {
			t.Errorf("final after forced shutdown: %+v", f)
		}
	}
	if st := s.Stats(); st.Active != 0 || st.Queued != 0 || st.KVBytesInUse != 0 {
		t.Errorf("stats: %+v", st)
	}
}

func TestForwardErrorFailsBatch(t *testing.T) {
	leakcheck.Check(t)
	m := newFakeModel()
	m.fail.Store(true)
	s := New(m, Config{})
	defer shutdown(t, s)
	_, f := collect(t, s, Request{Prompt: testPrompt(1, 4), MaxTokens: 3})
	if f.Reason != FinishError || f.Err == nil {
		t.Errorf("final: %+v", f)
	}
	m.fail.Store(false)
	if toks, f := collect(t, s, Request{Prompt: testPrompt(1, 4), MaxTokens: 3}); len(toks) != 3 || f.Reason != FinishLength {
		t.Errorf("after recovery: %v %+v", toks, f)
	}
}

func TestProgressAndTimings(t *testing.T) {
	leakcheck.Check(t)
	s := New(newFakeModel(), Config{StepTokens: 16, Buffer: 64})
	defer shutdown(t, s)
	h, err := s.Submit(t.Context(), Request{Prompt: testPrompt(1, 100), MaxTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	var progress []int
	var final *Final
	for {
		ev, err := h.Recv(t.Context())
		if err == io.EOF {
			break
		}
		switch ev.Kind {
		case EventProgress:
			if ev.PromptTotal != 100 {
				t.Errorf("progress total %d", ev.PromptTotal)
			}
			progress = append(progress, ev.PromptDone)
		case EventFinal:
			final = ev.Final
		}
	}
	if len(progress) != 6 || !slices.IsSorted(progress) {
		t.Errorf("progress %v, want 6 increasing values", progress)
	}
	tm := final.Timings
	if tm.TTFT <= 0 || tm.TTFT > tm.Total || tm.Queue+tm.Prefill+tm.Decode > tm.Total+time.Millisecond {
		t.Errorf("timings %+v", tm)
	}
}

func TestHooks(t *testing.T) {
	leakcheck.Check(t)
	var mu sync.Mutex
	var events []string
	note := func(s string) { mu.Lock(); events = append(events, s); mu.Unlock() }
	traced := 0
	s := New(newFakeModel(), Config{Hooks: Hooks{
		RequestStarted:  func(r *RequestInfo) { note(fmt.Sprintf("start %v", r.Tag)) },
		FirstToken:      func(r *RequestInfo) { note(fmt.Sprintf("first %v", r.Tag)) },
		RequestFinished: func(r *RequestInfo, f *Final) { note(fmt.Sprintf("finish %v %v", r.Tag, f.Reason)) },
		Step: func(si *StepInfo) {
			if si.Trace != nil {
				traced++
			}
		},
	}})
	collect(t, s, Request{Prompt: testPrompt(1, 4), MaxTokens: 3, Tag: "x", TraceLayers: true})
	shutdown(t, s)
	want := []string{"start x", "first x", "finish x length"}
	if !slices.Equal(events, want) {
		t.Errorf("hooks saw %v, want %v", events, want)
	}
	if traced != 3 {
		t.Errorf("%d traced steps, want 3", traced)
	}
}
