package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corelm/corelm/pkg/runtime"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// The loader's budget is the bytes of packed files in the shared-memory
// directory: tmpfs pages are memory, and a superseded generation's pages
// stay in memory after its name is unlinked for as long as a reader maps
// it. So a generation that is replaced (or unloaded) keeps counting until
// its readers let go, and a load is admitted only when the budget holds
// everything at once: the published generations, the superseded ones still
// mapped, the loads in flight, and the new file. A reload of a model
// therefore needs room for two copies of it until the old one drains.
//
// Readers say they still map a generation with a lease: a shared flock on
// the file, held from before they map it until they unmap it (the
// inference service's openPublished). The loader probes a superseded file
// with a non-blocking exclusive flock; while that fails, the file stays,
// renamed to drainingPrefix+its name, and counts. A reader that locks a
// file after the probe finds its announced name gone and does not serve
// it, so no reader starts mapping a generation the loader counts as gone.
// A reader without a lease (an older inference binary) is not waited for.

// drainingPrefix names superseded generations that readers still map.
const drainingPrefix = ".draining-"

// drainPoll is how often the leases of draining generations are probed.
const drainPoll = 250 * time.Millisecond

// DefaultDrainTimeout is how long a load waits for superseded generations
// to drain when the budget cannot hold it beside them: the inference
// service's default drain (5m, how long a superseded generation may finish
// its requests) plus a minute for it to map and check the new generation.
const DefaultDrainTimeout = 6 * time.Minute

// drain is a superseded generation that a reader may still map.
type drain struct {
	id    string
	gen   uint64
	path  string // under drainingPrefix
	size  int64
	since time.Time
	late  bool // logged as past the drain timeout
}

// drains are the superseded generations still mapped; guarded by Server.mu.
type drains struct {
	files   map[string]*drain // by path
	changed chan struct{}     // closed and replaced when one goes
	probing bool              // the prober runs
}

// DefaultBudget is the loader's budget when none is given: the size of the
// file system dir is on (a tmpfs's size= limit), at most the memory this
// process may use (the cgroup limit or physical memory, runtime.DetectMemory)
// less runtime.MemoryMargin. Tmpfs pages are charged to the memory of the
// writer's cgroup, and a published model is resident wherever it lives, so
// the budget never promises more than memory. The string says how it was
// derived.
func DefaultBudget(dir string) (int64, string, error) {
	mem, err := runtime.DetectMemory()
	if err != nil {
		return 0, "", err
	}
	byMem, how, err := runtime.BudgetFrom(mem)
	if err != nil {
		return 0, "", err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, "", fmt.Errorf("loader: %s: %w", dir, err)
	}
	if size := int64(st.Blocks) * st.Bsize; size > 0 && size < byMem {
		return size, fmt.Sprintf("the size of the file system of %s, %s (below %s)", dir, runtime.FormatBytes(size), how), nil
	}
	return byMem, how, nil
}

// resolveBudget fills in the defaults of the budget and the drain timeout.
func (s *Server) resolveBudget() error {
	if s.opts.DrainTimeout <= 0 {
		s.opts.DrainTimeout = DefaultDrainTimeout
	}
	if s.opts.Budget > 0 {
		s.budgetHow = "--budget"
		return nil
	}
	b, how, err := DefaultBudget(s.shmDir)
	if err != nil {
		return err
	}
	s.opts.Budget, s.budgetHow = b, how
	return nil
}

// retireLocked takes a superseded or unloaded generation's name away: the
// file is removed at once when no reader holds a lease on it, else renamed
// under drainingPrefix and counted until its readers let go. s.mu is held.
func (s *Server) retireLocked(pb *corelmv1.PublishedModel) {
	path := pb.GetPath()
	if free, err := removeIfFree(path); free || err != nil {
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("unlink superseded generation", "path", path, "err", err)
		}
		return
	}
	held := filepath.Join(filepath.Dir(path), drainingPrefix+filepath.Base(path))
	if err := os.Rename(path, held); err != nil {
		s.log.Warn("rename superseded generation", "path", path, "err", err)
		return
	}
	s.addDrainLocked(&drain{id: pb.GetModelId(), gen: pb.GetGeneration(), path: held, size: pb.GetSizeBytes(), since: time.Now()})
	s.log.Info("superseded generation still mapped: counted until its readers let go", "model", pb.GetModelId(),
		"generation", pb.GetGeneration(), "bytes", pb.GetSizeBytes())
}

// recoverDrainLocked counts a draining file an earlier run left, or
// removes it when its readers have gone. s.mu is held.
func (s *Server) recoverDrainLocked(path string) {
	name := strings.TrimPrefix(filepath.Base(path), drainingPrefix)
	id, gen, ok := parseFileName(name)
	var st unix.Stat_t
	if !ok || unix.Stat(path, &st) != nil {
		os.Remove(path)
		return
	}
	if free, _ := removeIfFree(path); free {
		return
	}
	s.addDrainLocked(&drain{id: id, gen: gen, path: path, size: st.Size, since: time.Now()})
	s.log.Info("superseded generation of an earlier run still mapped: counted until its readers let go", "model", id,
		"generation", gen, "bytes", st.Size)
}

func (s *Server) addDrainLocked(d *drain) {
	if s.drains.files == nil {
		s.drains.files = map[string]*drain{}
		s.drains.changed = make(chan struct{})
	}
	s.drains.files[d.path] = d
	if !s.drains.probing && s.base.Err() == nil {
		s.drains.probing = true
		s.running.Add(1)
		go s.probeDrains()
	}
}

// removeIfFree removes path when no reader holds a lease on it. The
// exclusive lock is held across the unlink, so a reader locking the file
// afterwards finds its name gone.
func removeIfFree(path string) (free bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return errors.Is(err, os.ErrNotExist), err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil
		}
		return false, err
	}
	return true, os.Remove(path)
}

// probeDrains removes draining generations as their readers let go, until
// none is left or the loader stops.
func (s *Server) probeDrains() {
	defer s.running.Done()
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	for {
		select {
		case <-s.base.Done():
			s.mu.Lock()
			s.drains.probing = false
			s.mu.Unlock()
			return
		case <-t.C:
		}
		s.mu.Lock()
		gone := false
		for path, d := range s.drains.files {
			free, err := removeIfFree(path)
			if free || errors.Is(err, os.ErrNotExist) {
				delete(s.drains.files, path)
				gone = true
				s.log.Info("superseded generation drained", "model", d.id, "generation", d.gen, "bytes", d.size,
					"after", time.Since(d.since).Round(time.Millisecond))
				continue
			}
			if !d.late && time.Since(d.since) > s.opts.DrainTimeout {
				d.late = true
				s.log.Warn("superseded generation still mapped past the drain timeout", "model", d.id, "generation", d.gen,
					"bytes", d.size, "drain_timeout", s.opts.DrainTimeout)
			}
		}
		if gone {
			close(s.drains.changed)
			s.drains.changed = make(chan struct{})
		}
		if len(s.drains.files) == 0 {
			s.drains.probing = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}

// usageLocked is the budget in use: the published generations, and the
// superseded ones still mapped. s.mu is held.
func (s *Server) usageLocked() (published, draining int64) {
	for _, p := range s.published {
		published += p.pb.GetSizeBytes()
	}
	for _, d := range s.drains.files {
		draining += d.size
	}
	return published, draining
}

// reserve claims size bytes of the budget for a load of model id. When the
// budget holds them only once superseded generations drain, it waits for
// that, up to the drain timeout; when not even then, it fails at once. The
// error says what is in the way. Then the directory must have the room.
func (s *Server) reserve(ctx context.Context, id string, size int64) error {
	deadline := time.Now().Add(s.opts.DrainTimeout)
	waiting := false
	for {
		s.mu.Lock()
		published, draining := s.usageLocked()
		inFlight := s.reserved
		if published+draining+inFlight+size <= s.opts.Budget {
			s.reserved += size
			s.mu.Unlock()
			break
		}
		var current int64
		if p := s.published[id]; p != nil {
			current = p.pb.GetSizeBytes()
		}
		changed := s.drains.changed
		s.mu.Unlock()
		if published+inFlight+size > s.opts.Budget {
			return s.overBudget(id, size, published, draining, inFlight, current)
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w: model %q needs %s; the budget of %s (%s) holds it only once superseded generations drain (%s still mapped), and they did not within %v (--drain-timeout)",
				ErrNoSpace, id, runtime.FormatBytes(size), runtime.FormatBytes(s.opts.Budget), s.budgetHow, runtime.FormatBytes(draining), s.opts.DrainTimeout)
		}
		if !waiting {
			waiting = true
			if s.opts.drainWait != nil {
				s.opts.drainWait(id)
			}
			s.log.Info("load waits for superseded generations to drain", "model", id, "bytes", size, "draining", draining,
				"budget", s.opts.Budget, "drain_timeout", s.opts.DrainTimeout)
		}
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
		timer.Stop()
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.shmDir, &st); err == nil {
		if free := int64(st.Bavail) * st.Bsize; free < size {
			s.release(size)
			return fmt.Errorf("%w: model %q needs %s, %s has %s free", ErrNoSpace, id, runtime.FormatBytes(size), s.shmDir, runtime.FormatBytes(free))
		}
	}
	return nil
}

// overBudget is the error of a load the budget cannot hold even when every
// superseded generation has drained.
func (s *Server) overBudget(id string, size, published, draining, inFlight, current int64) error {
	f := runtime.FormatBytes
	msg := fmt.Sprintf("model %q needs %s; the budget is %s (%s): %s published, %s being loaded",
		id, f(size), f(s.opts.Budget), s.budgetHow, f(published), f(inFlight))
	if draining > 0 {
		msg += fmt.Sprintf(", %s superseded and still mapped", f(draining))
	}
	if current > 0 && published-current+inFlight+size <= s.opts.Budget {
		return fmt.Errorf("%w: %s; a reload keeps the current generation (%s) until the new one replaces it and its readers drain, so it needs both: "+
			"unload %q first (the load then waits for its readers) or raise --budget", ErrNoSpace, msg, f(current), id)
	}
	return fmt.Errorf("%w: %s", ErrNoSpace, msg)
}

func (s *Server) release(size int64) {
	s.mu.Lock()
	s.reserved -= size
	s.mu.Unlock()
}
