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

// cpuTime is the CPU time this process has used, in user mode and in the
// kernel.
func cpuTime() (user, sys float64) {
	var r unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &r)
	return float64(r.Utime.Nano()) / 1e9, float64(r.Stime.Nano()) / 1e9
}

// reportCPU reports the CPU time of the timed runs (user and kernel
// seconds in all) per run: on a shared host, where wall times depend on
// the other load, the CPU a load or copy takes does not (much).
func reportCPU(b *testing.B, runs int, user, sys float64) {
	b.ReportMetric(user/float64(max(runs, 1)), "user-s/op")
	b.ReportMetric(sys/float64(max(runs, 1)), "sys-s/op")
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
			var user, sys float64
			runs := 0
			for b.Loop() {
				b.StopTimer()
				sourceCache(b, path, state)
				u0, s0 := cpuTime()
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
				b.StopTimer()
				u1, s1 := cpuTime()
				user, sys, runs = user+u1-u0, sys+s1-s0, runs+1
				b.StartTimer()
			}
			reportCPU(b, runs, user, sys)
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
			var user, sys float64
			runs := 0
			for b.Loop() {
				b.StopTimer()
				sourceCache(b, path, state)
				u0, s0 := cpuTime()
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
				u1, s1 := cpuTime()
				user, sys, runs = user+u1-u0, sys+s1-s0, runs+1
				os.Remove(dst) // freeing the pages is not the copy's
				b.StartTimer()
			}
			reportCPU(b, runs, user, sys)
		})
	}
}
