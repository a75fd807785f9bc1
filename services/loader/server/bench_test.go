package server

import (
	"cmp"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corelm/corelm/pkg/formats/pack/packtest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// benchSource is the file CORELM_BENCH_GGUF names (e.g. an 8B-shaped
// Q4_K_M file), else a synthetic ~200 MB Q8_0 Llama written for the run.
func benchSource(b *testing.B) (dir, path string, size int64) {
	b.Helper()
	if path := os.Getenv("CORELM_BENCH_GGUF"); path != "" {
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		return filepath.Dir(path), path, fi.Size()
	}
	dir = b.TempDir()
	path = filepath.Join(dir, "large.gguf")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if size, err = packtest.Large(200 << 20).Writer().WriteTo(f); err != nil {
		b.Fatal(err)
	}
	return dir, path, size
}

// benchShm is a directory in CORELM_BENCH_SHM (e.g. a huge-page tmpfs),
// else on /dev/shm when there is one (the real target).
func benchShm(b *testing.B) string {
	b.Helper()
	dir, err := os.MkdirTemp(cmp.Or(os.Getenv("CORELM_BENCH_SHM"), "/dev/shm"), "corelm-bench-")
	if err != nil {
		return b.TempDir()
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// sourceCache puts the source file in the page cache ("warm") or takes it
// out ("cold", where the file system allows) before a timed run.
func sourceCache(b *testing.B, path, state string) {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if state == "cold" {
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			b.Fatal(err)
		}
		return
	}
	if _, err := io.Copy(io.Discard, f); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLoadPackPublish measures a whole load: validation, packing with
// checksums and source digest, fsync, verification of the manifest,
// rename; from a source in the page cache (warm: read through it) and not
// (cold: read with O_DIRECT). A load drops the source's pages at its end.
func BenchmarkLoadPackPublish(b *testing.B) {
	src, path, size := benchSource(b)
	for _, state := range []string{"cold", "warm"} {
		b.Run(state, func(b *testing.B) {
			// A server and directory per run: a reload would hold two
			// copies of the model at once.
			s, err := New(Options{SourceDir: src, ShmDir: benchShm(b), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if err := s.Start(); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(size)
			for b.Loop() {
				b.StopTimer()
				sourceCache(b, path, state)
				b.StartTimer()
				l, _, err := s.startLoad(&corelmv1.LoadModelRequest{ModelId: "large", Path: filepath.Base(path), Reload: true})
				if err != nil {
					b.Fatal(err)
				}
				<-l.done
				s.leave(l)
				if l.err != nil {
					b.Fatal(l.err)
				}
			}
		})
	}
}

// BenchmarkPlainCopy copies the same file to the same directory (io.Copy
// and fsync), from the page cache and not: the floor.
func BenchmarkPlainCopy(b *testing.B) {
	_, path, size := benchSource(b)
	dst := filepath.Join(benchShm(b), "copy")
	for _, state := range []string{"cold", "warm"} {
		b.Run(state, func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				b.StopTimer()
				sourceCache(b, path, state)
				b.StartTimer()
				in, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				out, err := os.Create(dst)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(out, in); err != nil {
					b.Fatal(err)
				}
				if err := out.Sync(); err != nil {
					b.Fatal(err)
				}
				in.Close()
				out.Close()
				b.StopTimer()
				os.Remove(dst) // freeing the pages is not the copy's
				b.StartTimer()
			}
		})
	}
}
