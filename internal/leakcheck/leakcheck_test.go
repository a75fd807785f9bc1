package leakcheck

import (
	"testing"
)

// recorder is a testing.TB that keeps the failure instead of failing.
type recorder struct {
	testing.TB
	failed   bool
	cleanups []func()
}

func (r *recorder) Helper()               {}
func (r *recorder) Cleanup(f func())      { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) end() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func TestCheck(t *testing.T) {
	// A goroutine that ends in a later cleanup is no leak.
	r := &recorder{TB: t}
	Check(r)
	stop := make(chan struct{})
	go func() { <-stop }()
	r.Cleanup(func() { close(stop) })
	r.end()
	if r.failed {
		t.Error("a goroutine stopped by a cleanup was reported")
	}

	// One still blocked at the end is a leak.
	if testing.Short() {
		t.Skip("the leak case waits five seconds")
	}
	r = &recorder{TB: t}
	Check(r)
	block := make(chan struct{})
	defer close(block)
	go func() { <-block }()
	r.end()
	if !r.failed {
		t.Error("a blocked goroutine was not reported")
	}
}
