package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// Models named at start (--model ID=PATH): the operator's list of what the
// loader publishes without being asked. They are loaded one after another
// in the background once Start has scanned the shared-memory directory (the
// server answers meanwhile; a LoadModel for the same id and path joins the
// load and streams its progress), and their files are watched: a file that
// changes (device, inode, size or modification time) and then stays the
// same for one more poll is loaded again as a new generation.
//
// Their paths are trusted: the operator wrote them, so they may be anywhere
// and may go through symlinks, unlike the paths clients send, which must
// stay inside the source directory. A client may name such a path exactly
// (the absolute form the loader logs and announces as source_path), to
// reload it; no other path outside the source directory is opened.

// Model is a model named at start.
type Model struct {
	ID   string
	Path string // absolute, cleaned
}

// ParseModels reads ID=PATH items (the --model flag's). A relative path is
// taken relative to the working directory; the file need not exist yet
// (it is loaded when it appears).
func ParseModels(items []string) ([]Model, error) {
	var out []Model
	seen := map[string]bool{}
	for _, item := range items {
		id, path, ok := strings.Cut(item, "=")
		if !ok || path == "" {
			return nil, fmt.Errorf("model %q: want ID=PATH", item)
		}
		if err := corelmv1.ValidateModelID(id); err != nil {
			return nil, fmt.Errorf("model %q: %w", item, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("model %q is named twice", id)
		}
		seen[id] = true
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("model %q: %w", item, err)
		}
		out = append(out, Model{ID: id, Path: abs})
	}
	return out, nil
}

// IDs are the models' ids, in order.
func IDs(models []Model) []string {
	ids := make([]string, len(models))
	for i, m := range models {
		ids[i] = m.ID
	}
	return ids
}

// named reports whether path is the path of a model named at start.
func (s *Server) named(path string) bool {
	for _, m := range s.opts.Models {
		if m.Path == path {
			return true
		}
	}
	return false
}

// openNamed opens the file of a model named at start, following symlinks.
func openNamed(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0) // a FIFO must not block the open
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%w: %s: no such file", ErrNotFound, path)
		}
		return nil, fmt.Errorf("%w: opening %s: %w", ErrBadFile, path, err)
	}
	return regularFile(f, path)
}

// statNamed is the identity of a named model's file as it is now.
func statNamed(path string) (sourceID, error) {
	f, err := openNamed(path)
	if err != nil {
		return sourceID{}, err
	}
	defer f.Close()
	return fileID(f)
}

// loadNamedModels loads the models named at start, then polls their files
// every Options.Watch until the server stops. It runs as one of
// Server.running.
func (s *Server) loadNamedModels() {
	defer s.running.Done()
	models := s.opts.Models
	s.log.Info("loading the models named at start", "models", IDs(models), "watch_interval", s.opts.Watch)
	loaded := map[string]sourceID{} // the identity last loaded (or that failed to load), by id
	for _, m := range models {
		if s.base.Err() != nil {
			return
		}
		if id, ok := s.loadNamed(m); ok {
			loaded[m.ID] = id
		}
	}
	if s.opts.Watch <= 0 {
		return
	}
	t := time.NewTicker(s.opts.Watch)
	defer t.Stop()
	changed := map[string]sourceID{} // seen once, not yet loaded: waits one poll to settle
	missing := map[string]bool{}     // logged as unreadable, until it is back
	for {
		select {
		case <-s.base.Done():
			return
		case <-t.C:
		}
		for _, m := range models {
			cur, err := statNamed(m.Path)
			if err != nil {
				if !missing[m.ID] {
					s.log.Warn("cannot read a model named at start", "model", m.ID, "path", m.Path, "err", err)
					missing[m.ID] = true
				}
				continue
			}
			delete(missing, m.ID)
			if prev, ok := loaded[m.ID]; ok && cur == prev {
				delete(changed, m.ID)
				continue
			}
			// A file being copied in place changes at every poll; load it
			// once it has held still for a whole interval.
			if changed[m.ID] != cur {
				changed[m.ID] = cur
				continue
			}
			delete(changed, m.ID)
			s.log.Info("model file changed, reloading", "model", m.ID, "path", m.Path)
			if id, ok := s.loadNamed(m); ok {
				loaded[m.ID] = id
			}
		}
	}
}

// loadNamed loads m unless it is published from the same file already, and
// waits for the load. ok is false when it should be tried again at the
// next poll even if the file stays as it is (busy, stopping, unreadable);
// id is the file's identity before the load.
func (s *Server) loadNamed(m Model) (id sourceID, ok bool) {
	id, err := statNamed(m.Path)
	if err != nil {
		s.log.Warn("cannot read a model named at start", "model", m.ID, "path", m.Path, "err", err)
		return id, false
	}
	l, reused, err := s.startLoad(&corelmv1.LoadModelRequest{ModelId: m.ID, Path: m.Path})
	if err != nil {
		s.log.Warn("cannot load a model named at start", "model", m.ID, "path", m.Path, "err", err)
		return id, false
	}
	if reused != nil {
		s.log.Info("already published", "model", m.ID, "generation", reused.GetGeneration(), "path", reused.GetPath())
		return id, true
	}
	defer s.leave(l)
	select {
	case <-l.done:
		return id, true // a failed load is logged by run; retried when the file changes
	case <-s.base.Done():
		return id, false
	}
}
