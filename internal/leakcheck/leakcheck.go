// Package leakcheck fails a test whose goroutines outlive it.
package leakcheck

import (
	"runtime"
	"testing"
	"time"
)

// Check counts the goroutines running now. When the test ends, after the
// cleanups registered after Check have run (servers stopped, connections
// closed), it waits up to five seconds for the count to fall back, then
// fails the test with every goroutine's stack.
func Check(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			runtime.Gosched()
			time.Sleep(time.Millisecond)
		}
	})
}
