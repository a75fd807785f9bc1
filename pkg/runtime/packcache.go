package runtime

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// PackCache keeps GGUF files packed for this host's kernels, so that every
// way of opening a GGUF file (the CLI, the inference service's
// --model-file) runs the packed layout's kernels, not only models that went
// through the loader. A file is packed the first time it is opened and the
// packed copy reused while the source is unchanged (same device, inode,
// size and modification time) and the host's tier and the packer's choice
// of layouts (pack.Layouts) the same. After packing, the source's page cache
// is dropped: the packed file is the one resident copy of the weights.
//
// The cache is bounded: in shared memory its files are RAM that nothing
// else reclaims, so before a file is packed the least recently used copies
// go until the copies left and the new one fit in MaxBytes (a copy being
// served keeps its pages until its process unmaps it), and the partial
// files of packs whose process died are swept.
type PackCache struct {
	Dir string
	// MaxBytes bounds the packed copies kept; 0 means half of Dir's
	// filesystem. A copy larger than the bound is still made when the
	// filesystem has room for it (the cache then holds that one only).
	MaxBytes int64
	// Progress, when set, is told when a file is packed (before and as it
	// goes): done and total bytes.
	Progress func(path string, done, total int64)

	err error // a bad PackCacheMaxEnv, returned by Packed
}

// PackCacheEnv names the pack cache directory; "off" turns the cache off.
// PackCacheMaxEnv bounds its size (PackCache.MaxBytes, as ParseBytes reads
// it: "8GiB").
const (
	PackCacheEnv    = "CORELM_PACK_CACHE"
	PackCacheMaxEnv = "CORELM_PACK_CACHE_MAX"
)

// DefaultPackCache is the cache in $CORELM_PACK_CACHE, else in shared
// memory (/dev/shm/corelm-packed, where the packed pages are the resident
// copy, as with the loader), else in the user's cache directory. It is nil
// when the variable says "off".
func DefaultPackCache() *PackCache {
	switch dir := os.Getenv(PackCacheEnv); dir {
	case "off":
		return nil
	case "":
	default:
		return NewPackCache(dir)
	}
	if unix.Access("/dev/shm", unix.W_OK) == nil {
		return NewPackCache("/dev/shm/corelm-packed")
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return NewPackCache(filepath.Join(dir, "corelm", "packed"))
	}
	return nil
}

// NewPackCache is a cache in dir bounded by $CORELM_PACK_CACHE_MAX (half
// of dir's filesystem when unset); a value that is no size is an error at
// the cache's first use.
func NewPackCache(dir string) *PackCache {
	c := &PackCache{Dir: dir}
	if v := os.Getenv(PackCacheMaxEnv); v != "" {
		if c.MaxBytes, c.err = ParseBytes(v); c.err != nil {
			c.err = fmt.Errorf("%s: %w", PackCacheMaxEnv, c.err)
		}
	}
	return c
}

// Open opens a model file as runtime.Open does, but a GGUF file through the
// cache: its packed copy, made now if there is none. When packing cannot
// help (this host's tier reads ggml's layout) or the cache cannot hold the
// file, the GGUF file itself is opened, and why is in the returned note.
func (c *PackCache) Open(ctx context.Context, path string, env model.Env) (l *Loaded, note string, err error) {
	if c == nil {
		l, err := Open(path, env)
		return l, "", err
	}
	packed, note, err := c.Packed(ctx, path)
	if err != nil {
		return nil, "", err
	}
	if packed == "" {
		l, err := Open(path, env)
		return l, note, err
	}
	l, err = OpenPacked(packed, env)
	return l, note, err
}

// Packed returns the packed copy of the GGUF file at path, packing it
// first if the cache has none. It returns "" when path is not a GGUF file
// or packing would not change its layout here, and "" with a note saying
// why when the cache cannot hold the copy.
func (c *PackCache) Packed(ctx context.Context, path string) (packed, note string, err error) {
	if c.err != nil {
		return "", "", c.err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", "", err
	}
	src, err := os.Open(abs)
	if err != nil {
		return "", "", err
	}
	defer src.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return "", "", err
	}
	magic := make([]byte, 4)
	if _, err := src.ReadAt(magic, 0); err != nil || string(magic) != "GGUF" {
		return "", "", nil // not a GGUF file
	}
	tier := HostTier()
	pathKey := sha256.Sum256([]byte(abs))
	identity := sha256.Sum256(fmt.Appendf(nil, "%d/%d/%d/%d.%d/%v/%d", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, tier, pack.Layouts))
	prefix := fmt.Sprintf("%x-", pathKey[:6])
	name := filepath.Join(c.Dir, fmt.Sprintf("%s%x.clm", prefix, identity[:8]))
	if f, err := pack.Open(name); err == nil {
		f.Close()
		now := time.Now()
		os.Chtimes(name, now, now) // its last use, for eviction
		return name, "", nil
	}
	g, err := gguf.Open(abs)
	if err != nil {
		return "", "", err
	}
	defer g.Close()
	opts := pack.Options{Tier: tier, Source: src, Annotations: map[string]string{
		"source_path": abs, "source_size": strconv.FormatInt(st.Size, 10)}}
	if c.Progress != nil {
		opts.Progress = func(done, total int64) { c.Progress(abs, done, total) }
	}
	plan, err := pack.NewPlan(g, opts)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", path, err)
	}
	if plan.Tier() == pack.TierGeneric {
		return "", "", nil // this host's kernels read ggml's layout: nothing to gain
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return "", fmt.Sprintf("no pack cache: %v", err), nil
	}
	c.makeRoom(plan.Size())
	var fs unix.Statfs_t
	if err := unix.Statfs(c.Dir, &fs); err == nil && int64(fs.Bavail)*int64(fs.Bsize) < plan.Size() {
		return "", fmt.Sprintf("no room in %s for the packed copy (%s free, %s needed)", c.Dir,
			FormatBytes(int64(fs.Bavail)*int64(fs.Bsize)), FormatBytes(plan.Size())), nil
	}
	tmp, err := os.CreateTemp(c.Dir, fmt.Sprintf("%s%d-*", packingPrefix, os.Getpid()))
	if err != nil {
		return "", fmt.Sprintf("no pack cache: %v", err), nil
	}
	defer os.Remove(tmp.Name()) // after the rename: a no-op
	defer tmp.Close()
	if err := tmp.Truncate(plan.Size()); err != nil {
		return "", "", err
	}
	if c.Progress != nil {
		c.Progress(abs, 0, plan.DataBytes())
	}
	if err := plan.Write(ctx, tmp); err != nil {
		return "", "", fmt.Errorf("packing %s into %s: %w", path, c.Dir, err)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return "", "", err
	}
	if err := tmp.Close(); err != nil {
		return "", "", err
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return "", "", err
	}
	// Older copies of the same path go; so do the source's cached pages.
	if old, err := filepath.Glob(filepath.Join(c.Dir, prefix+"*.clm")); err == nil {
		for _, o := range old {
			if o != name {
				os.Remove(o)
			}
		}
	}
	unix.Fadvise(int(src.Fd()), 0, 0, unix.FADV_DONTNEED)
	return name, "", nil
}

// packingPrefix starts the name of a file being packed, followed by the
// packing process's id.
const packingPrefix = ".packing-"

// copyName matches the cache's packed copies: <path key>-<identity>.clm in
// hex (no other file in Dir is ever removed).
var copyName = regexp.MustCompile(`^[0-9a-f]{12}-[0-9a-f]{16}\.clm$`)

// makeRoom removes the partial files of packing processes that are gone,
// then the least recently used packed copies until those left and need
// more bytes fit in the bound (MaxBytes, or half the filesystem). Removing
// a copy another process maps is safe: its pages stay until it unmaps them.
func (c *PackCache) makeRoom(need int64) {
	entries, err := os.ReadDir(c.Dir)
	if err != nil {
		return
	}
	type copyFile struct {
		path string
		size int64
		used time.Time
	}
	var copies []copyFile
	var total int64
	for _, e := range entries {
		name := e.Name()
		if pid, ok := strings.CutPrefix(name, packingPrefix); ok {
			pid, _, _ = strings.Cut(pid, "-")
			// A pack writes as it goes: a file of no process here, idle
			// for a minute, is left over (another PID namespace sharing
			// the directory would still be writing).
			n, err := strconv.Atoi(pid)
			if fi, ierr := e.Info(); err == nil && ierr == nil && n != os.Getpid() && unix.Kill(n, 0) == unix.ESRCH &&
				time.Since(fi.ModTime()) > time.Minute {
				os.Remove(filepath.Join(c.Dir, name))
			}
			continue
		}
		if !copyName.MatchString(name) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		copies = append(copies, copyFile{filepath.Join(c.Dir, name), fi.Size(), fi.ModTime()})
		total += fi.Size()
	}
	bound := c.MaxBytes
	if bound <= 0 {
		var fs unix.Statfs_t
		if unix.Statfs(c.Dir, &fs) != nil {
			return
		}
		bound = int64(fs.Blocks) * int64(fs.Bsize) / 2
	}
	slices.SortFunc(copies, func(a, b copyFile) int { return a.used.Compare(b.used) })
	for _, cp := range copies {
		if total+need <= bound {
			break
		}
		if os.Remove(cp.path) == nil {
			total -= cp.size
		}
	}
}
