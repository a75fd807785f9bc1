package kernels

import "sync"

// Pool is a fixed set of worker goroutines that split one range of work
// statically: a decode step runs a few hundred short matmuls, so the cost
// that matters is the hand-off and the single barrier per op, not balancing.
// The goroutine calling Run does the first chunk itself, so a pool of T
// threads has T-1 background workers.
type Pool struct {
	mu      sync.Mutex // serializes Run and Close
	threads int
	work    []chan poolTask // one per background worker
	exited  sync.WaitGroup
	closed  bool
	done    poolDone // the barrier of the Run in progress, reused so Run does not allocate
}

type poolTask struct {
	lo, hi int
	fn     func(lo, hi int)
	done   *poolDone
}

// poolDone is the barrier of one Run; the first panic of a chunk is kept to
// be re-raised on the caller's goroutine.
type poolDone struct {
	wg       sync.WaitGroup
	mu       sync.Mutex
	panicked any
}

// NewPool starts a pool of threads workers (including the caller of Run).
// threads < 1 means DefaultThreads().
func NewPool(threads int) *Pool {
	if threads < 1 {
		threads = DefaultThreads()
	}
	p := &Pool{threads: threads, work: make([]chan poolTask, threads-1)}
	for i := range p.work {
		ch := make(chan poolTask, 1)
		p.work[i] = ch
		p.exited.Add(1)
		go p.worker(ch)
	}
	return p
}

func (p *Pool) worker(ch <-chan poolTask) {
	defer p.exited.Done()
	for t := range ch {
		t.run()
	}
}

func (t poolTask) run() {
	defer t.done.wg.Done()
	defer func() {
		if v := recover(); v != nil {
			t.done.mu.Lock()
			if t.done.panicked == nil {
				t.done.panicked = v
			}
			t.done.mu.Unlock()
		}
	}()
	t.fn(t.lo, t.hi)
}

// Threads returns the number of chunks Run splits work into at most.
func (p *Pool) Threads() int { return p.threads }

// Run splits [0, n) into at most Threads() contiguous chunks of near-equal
// size, calls fn(lo, hi) once per non-empty chunk concurrently, and returns
// when all calls have returned. Concurrent Runs are serialized; fn must not
// call Run on the same pool (it would deadlock). A panic in fn is re-raised,
// with its original value, by Run after every chunk has finished, so no chunk
// outlives Run. Run panics after Close.
func (p *Pool) Run(n int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		panic("kernels: Run on a closed Pool")
	}
	chunks := min(p.threads, n)
	size := (n + chunks - 1) / chunks
	chunks = (n + size - 1) / size // drop chunks that would be empty
	if chunks == 1 {
		fn(0, n)
		return
	}
	done := &p.done
	done.wg.Add(chunks)
	for c := 1; c < chunks; c++ {
		p.work[c-1] <- poolTask{lo: c * size, hi: min(n, (c+1)*size), fn: fn, done: done}
	}
	poolTask{lo: 0, hi: size, fn: fn, done: done}.run()
	done.wg.Wait()
	if v := done.panicked; v != nil {
		done.panicked = nil
		panic(v)
	}
}

// Close stops the workers and waits for them to exit. It is idempotent.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	for _, ch := range p.work {
		close(ch)
	}
	p.exited.Wait()
}
