package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.opentelemetry.io/otel/trace"

	"github.com/corelm/corelm/internal/smaps"
)

// shmMount describes the file system a directory lives on, as far as the
// speed of the weights mapped from it depends on it.
type shmMount struct {
	point string // mount point
	fs    string // file system type, e.g. "tmpfs"
	huge  string // tmpfs huge= option ("never" when absent)
}

// hugePages reports whether files written to the mount get transparent huge
// pages: a tmpfs mounted huge=always or huge=within_size. (huge=advise needs
// an madvise on a mapping, which a file written with pwrite never has.)
func (m shmMount) hugePages() bool {
	return m.fs == "tmpfs" && (m.huge == "always" || m.huge == "within_size")
}

// findMount returns the mount of dir (absolute, symlinks resolved) in a
// /proc/self/mountinfo listing: the last listed mount whose mount point is
// dir or one of its parents, as the kernel stacks them.
func findMount(mountinfo io.Reader, dir string) (shmMount, bool) {
	var best shmMount
	found := false
	sc := bufio.NewScanner(mountinfo)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// ID parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		point := unescapeMount(f[4])
		if !within(dir, point) || (found && len(point) < len(best.point)) {
			continue
		}
		best, found = shmMount{point: point, fs: g[0], huge: "never"}, true
		for _, o := range strings.Split(g[2], ",") {
			if v, ok := strings.CutPrefix(o, "huge="); ok {
				best.huge = v
			}
		}
	}
	return best, found
}

// within reports whether path is dir or lies under it.
func within(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// unescapeMount undoes mountinfo's octal escapes of space, tab, newline
// and backslash.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// checkPages logs what the shared-memory directory's mount means for
// decode speed; it never fails the start-up.
func (s *Server) checkPages() {
	dir, err := filepath.EvalSymlinks(s.shmDir)
	if err != nil {
		return
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	m, ok := findMount(f, dir)
	switch {
	case !ok:
		return
	case m.fs != "tmpfs":
		s.log.Warn("the shared-memory directory is not on a tmpfs: published models are ordinary files on "+m.fs+
			" and inference maps them from the page cache; use a tmpfs (docker-compose.yml mounts one)",
			"dir", dir, "mount", m.point, "fs", m.fs)
	case !m.hugePages():
		s.log.Warn("the shared-memory tmpfs gives 4 KiB pages (huge="+m.huge+"): decode can read the weights up to "+
			"~40% slower than from 2 MiB pages on a busy host; mount it with huge=within_size (see docker-compose.yml)",
			"dir", dir, "mount", m.point)
	default:
		s.hugeMount = true
		s.log.Info("the shared-memory tmpfs gives huge pages", "dir", dir, "mount", m.point, "huge", m.huge)
	}
}

// checkFilePages, on a tmpfs that gives huge pages, maps the packed file at
// path whole, records on span the share of it in 2 MiB pages and warns
// when the tmpfs gave it too few of them (smaps.PartlyHuge).
func (s *Server) checkFilePages(ctx context.Context, span trace.Span, id, path string) {
	if !s.hugeMount {
		return // checkPages warned at start-up
	}
	if rss, huge, err := smaps.Pages(path); err == nil && rss > 0 {
		s.warnFilePages(ctx, span, id, rss, huge)
	}
}

// warnFilePages records the share of a file's rss resident bytes in 2 MiB
// pages (huge) on span and warns when it is under 95%.
func (s *Server) warnFilePages(ctx context.Context, span trace.Span, id string, rss, huge int64) {
	share := float64(huge) / float64(rss)
	span.SetAttributes(keyHugeShare.Float64(share))
	if smaps.PartlyHuge(rss, huge) {
		s.log.WarnContext(ctx, fmt.Sprintf("the packed file sits only %.0f%% in 2 MiB pages: the shared-memory tmpfs ran short of free "+
			"2 MiB blocks while it was written (fragmented memory) and gave the rest 4 KiB pages, which decode reads slower; "+
			"reload the model when more memory is free or after compacting it (echo 1 > /proc/sys/vm/compact_memory)", 100*share),
			"model", id, "huge_bytes", huge, "resident_bytes", rss)
	}
}
