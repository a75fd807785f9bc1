package kernels

import (
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestPoolCoverage: every index in [0, n) is handed out exactly once, in
// contiguous non-empty chunks, at most 2·maxChunksPerThread·Threads() of
// them, and every thread gets work when there is enough.
func TestPoolCoverage(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 4, 8} {
		p := NewPool(threads)
		for _, n := range []int{0, 1, 2, 3, 5, 7, 8, 9, 100, 1001} {
			hits := make([]atomic.Int32, n)
			var calls atomic.Int32
			p.Run(n, func(lo, hi int) {
				calls.Add(1)
				if lo >= hi || lo < 0 || hi > n {
					t.Errorf("threads %d n %d: chunk [%d,%d)", threads, n, lo, hi)
					return
				}
				for i := lo; i < hi; i++ {
					hits[i].Add(1)
				}
			})
			for i := range hits {
				if h := hits[i].Load(); h != 1 {
					t.Fatalf("threads %d n %d: index %d visited %d times", threads, n, i, h)
				}
			}
			if c := int(calls.Load()); c > 2*maxChunksPerThread*threads || c > n || (n > 0 && c == 0) {
				t.Errorf("threads %d n %d: %d calls", threads, n, c)
			}
		}
		if p.Threads() != threads {
			t.Errorf("Threads() = %d, want %d", p.Threads(), threads)
		}
		p.Close()
	}
}

// TestPoolGuided: chunks shrink towards the end of the range, so the last
// one is small and no thread waits out a big chunk of another.
func TestPoolGuided(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	const n = 4096
	var mu sync.Mutex
	var sizes [][2]int
	p.Run(n, func(lo, hi int) {
		mu.Lock()
		sizes = append(sizes, [2]int{lo, hi})
		mu.Unlock()
	})
	least := n / (maxChunksPerThread * 2)
	for _, c := range sizes {
		if c[0] == 0 && c[1]-c[0] != n/(guidedShare*2) {
			t.Errorf("first chunk [%d,%d), want %d long", c[0], c[1], n/(guidedShare*2))
		}
		if c[1] == n && c[1]-c[0] > least {
			t.Errorf("last chunk [%d,%d) longer than %d", c[0], c[1], least)
		}
	}
}

// TestPoolUsesWorkers: Run covers the range exactly once and at least one
// worker runs chunks. The caller holds any chunk it takes until a worker has
// run one or no worker Run woke is left running chunks (pending is 0), so a
// pool that does not hand work to its workers fails here rather than
// hanging, however the threads are scheduled. The caller itself need not
// run a chunk: under the race detector on two cores the woken workers have
// been seen to take all 27 chunks before the caller took its first.
func TestPoolUsesWorkers(t *testing.T) {
	for _, threads := range []int{2, 4} {
		p := NewPool(threads)
		const n = 64
		hits := make([]atomic.Int32, n)
		caller := goroutineID()
		var mu sync.Mutex
		ran := map[uint64]int{} // chunks per goroutine
		var byWorkers atomic.Int32
		p.Run(n, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				hits[i].Add(1)
			}
			id := goroutineID()
			mu.Lock()
			ran[id]++
			mu.Unlock()
			if id != caller {
				byWorkers.Add(1)
				return
			}
			for byWorkers.Load() == 0 && p.pending.Load() != 0 {
				runtime.Gosched()
			}
		})
		p.Close()
		for i := range hits {
			if h := hits[i].Load(); h != 1 {
				t.Fatalf("threads %d: index %d visited %d times", threads, i, h)
			}
		}
		if byWorkers.Load() == 0 {
			t.Errorf("threads %d: chunks per goroutine %v (caller %d): no worker ran a chunk", threads, ran, caller)
		}
	}
}

// goroutineID is the running goroutine's number, from its stack header
// ("goroutine 18 [running]:").
func goroutineID() uint64 {
	var buf [64]byte
	s := strings.TrimPrefix(string(buf[:runtime.Stack(buf[:], false)]), "goroutine ")
	id, err := strconv.ParseUint(s[:strings.IndexByte(s, ' ')], 10, 64)
	if err != nil {
		panic(err)
	}
	return id
}

func TestPoolConcurrentRuns(t *testing.T) {
	p := NewPool(3)
	defer p.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range 50 {
				n := 1 + (g*7+it)%40
				out := make([]int, n)
				p.Run(n, func(lo, hi int) {
					for i := lo; i < hi; i++ {
						out[i] = i * g
					}
				})
				for i, v := range out {
					if v != i*g {
						t.Errorf("caller %d: out[%d] = %d", g, i, v)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestPoolPanicPropagates(t *testing.T) {
	p := NewPool(4)
	defer p.Close()
	var finished atomic.Int32
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Errorf("recovered %v, want boom", v)
			}
			if f := finished.Load(); f != 7 {
				t.Errorf("%d other chunks finished before Run returned, want all 7", f)
			}
		}()
		p.Run(8, func(lo, hi int) {
			if lo == 4 {
				panic("boom")
			}
			finished.Add(1)
		})
	}()
	// The pool still works afterwards.
	var sum atomic.Int64
	p.Run(10, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			sum.Add(int64(i))
		}
	})
	if sum.Load() != 45 {
		t.Errorf("sum after panic = %d", sum.Load())
	}
}

func TestPoolClose(t *testing.T) {
	p := NewPool(0)
	if p.Threads() != DefaultThreads() {
		t.Errorf("NewPool(0).Threads() = %d, want DefaultThreads() = %d", p.Threads(), DefaultThreads())
	}
	p.Close()
	p.Close() // idempotent
	p.Run(0, nil)
	defer func() {
		if recover() == nil {
			t.Error("Run after Close did not panic")
		}
	}()
	p.Run(1, func(int, int) {})
}

// TestStreamRead: the checksum is the wrapping sum of every word of every
// buffer, whatever the pieces and threads.
func TestStreamRead(t *testing.T) {
	p := NewPool(3)
	defer p.Close()
	var bufs [][]byte
	var want uint64
	for _, n := range []int{0, 8, 4096, 3<<20 + 64} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + n)
		}
		bufs = append(bufs, b)
		want += sumU64Generic(b)
	}
	if got := StreamRead(p, bufs); got != want {
		t.Errorf("StreamRead = %d, want %d", got, want)
	}
}
