package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"

	"github.com/corelm/corelm/pkg/formats/pack"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// Names in the shared-memory directory. Model ids cannot start with a dot,
// so the loader's own files never collide with published ones.
const (
	tmpPrefix = ".tmp-"        // packed files being written
	lockName  = ".loader.lock" // flock: one loader per directory
)

// LockName is the file in the shared-memory directory a running loader
// holds an exclusive flock on: a directory whose lock can be taken has no
// loader (serve-all's cleanup of directories left by killed processes).
const LockName = lockName

// fileName is the published name of a model's generation.
func fileName(id string, gen uint64) string {
	return id + "." + strconv.FormatUint(gen, 10) + pack.Ext
}

// parseFileName splits a published name into model id and generation.
func parseFileName(name string) (id string, gen uint64, ok bool) {
	base, found := strings.CutSuffix(name, pack.Ext)
	if !found {
		return "", 0, false
	}
	dot := strings.LastIndexByte(base, '.')
	if dot <= 0 {
		return "", 0, false
	}
	gen, err := strconv.ParseUint(base[dot+1:], 10, 64)
	if err != nil || gen == 0 || corelmv1.ValidateModelID(base[:dot]) != nil {
		return "", 0, false
	}
	return base[:dot], gen, true
}

// openSource opens a file of the source directory for reading. rel must be
// relative and stay inside the directory, also through symlinks; the file
// must be a regular file.
func (s *Server) openSource(rel string) (*os.File, error) {
	if s.named(rel) {
		return openNamed(rel) // the operator's path: trusted (startup.go)
	}
	if s.srcDir == "" {
		return nil, fmt.Errorf("%w: %q: this loader has no source directory; it loads only the models named at start", ErrEscape, rel)
	}
	if filepath.IsAbs(rel) {
		return nil, fmt.Errorf("%w: %q is an absolute path; paths are relative to the source directory", ErrEscape, rel)
	}
	for _, part := range strings.Split(filepath.ToSlash(rel), "/") {
		if part == ".." {
			return nil, fmt.Errorf("%w: %q contains \"..\"", ErrEscape, rel)
		}
	}
	full := filepath.Join(s.srcDir, rel)
	real, err := filepath.EvalSymlinks(full)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s: no such file in the source directory", ErrNotFound, rel)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrBadFile, rel, err)
	}
	inside, err := filepath.Rel(s.srcDir, real)
	if err != nil || inside == ".." || strings.HasPrefix(inside, "../") {
		return nil, fmt.Errorf("%w: %s is a symlink to %s, outside the source directory", ErrEscape, rel, real)
	}
	// Open beneath the directory without following any symlink, so a link
	// swapped in after the check above cannot lead out. O_NONBLOCK keeps a
	// FIFO from blocking the open.
	flags := uint64(unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC)
	fd, err := unix.Openat2(s.srcFD, inside, &unix.OpenHow{Flags: flags,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS})
	if errors.Is(err, unix.ENOSYS) { // kernels before 5.6
		fd, err = unix.Open(real, int(flags), 0)
	}
	switch {
	case errors.Is(err, unix.EXDEV), errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("%w: %s changed into a symlink while it was opened", ErrEscape, rel)
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("%w: %s: no such file in the source directory", ErrNotFound, rel)
	case err != nil:
		return nil, fmt.Errorf("%w: opening %s: %w", ErrBadFile, rel, err)
	}
	return regularFile(os.NewFile(uintptr(fd), full), rel)
}

// regularFile returns f if it is a regular file, else closes it.
func regularFile(f *os.File, name string) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("%w: %s is %s, not a regular file", ErrBadFile, name, fileKind(st.Mode))
	}
	return f, nil
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a named pipe (FIFO)"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFLNK:
		return "a symlink"
	}
	return "a special file"
}

// recover runs at start: it removes temporary files of earlier runs and
// re-announces the newest valid generation of each model, retiring older
// generations (budget.go: a reader may still map them) and unlinking files
// that fail verification.
func (s *Server) recover() error {
	entries, err := os.ReadDir(s.shmDir)
	if err != nil {
		return err
	}
	newest := map[string]*corelmv1.PublishedModel{}
	var stale []string
	var older []*corelmv1.PublishedModel
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(s.shmDir, name)
		if strings.HasPrefix(name, tmpPrefix) {
			s.log.Info("removing leftover temporary file", "path", path)
			os.Remove(path)
			continue
		}
		if strings.HasPrefix(name, drainingPrefix) {
			if id, gen, ok := parseFileName(strings.TrimPrefix(name, drainingPrefix)); ok && gen > s.gens[id] {
				s.gens[id] = gen
			}
			s.recoverDrainLocked(path)
			continue
		}
		id, gen, ok := parseFileName(name)
		if !ok || !e.Type().IsRegular() {
			continue // not ours
		}
		if gen > s.gens[id] {
			s.gens[id] = gen
		}
		pb, err := s.reannounce(path, id, gen)
		if err != nil {
			s.log.Warn("removing invalid published file", "path", path, "err", err)
			stale = append(stale, path)
			continue
		}
		if cur := newest[id]; cur == nil || gen > cur.GetGeneration() {
			if cur != nil {
				older = append(older, cur)
			}
			newest[id] = pb
		} else {
			older = append(older, pb)
		}
	}
	for _, path := range stale {
		os.Remove(path)
	}
	for _, pb := range older {
		s.retireLocked(pb)
	}
	for id, pb := range newest {
		s.published[id] = &published{pb: pb, source: recordedSource(pb.GetPath())}
		s.log.Info("re-announcing", "model", id, "generation", pb.GetGeneration(), "path", pb.GetPath())
	}
	return nil
}

// reannounce verifies a published file and rebuilds its announcement from
// the header and the annotations the loader recorded.
func (s *Server) reannounce(path, id string, gen uint64) (*corelmv1.PublishedModel, error) {
	if _, err := verifyPacked(path); err != nil {
		return nil, err
	}
	ctx := context.Background()
	s.checkFilePages(ctx, trace.SpanFromContext(ctx), id, path)
	pf, err := pack.Open(path)
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	if pf.Header.Generation != gen {
		return nil, fmt.Errorf("header generation %d differs from the name's %d", pf.Header.Generation, gen)
	}
	if a, _ := pf.Annotation("model_id"); a != id {
		return nil, fmt.Errorf("packed for model %q, named for %q", a, id)
	}
	pb, err := describe(path, id, gen)
	if err != nil {
		return nil, err
	}
	pb.SourceSha256 = append([]byte(nil), pf.Header.SourceDigest[:]...)
	pb.Architecture, _ = pf.String("general.architecture")
	pb.SourcePath, _ = pf.Annotation("source_path")
	pb.Options = recordedOptions(pf)
	return pb, nil
}

// recordedSource reads back the source identity a packed file was made
// from, so an unchanged source is not packed again after a restart.
func recordedSource(path string) sourceID {
	pf, err := pack.Open(path)
	if err != nil {
		return sourceID{}
	}
	defer pf.Close()
	num := func(key string) uint64 {
		v, _ := pf.Annotation(key)
		n, _ := strconv.ParseUint(v, 10, 64)
		return n
	}
	return sourceID{dev: num("source_dev"), ino: num("source_ino"), size: int64(num("source_size")), mtime: int64(num("source_mtime"))}
}
