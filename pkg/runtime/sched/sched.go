// Package sched is the continuous-batching scheduler: it owns one model and
// advances every active sequence by one forward pass per step. Decoding
// sequences add one token each; sequences still reading their prompt add a
// chunk, the prefill budget of a step split evenly between them, so streams
// keep flowing while a long prompt is processed.
//
// Admission is decided at Submit: a request gets a slot when fewer than
// MaxSeqs run and the KV pool can hold its prompt and one more token, else
// a queue place, else an *OverloadError at once. A running sequence takes
// KV blocks as it grows; when the pool has none left, the youngest
// sequence is preempted: its blocks go back (into the prefix cache when
// caching) and it waits at the head of the queue to resume by recomputing
// its prompt and generated tokens, mostly from the cache, with its sampler
// untouched, so its output is what it would have been. Each request's events go through a
// bounded buffer; a request whose client reads slowly is left out of the
// steps until its buffer has room again, so it never holds up the others.
//
// Stop strings are matched here, on text from a per-request Decoder, so a
// match ends the sequence in the same step (no wasted tokens, exact usage)
// and the held-back text never reaches the client.
package sched

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sample"
)

// DefaultStepTokens is the most tokens one forward step processes unless
// configured: the prefill chunk of serving, and so of every tool that
// estimates or measures what serving does (corelm inspect, generate, bench).
// 128 keeps a step of a 7–9B model on two cores short enough that
// decoding streams keep flowing while a long prompt is read.
const DefaultStepTokens = 128

// DefaultMaxSeqs is how many sequences a scheduler steps together unless
// configured.
const DefaultMaxSeqs = 8

// Config sizes a scheduler. Zero fields take the defaults in brackets.
type Config struct {
	MaxSeqs  int   // sequences stepped together [DefaultMaxSeqs]
	MaxQueue int   // admitted requests waiting for a slot [2×MaxSeqs]; -1 = no queue
	KVBudget int64 // bytes of KV cache all sequences may hold: the pool's size [0 = unlimited]
	// CacheBudget is the most bytes of KV blocks no sequence holds that the
	// pool keeps for prefix reuse, least recently used evicted first
	// [0 = no prefix cache]. It is inside KVBudget, not on top of it.
	CacheBudget int64
	// CacheDir, when set with a CacheBudget, is where cached prefixes are
	// kept across restarts: loaded at New, written at Shutdown, under
	// CacheKey, which must name the model's weights and KV type exactly
	// (a digest), since blocks must never cross models.
	CacheDir, CacheKey string
	// CacheFileError is told about a persisted block that is corrupt or
	// stale; the block is ignored [nil: silently].
	CacheFileError func(path string, err error)
	// Context is the most positions one sequence may reach: the context
	// the model is served at [the model's trained context; a larger value
	// is clamped to it]. A request with MaxTokens gets a cache of only
	// prompt+MaxTokens positions, but runs as served at Context.
	Context int
	KVType  kvcache.Type
	// StepTokens caps the tokens of one forward step [DefaultStepTokens];
	// decoding sequences take one each, prefilling ones share the rest.
	StepTokens int
	// Buffer is the capacity of each request's event buffer [32, min 4].
	Buffer int
	// Hooks observe steps and requests; they run on the scheduler's
	// goroutine and must be quick.
	Hooks Hooks
	// TraceLayers asks for per-layer timings of every step.
	TraceLayers bool
}

// Hooks are optional callbacks for tracing and metrics.
type Hooks struct {
	Step            func(*StepInfo)
	RequestStarted  func(*RequestInfo)
	FirstToken      func(*RequestInfo)
	RequestFinished func(*RequestInfo, *Final)
}

// RequestInfo identifies a request to the hooks.
type RequestInfo struct {
	ID           uint64
	Tag          any
	PromptTokens int
	Queue        time.Duration // time spent queued (RequestStarted on)
}

// StepInfo describes one forward step.
type StepInfo struct {
	Seqs          int // sequences in the step
	DecodeTokens  int
	PrefillTokens int
	Duration      time.Duration
	// Trace has per-layer timings when any request of the step (or the
	// config) asked for them; it is reused after the hook returns.
	Trace *model.StepTrace
	// Requests lists the ids of the step's requests; reused after the hook.
	Requests []uint64
}

// Stats is a snapshot of the scheduler's state.
type Stats struct {
	Active, Queued int
	MaxSeqs        int
	KVBytesInUse   int64 // the pool's blocks held (a shared one once) and what admitted sequences may still take
	KVBudget       int64
	Steps          uint64
	Completed      uint64 // requests finished (any reason)
	Cancelled      uint64
	Rejected       uint64
	Generated      uint64 // tokens emitted
	Preempted      uint64 // sequences preempted for want of KV blocks
	// The prefix cache: requests that reused a prefix (hits) or found
	// none (misses), prompt tokens reused, cached blocks evicted, and the
	// bytes of blocks kept only for reuse, within CacheBudget.
	CacheHits, CacheMisses, CacheEvictions, CachedTokens uint64
	CacheBytes, CacheBudget                              int64
	Closing                                              bool
}

// Scheduler runs one model for many requests.
type Scheduler struct {
	m     model.Model
	cfg   Config
	vocab int
	pool  *kvcache.Pool    // every sequence's KV blocks; nil when no state could be made
	geo   kvcache.Geometry // of a sequence's cache, for its bytes at a length

	wake chan struct{} // cap 1: something changed (submit, cancel, drained buffer)
	done chan struct{} // closed when the loop has exited

	mu     sync.Mutex
	queue  []*seq // submitted, not yet started by the loop (FIFO)
	active int    // sequences holding a slot, started or reserved
	// promised is the KV memory the sequences holding a slot may still
	// take from the pool to reach their prompt and one more token; what
	// they hold already is the pool's (kvcache.Pool.InUse), where a block
	// shared by several counts once.
	promised int64
	// reserved counts queue entries that took a slot at Submit and wait for
	// the loop to start them; the others wait for a slot.
	reserved int
	closing  bool
	abort    bool // Shutdown's context ended: cancel everything
	stats    Stats
	avgLife  time.Duration // moving average of request lifetimes, for retry hints
	nextID   uint64
}

// seq is one request inside the scheduler.
type seq struct {
	s      *Scheduler
	id     uint64
	req    Request
	events chan Event
	info   RequestInfo

	kvBytes int64 // its share of promised
	want    int64 // KV memory of its feed and one more token, shared blocks counted whole
	length  int   // positions it may reach: prompt + max_tokens, at most the context
	slot    bool  // holds a slot (set under s.mu)
	tok     [1]int32
	state   *model.State
	feed    []int32 // what it prefills: the prompt, or prompt + generated but the last after a preemption
	done    int     // tokens of feed consumed
	cached  int     // prompt tokens the prefix cache served at its first start
	history []int32 // prompt + generated, for penalties
	gen     int     // tokens emitted
	next    int32   // token to feed in the next decode step
	sampler *sample.Sampler
	out     []float32
	raw     []float32 // logits before sampling adjusts them (logprobs)
	hidden  []float32 // an embedding's last hidden states of a step
	pooled  []float64 // an embedding's pooled hidden states so far
	stop    stopMatcher

	submitted, admitted, first time.Time

	cancelled  atomic.Pointer[cancelCause]
	paused     atomic.Bool
	stopNotify func() bool
}

// New returns a running scheduler for m. Call Shutdown to stop it.
func New(m model.Model, cfg Config) *Scheduler {
	mc := m.Config()
	if cfg.MaxSeqs <= 0 {
		cfg.MaxSeqs = DefaultMaxSeqs
	}
	if cfg.MaxQueue == 0 {
		cfg.MaxQueue = 2 * cfg.MaxSeqs
	} else if cfg.MaxQueue < 0 {
		cfg.MaxQueue = 0
	}
	cfg.Context = mc.ClampContext(cfg.Context)
	if cfg.StepTokens <= 0 {
		cfg.StepTokens = DefaultStepTokens
	}
	if cfg.StepTokens < cfg.MaxSeqs+1 {
		cfg.StepTokens = cfg.MaxSeqs + 1
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 32
	}
	cfg.Buffer = max(cfg.Buffer, 4)
	s := &Scheduler{
		m:     m,
		cfg:   cfg,
		vocab: mc.Vocab,
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	s.stats.MaxSeqs = cfg.MaxSeqs
	s.stats.KVBudget = cfg.KVBudget
	if cfg.CacheBudget < 0 {
		cfg.CacheBudget = 0
	}
	if cfg.KVBudget > 0 {
		cfg.CacheBudget = min(cfg.CacheBudget, cfg.KVBudget)
	}
	s.cfg.CacheBudget = cfg.CacheBudget
	// A first state fixes the pool's block layout and tells the geometry
	// admission counts with; if the model cannot make one, every request
	// fails at its start with the reason, as before.
	if st, err := m.NewState(s.stateOptions(kvcache.NewPool(kvcache.PoolConfig{Type: cfg.KVType}))); err == nil {
		s.geo = st.Cache.Geometry()
		st.Cache.Release(nil, false)
		// A budget planned for a whole context (model.KVBytes, exact per
		// position) gets the rest of the last block, so that context fits.
		if whole := s.geo.BytesFor(cfg.Context); cfg.KVBudget >= s.geo.Bytes() && cfg.KVBudget < whole {
			s.cfg.KVBudget = whole
			s.stats.KVBudget = whole
		}
		s.pool = kvcache.NewPool(kvcache.PoolConfig{Type: cfg.KVType, Budget: s.cfg.KVBudget, CacheBudget: s.cfg.CacheBudget})
		s.loadCache()
	}
	go s.loop()
	return s
}

// loadCache fills the prefix cache from CacheDir.
func (s *Scheduler) loadCache() {
	if s.cfg.CacheDir == "" || s.cfg.CacheBudget == 0 {
		return
	}
	st, err := s.m.NewState(s.stateOptions(s.pool)) // fixes the pool's layout
	if err != nil {
		return
	}
	reusable := st.Cache.Reusable()
	st.Cache.Release(nil, false)
	if !reusable {
		return
	}
	warn := s.cfg.CacheFileError
	if warn == nil {
		warn = func(string, error) {}
	}
	s.pool.Load(s.cfg.CacheDir, s.cfg.CacheKey, warn)
}

// saveCache writes the prefix cache to CacheDir.
func (s *Scheduler) saveCache() {
	if s.cfg.CacheDir == "" || s.cfg.CacheBudget == 0 || s.pool == nil {
		return
	}
	if _, err := s.pool.Save(s.cfg.CacheDir, s.cfg.CacheKey); err != nil && s.cfg.CacheFileError != nil {
		s.cfg.CacheFileError(s.cfg.CacheDir, err)
	}
}

// Config returns the scheduler's configuration with defaults filled in: the
// values serving actually uses (the context clamped to the model's).
func (s *Scheduler) Config() Config { return s.cfg }

func (s *Scheduler) wakeup() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Submit validates req and admits it, or fails at once: ErrInvalidRequest
// (ErrTooLarge among them), ErrPromptTooLong, *OverloadError (ErrOverloaded) or ErrClosed. It never
// waits for capacity. ctx governs the whole generation: when it ends, the
// request is cancelled.
func (s *Scheduler) Submit(ctx context.Context, req Request) (*Handle, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := req.validate(s.vocab); err != nil {
		return nil, err
	}
	length := s.cfg.Context // positions it may reach
	switch {
	case req.embeds():
		if len(req.Prompt) > s.cfg.Context {
			return nil, fmt.Errorf("%w: %d input tokens, more than the context of %d", ErrPromptTooLong, len(req.Prompt), s.cfg.Context)
		}
		length = len(req.Prompt)
	case len(req.Prompt) >= s.cfg.Context:
		return nil, fmt.Errorf("%w: %d prompt tokens leave no room to generate in a context of %d", ErrPromptTooLong, len(req.Prompt), s.cfg.Context)
	case req.MaxTokens > 0 && len(req.Prompt)+req.MaxTokens < length:
		length = len(req.Prompt) + req.MaxTokens
	}
	// The request must fit the pool alone at its whole length, but takes
	// a slot for its prompt and one more token: it grows block by block.
	if kv := s.bytesFor(length); s.cfg.KVBudget > 0 && kv > s.cfg.KVBudget {
		s.mu.Lock()
		s.stats.Rejected++
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrTooLarge, s.tooLarge(&req, length, kv))
	}
	q := &seq{
		s:         s,
		req:       req,
		events:    make(chan Event, s.cfg.Buffer),
		length:    length,
		feed:      req.Prompt,
		submitted: time.Now(),
	}
	s.promise(q)
	if len(req.StopStrings) > 0 {
		q.stop.stops = req.StopStrings
	}
	q.stopNotify = context.AfterFunc(ctx, func() { q.cancel(context.Cause(ctx)) })
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		q.stopNotify()
		return nil, ErrClosed
	}
	// A request takes a free slot at once when nobody waits for one;
	// otherwise it queues behind the others, if there is a place.
	waiting := len(s.queue) - s.reserved
	switch {
	case waiting == 0 && s.roomLocked(q.kvBytes):
		s.reserveLocked(q)
		s.reserved++
	case waiting < s.cfg.MaxQueue:
	default:
		s.stats.Rejected++
		retry := s.retryAfterLocked()
		reason := fmt.Sprintf("%d sequences running, %d queued (limit %d)", s.active, waiting, s.cfg.MaxQueue)
		s.mu.Unlock()
		q.stopNotify()
		return nil, &OverloadError{Reason: reason, RetryAfter: retry}
	}
	s.nextID++
	q.id = s.nextID
	q.info = RequestInfo{ID: q.id, Tag: req.Tag, PromptTokens: len(req.Prompt)}
	s.queue = append(s.queue, q)
	s.mu.Unlock()
	s.wakeup()
	return &Handle{s: s, seq: q, events: q.events}, nil
}

// tooLarge says why a request whose KV cache of length positions (kv
// bytes) exceeds the whole KV budget can never be admitted, with the most
// positions the budget holds: what the client can change.
func (s *Scheduler) tooLarge(req *Request, length int, kv int64) string {
	lo, hi := 0, length // bytesFor grows with the length: the largest that fits
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if s.bytesFor(mid) <= s.cfg.KVBudget {
			lo = mid
		} else {
			hi = mid
		}
	}
	asked := fmt.Sprintf("max_tokens %d", req.MaxTokens)
	if req.MaxTokens == 0 || len(req.Prompt)+req.MaxTokens > s.cfg.Context {
		asked = fmt.Sprintf("generation up to the served context of %d", s.cfg.Context)
	}
	msg := fmt.Sprintf("the request needs a KV cache of %d bytes for %d positions (prompt %d + %s), more than the model's whole KV budget of %d bytes",
		kv, length, len(req.Prompt), asked, s.cfg.KVBudget)
	if room := lo - len(req.Prompt); room > 0 {
		return msg + fmt.Sprintf(", which holds %d positions: ask for max_tokens ≤ %d", lo, room)
	}
	return msg + fmt.Sprintf(", which holds %d positions: shorten the prompt", lo)
}

// retryAfterLocked estimates when a slot frees: the average request lifetime
// spread over the slots, for everyone queued ahead.
func (s *Scheduler) retryAfterLocked() time.Duration {
	life := s.avgLife
	if life <= 0 {
		return time.Second
	}
	d := life * time.Duration(len(s.queue)-s.reserved+1) / time.Duration(s.cfg.MaxSeqs)
	return min(max(d, 100*time.Millisecond), 30*time.Second)
}

// stateOptions sizes the state of a sequence taking its blocks from pool:
// it may reach the served context, and runs as served at it.
func (s *Scheduler) stateOptions(pool *kvcache.Pool) model.StateOptions {
	return model.StateOptions{Context: s.cfg.Context, KVType: s.cfg.KVType, Chunk: s.cfg.StepTokens, Pool: pool}
}

// bytesFor is the most KV memory a sequence of n positions holds: the
// blocks of n positions, of at most a window and a step for sliding-window
// layers.
func (s *Scheduler) bytesFor(n int) int64 {
	if s.pool == nil {
		return 0
	}
	return s.geo.BytesFor(n)
}

// Stats returns a snapshot of the scheduler's counters.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Active, st.Queued, st.KVBytesInUse, st.Closing = s.active, len(s.queue)-s.reserved, s.inUse()+s.promised, s.closing
	st.CacheBudget = s.cfg.CacheBudget
	if s.pool != nil {
		ps := s.pool.Stats()
		st.CacheHits, st.CacheMisses, st.CacheEvictions, st.CachedTokens = ps.Hits, ps.Misses, ps.Evictions, ps.HitTokens
		st.CacheBytes = ps.CacheBytes
	}
	return st
}

// Shutdown stops admitting requests and waits for the running and queued
// ones to finish. When ctx ends first, the rest are cancelled (their final
// event says FinishCancelled with ErrClosed) and ctx's error is returned.
// Either way the scheduler's goroutine has exited when Shutdown returns.
func (s *Scheduler) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.wakeup()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	s.abort = true
	s.mu.Unlock()
	s.wakeup()
	<-s.done
	return ctx.Err()
}

// StopQueued is Shutdown for a process that is going away: the requests
// still queued that were never admitted to run end at once, FinishCancelled
// with ErrShed (a client retries them elsewhere rather than wait for the
// drain), while the running ones, and those preempted back into the queue
// after running, drain as in Shutdown.
func (s *Scheduler) StopQueued(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for _, q := range s.queue {
		// A queued sequence's admitted is written by start, before
		// preempt puts it back under s.mu, or after the loop takes it
		// out of the queue under s.mu: reading it here is safe.
		if !q.slot && q.admitted.IsZero() {
			q.cancelled.CompareAndSwap(nil, &cancelCause{ErrShed})
		}
	}
	s.mu.Unlock()
	return s.Shutdown(ctx)
}

// Done is closed when the scheduler has stopped.
func (s *Scheduler) Done() <-chan struct{} { return s.done }

// loop is the scheduler's goroutine: drop, admit, step, repeat.
func (s *Scheduler) loop() {
	defer close(s.done)
	defer s.saveCache()
	var (
		active []*seq
		b      batchBuilder
		trace  model.StepTrace
		info   StepInfo
	)
	for {
		s.mu.Lock()
		abort, closing := s.abort, s.closing
		s.mu.Unlock()
		// Cancelled sequences go before the step, freeing their slot for
		// the admission below.
		kept := active[:0]
		for _, q := range active {
			if err := q.cancelErr(abort); err != nil {
				s.finish(q, &Final{Reason: FinishCancelled, Err: err})
				continue
			}
			kept = append(kept, q)
		}
		clear(active[len(kept):])
		active = kept

		s.mu.Lock()
		var dropped, started []*seq
		queue := s.queue[:0]
		for _, q := range s.queue {
			if q.cancelErr(abort) != nil {
				if q.slot {
					s.reserved--
				}
				dropped = append(dropped, q)
			} else {
				queue = append(queue, q)
			}
		}
		clear(s.queue[len(queue):])
		s.queue = queue
		// FIFO: the head of the queue waits for room rather than being
		// overtaken by smaller requests, so big requests cannot starve.
		for len(s.queue) > 0 {
			q := s.queue[0]
			if q.slot {
				s.reserved--
			} else if s.roomLocked(q.kvBytes) {
				s.reserveLocked(q)
			} else {
				break
			}
			started = append(started, q)
			s.queue[0] = nil
			s.queue = s.queue[1:]
		}
		pending := len(s.queue)
		s.mu.Unlock()
		for _, q := range dropped {
			s.finish(q, &Final{Reason: FinishCancelled, Err: q.cancelErr(abort)})
		}
		for _, q := range started {
			if err := q.cancelErr(abort); err != nil {
				s.finish(q, &Final{Reason: FinishCancelled, Err: err})
				continue
			}
			if err := s.start(q); err != nil {
				s.finish(q, &Final{Reason: FinishError, Err: err})
				continue
			}
			active = append(active, q)
		}
		if closing && len(active) == 0 && pending == 0 {
			return
		}

		active = s.buildRoom(&b, active)
		if len(b.batch.Seqs) == 0 {
			// Nothing can run: no sequences, or all paused on their buffers.
			<-s.wake
			continue
		}
		b.batch.Trace = nil
		if s.cfg.TraceLayers || b.traced {
			b.batch.Trace = &trace
		}
		t0 := time.Now()
		err := s.forward(&b.batch)
		dur := time.Since(t0)
		s.mu.Lock()
		s.stats.Steps++
		s.mu.Unlock()
		if h := s.cfg.Hooks.Step; h != nil {
			info = StepInfo{Seqs: len(b.batch.Seqs), DecodeTokens: b.decode, PrefillTokens: b.prefill,
				Duration: dur, Trace: b.batch.Trace, Requests: info.Requests[:0]}
			for _, q := range b.seqs {
				info.Requests = append(info.Requests, q.id)
			}
			h(&info)
		}
		for i, q := range b.seqs {
			q.out = b.batch.Seqs[i].Out
			var f *Final
			if err != nil {
				f = &Final{Reason: FinishError, Err: err}
			} else {
				f = s.advance(q, &b.batch.Seqs[i])
				if q.caching() {
					q.state.Cache.Seal(q.history[:q.state.Pos])
				}
			}
			if f != nil {
				s.finish(q, f)
			}
		}
		b.reset()
		kept = active[:0]
		for _, q := range active {
			if q.state != nil {
				kept = append(kept, q)
			}
		}
		clear(active[len(kept):])
		active = kept
	}
}

// cancelErr returns why q must stop (nil: it may go on).
func (q *seq) cancelErr(abort bool) error {
	if c := q.cancelled.Load(); c != nil {
		return c.err
	}
	if abort {
		return ErrClosed
	}
	return nil
}

// roomLocked reports whether a sequence that may take kv more bytes can
// take a slot now: the pool's blocks in use, each counted once, and what
// the running sequences may still take leave room for it.
func (s *Scheduler) roomLocked(kv int64) bool {
	return s.active < s.cfg.MaxSeqs && (s.cfg.KVBudget <= 0 || s.inUse()+s.promised+kv <= s.cfg.KVBudget)
}

// inUse is the KV memory the running sequences' caches hold.
func (s *Scheduler) inUse() int64 {
	if s.pool == nil {
		return 0
	}
	return s.pool.InUse()
}

// promise sets what q asks admission for: the memory of its feed and one
// more token, less the blocks of its prefix that running sequences hold
// and it will share. Called without s.mu, for a sequence without a slot.
func (s *Scheduler) promise(q *seq) {
	q.want = s.bytesFor(min(len(q.feed)+1, q.length)) // an embedding reaches its prompt's length only
	q.kvBytes = q.want
	if s.pool != nil && s.cfg.CacheBudget > 0 && !q.req.NoCache && !q.req.embeds() {
		q.kvBytes = max(0, q.want-s.pool.Shared(q.feed))
	}
}

// reserveLocked gives q a slot and promises it its KV bytes.
func (s *Scheduler) reserveLocked(q *seq) {
	q.slot = true
	s.active++
	s.promised += q.kvBytes
}

// forward runs the model, turning a panic into an error so one bad step
// fails its sequences instead of the process.
func (s *Scheduler) forward(b *model.Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: panic: %v\n%s", ErrModelPanic, r, debug.Stack())
		}
	}()
	return s.m.Forward(b)
}

// start gives an admitted request its state.
// A preempted one resumes: its state is made anew and its feed reused
// from the prefix cache as far as it goes.
func (s *Scheduler) start(q *seq) error {
	if s.pool == nil {
		if _, err := s.m.NewState(s.stateOptions(kvcache.NewPool(kvcache.PoolConfig{Type: s.cfg.KVType}))); err != nil {
			return err
		}
		return errors.New("sched: the model could not make a state at start")
	}
	st, err := s.m.NewState(s.stateOptions(s.pool))
	if err != nil {
		return err
	}
	q.state = st
	if q.caching() {
		// A sequence that has to sample at the end of its feed computes at
		// least its last token, for the logits.
		most := len(q.feed)
		if q.gen == 0 {
			most--
		}
		s.charge(q, func() { q.done = st.Cache.Reuse(q.feed, most) })
		st.Pos = q.done
	}
	if !q.admitted.IsZero() {
		return nil // resumed
	}
	q.cached = q.done
	q.admitted = time.Now()
	q.history = append(make([]int32, 0, len(q.req.Prompt)+min(q.req.MaxTokens, 4096)), q.req.Prompt...)
	q.sampler = sample.New(q.req.Sampling)
	q.info.Queue = q.admitted.Sub(q.submitted)
	if h := s.cfg.Hooks.RequestStarted; h != nil {
		h(&q.info)
	}
	return nil
}

// caching reports whether q takes part in the prefix cache.
func (q *seq) caching() bool {
	return q.s.cfg.CacheBudget > 0 && !q.req.NoCache && !q.req.embeds() && q.state != nil && q.state.Cache.Reusable()
}

// buildRoom builds the step and gives its sequences the KV blocks it
// writes, preempting the youngest sequences (the last admitted) while the
// pool has too few. It returns active without the preempted ones.
func (s *Scheduler) buildRoom(b *batchBuilder, active []*seq) []*seq {
	for {
		b.build(active, s.cfg.StepTokens)
		var short *seq
		var err error
		for i := range b.batch.Seqs {
			sb := &b.batch.Seqs[i]
			s.charge(b.seqs[i], func() { err = sb.State.Cache.Prepare(sb.State.Pos, len(sb.Tokens)) })
			if err != nil {
				short = b.seqs[i]
				break
			}
		}
		if short == nil {
			return active
		}
		b.reset()
		if len(active) == 1 {
			s.finish(short, &Final{Reason: FinishError, Err: fmt.Errorf("sched: the KV pool of %d bytes cannot hold this sequence: %w", s.cfg.KVBudget, err)})
			return active[:0]
		}
		young := 0
		for i, q := range active {
			if q.id > active[young].id {
				young = i
			}
		}
		s.preempt(active[young])
		active = append(active[:young], active[young+1:]...)
	}
}

// charge runs take, which gives q's cache blocks from the pool, and lowers
// q's promise by what its cache then holds, which the pool counts as in
// use: under s.mu, so admission and Stats never see a block counted both
// in the pool's use and in a promise.
func (s *Scheduler) charge(q *seq, take func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	take()
	if left := max(0, q.want-q.state.Cache.Allocated()); left < q.kvBytes {
		s.promised -= q.kvBytes - left
		q.kvBytes = left
	}
}

// preempt gives q's blocks back and puts it at the head of the queue to
// resume from what it has consumed (prompt and generated tokens but the
// one not yet fed); its sampler and history are kept.
func (s *Scheduler) preempt(q *seq) {
	q.state.Cache.Release(q.history[:q.state.Pos], q.caching())
	q.state = nil
	if q.gen > 0 {
		q.feed = q.history[:len(q.history)-1]
	}
	q.done = 0
	q.pooled = nil
	s.mu.Lock()
	q.slot = false
	s.active--
	s.promised -= q.kvBytes
	s.mu.Unlock()
	s.promise(q)
	s.mu.Lock()
	s.queue = append([]*seq{q}, s.queue...)
	s.stats.Preempted++
	s.mu.Unlock()
}

// advance handles a sequence's share of a finished step: prefill progress,
// or a sampled token. It returns the final event when the sequence is done.
func (s *Scheduler) advance(q *seq, sb *model.SeqBatch) *Final {
	if q.req.embeds() {
		q.hidden = sb.HiddenOut
		q.pool(q.done, len(sb.Tokens))
		q.done += len(sb.Tokens)
		if q.done < len(q.feed) {
			return nil
		}
		return &Final{Reason: FinishStop, Embedding: q.embedding()}
	}
	if q.done < len(q.feed) {
		q.done += len(sb.Tokens)
		if q.gen > 0 {
			// Resuming after a preemption: the feed ends before the token
			// already sampled, q.next, which the next decode step feeds.
			return nil
		}
		if q.done < len(q.feed) {
			// Progress is optional: sent only when the buffer has room
			// beyond the slot kept for the final event.
			if cap(q.events)-len(q.events) > 1 {
				q.events <- Event{Kind: EventProgress, PromptDone: q.done, PromptTotal: len(q.req.Prompt)}
			}
			return nil
		}
	}
	logits := q.out[:s.vocab]
	var lp *sample.TokenLogprob
	var top []sample.TokenLogprob
	if q.req.Logprobs || q.req.TopLogprobs > 0 {
		q.raw = append(q.raw[:0], logits...)
	}
	var next int32
	if c := q.req.Constraint; c != nil {
		var err error
		if next, err = q.sampler.SampleRestricted(logits, q.history, c.Mask); err == nil {
			err = c.Accept(next)
		}
		if err != nil {
			return &Final{Reason: FinishError, Err: fmt.Errorf("%w: %w", ErrConstraint, err), Text: q.flushText()}
		}
	} else {
		next = q.sampler.Sample(logits, q.history)
	}
	if q.first.IsZero() {
		q.first = time.Now()
		if h := s.cfg.Hooks.FirstToken; h != nil {
			h(&q.info)
		}
	}
	if q.req.stopsAt(next) {
		return &Final{Reason: FinishStop, Text: q.flushText()}
	}
	if q.req.Logprobs || q.req.TopLogprobs > 0 {
		c, t := sample.Logprobs(q.raw, next, q.req.TopLogprobs)
		lp, top = &c, t
	}
	q.gen++
	q.history = append(q.history, next)
	q.next = next
	ev := Event{Kind: EventToken, Token: next, Logprob: lp, Top: top}
	var matched string
	if q.req.Decoder != nil {
		var text string
		text, ev.Raw = q.req.Decoder.Push(next)
		ev.Text, matched = q.stop.push(text)
	}
	q.events <- ev // room was checked when the step was built
	if matched != "" {
		return &Final{Reason: FinishStopSequence, StopSequence: matched}
	}
	if q.req.lengthReached(q.gen, q.state.Pos, q.length) {
		return &Final{Reason: FinishLength, Text: q.flushText()}
	}
	return nil
}

func (q *seq) flushText() string {
	if q.req.Decoder == nil {
		return ""
	}
	held, _ := q.stop.push(q.req.Decoder.Flush())
	return held + q.stop.flush()
}

// finish sends q's final event, releases its slot and state and updates
// the counters.
func (s *Scheduler) finish(q *seq, f *Final) {
	now := time.Now()
	if q.state != nil {
		q.state.Cache.Release(q.history[:q.state.Pos], q.caching() && f.Reason != FinishError)
	}
	q.state = nil
	q.out, q.raw, q.history, q.hidden, q.pooled = nil, nil, nil, nil, nil
	if r, ok := q.req.Constraint.(interface{ Release() }); ok {
		r.Release()
	}
	q.stopNotify()
	f.Usage = Usage{PromptTokens: len(q.req.Prompt), CompletionTokens: q.gen, CachedTokens: q.cached}
	f.Timings.Total = now.Sub(q.submitted)
	if !q.admitted.IsZero() {
		f.Timings.Queue = q.admitted.Sub(q.submitted)
		if !q.first.IsZero() {
			f.Timings.Prefill = q.first.Sub(q.admitted)
			f.Timings.TTFT = q.first.Sub(q.submitted)
			f.Timings.Decode = now.Sub(q.first)
		} else {
			f.Timings.Prefill = now.Sub(q.admitted)
		}
	} else {
		f.Timings.Queue = now.Sub(q.submitted)
	}
	s.mu.Lock()
	if q.slot {
		q.slot = false
		s.active--
		s.promised -= q.kvBytes
		q.kvBytes = 0
	}
	s.stats.Completed++
	s.stats.Generated += uint64(q.gen)
	if f.Reason == FinishCancelled {
		s.stats.Cancelled++
	} else if f.Reason != FinishError {
		if s.avgLife == 0 {
			s.avgLife = f.Timings.Total
		} else {
			s.avgLife = (7*s.avgLife + f.Timings.Total) / 8
		}
	}
	s.mu.Unlock()
	// The hook first: an observer has recorded the request (its span, its
	// metrics) by the time the client sees it end.
	if h := s.cfg.Hooks.RequestFinished; h != nil {
		h(&q.info, f)
	}
	// The buffer always keeps one slot free for this event.
	q.events <- Event{Kind: EventFinal, Final: f}
	close(q.events)
}
