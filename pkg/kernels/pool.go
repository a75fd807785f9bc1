package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Pool is a fixed set of worker goroutines that split one range of work: a
// decode step runs a few hundred short matmuls, so the cost that matters is
// the hand-off and the single barrier per op. The threads claim chunks of
// the range in turn, each a share of what is left (guided scheduling): large
// chunks first, small ones at the end, so the threads finish together — a
// thread the host slows down (a shared machine's other tenants) takes less
// instead of holding up the barrier, and no thread waits out a big last
// chunk of another. The goroutine calling Run works too, so a pool of T
// threads has T-1 background workers.
//
// Hand-off is a generation counter the workers spin on for a short while
// after each op (spinFor) before they park: between the ops of a step they
// are still spinning, so an op starts on every core within a few hundred
// nanoseconds instead of a futex wake-up each (tens of microseconds, which
// on 2 cores cost a third of decode speed). Idle pools park and cost nothing.
type Pool struct {
	mu      sync.Mutex // serializes Run and Close
	threads int
	workers []*poolWorker
	exited  sync.WaitGroup

	// The op in progress. gen packs a sequence number (high bits) and the
	// number of background workers the op wants (low 8 bits), so a worker
	// learns from one atomic load whether to join. fn, n and least are
	// written before gen and read only by workers that join, and Run waits
	// for those, so they never change under a reader.
	gen     atomic.Uint64
	fn      func(lo, hi int)
	n       int
	least   int          // smallest chunk (but the last)
	next    atomic.Int64 // start of the next chunk to claim
	pending atomic.Int32 // background workers not finished
	closed  atomic.Bool

	panicMu  sync.Mutex
	panicked any
}

type poolWorker struct {
	idx      int // 1..threads-1: the worker joins ops that want at least idx workers
	wake     chan struct{}
	sleeping atomic.Bool
}

// spinFor is how long an idle worker keeps polling for the next op before
// it parks.
const spinFor = 200 * time.Microsecond

// NewPool starts a pool of threads workers (including the caller of Run).
// threads < 1 means DefaultThreads().
func NewPool(threads int) *Pool {
	if threads < 1 {
		threads = DefaultThreads()
	}
	threads = min(threads, 255) // the worker count must fit gen's low byte
	p := &Pool{threads: threads}
	for i := 1; i < threads; i++ {
		w := &poolWorker{idx: i, wake: make(chan struct{}, 1)}
		p.workers = append(p.workers, w)
		p.exited.Add(1)
		go p.work(w)
	}
	return p
}

// Threads is the number of threads the pool splits work over.
func (p *Pool) Threads() int { return p.threads }

func (p *Pool) work(w *poolWorker) {
	defer p.exited.Done()
	var seen uint64 // gen is 0 until the first Run, which may come before this goroutine starts
	for {
		g := p.await(w, seen)
		if p.closed.Load() {
			return
		}
		seen = g
		if w.idx <= int(g&0xff) {
			p.runChunks()
			p.pending.Add(-1)
		}
	}
}

// await returns the first generation after seen: spinning, then parked.
func (p *Pool) await(w *poolWorker, seen uint64) uint64 {
	deadline := time.Now().Add(spinFor)
	for i := 1; ; i++ {
		if g := p.gen.Load(); g != seen {
			return g
		}
		if i%64 == 0 {
			runtime.Gosched() // let other goroutines have this P
			if time.Now().After(deadline) {
				break
			}
		}
	}
	for {
		w.sleeping.Store(true)
		// Re-check after announcing the nap: Run bumps gen before it looks
		// at sleeping, so one of the two sides sees the other.
		if g := p.gen.Load(); g != seen {
			w.sleeping.Store(false)
			return g
		}
		<-w.wake
		w.sleeping.Store(false)
		if g := p.gen.Load(); g != seen {
			return g
		}
	}
}

// runChunks claims and runs chunks until none is left. After a panic in fn
// it stops claiming; the other threads finish the op's remaining chunks.
func (p *Pool) runChunks() {
	defer func() {
		if v := recover(); v != nil {
			p.panicMu.Lock()
			if p.panicked == nil {
				p.panicked = v
			}
			p.panicMu.Unlock()
		}
	}()
	for {
		lo := int(p.next.Load())
		if lo >= p.n {
			return
		}
		hi := min(p.n, lo+max(p.least, (p.n-lo)/(guidedShare*p.threads)))
		if p.next.CompareAndSwap(int64(lo), int64(hi)) {
			p.fn(lo, hi)
		}
	}
}

// A thread claims 1/(guidedShare·threads) of what is left, and at least
// 1/(maxChunksPerThread·threads) of the whole: about 2·guidedShare·ln(
// maxChunksPerThread/guidedShare) chunks per thread, the last ones small.
const (
	guidedShare        = 2
	maxChunksPerThread = 32
)

// Run splits [0, n) into contiguous chunks, calls fn(lo, hi) on each,
// concurrently, and returns when all are done. A panic in fn is re-raised
// here, with its value, after every chunk has finished. Calls from
// different goroutines are serialized; calling Run from inside fn on the
// same pool deadlocks.
func (p *Pool) Run(n int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		panic("kernels: Run on a closed Pool")
	}
	least := max(1, n/(maxChunksPerThread*p.threads))
	if n <= least || p.threads == 1 {
		fn(0, n)
		return
	}
	helpers := min(p.threads, (n+least-1)/least) - 1
	p.fn, p.n, p.least = fn, n, least
	p.next.Store(0)
	p.pending.Store(int32(helpers))
	p.gen.Store((p.gen.Load()>>8+1)<<8 | uint64(helpers))
	for _, w := range p.workers[:helpers] {
		if w.sleeping.Load() {
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
	}
	p.runChunks()
	for i := 1; p.pending.Load() != 0; i++ {
		if i%64 == 0 {
			runtime.Gosched()
		}
	}
	p.fn = nil
	if v := p.panicked; v != nil {
		p.panicked = nil
		panic(v)
	}
}

// Close stops the workers. Run must not be called afterwards; Close may be
// called more than once.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Swap(true) {
		return
	}
	p.gen.Store((p.gen.Load()>>8 + 1) << 8) // no chunks: workers see closed and exit
	for _, w := range p.workers {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	p.exited.Wait()
}
