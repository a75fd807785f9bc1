package server

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"github.com/corelm/corelm/internal/leakcheck"
	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/pkg/runtime"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/loader/internal/loadertest"
)

// lease holds a reader's lease on a published file, as the inference
// service does while it maps a generation; the returned func lets go.
func lease(t *testing.T, path string) func() {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	var done bool
	release := func() {
		if !done {
			done = true
			f.Close()
		}
	}
	t.Cleanup(release)
	return release
}

// tinySize is the size of tiny.gguf packed, learnt from a loader of its own.
func tinySize(t *testing.T) int64 {
	t.Helper()
	c := inProcess(t, Options{SourceDir: loadertest.SourceDir(t), ShmDir: t.TempDir()})
	return loadertest.MustLoad(t, c, "m", "tiny.gguf", false).GetSizeBytes()
}

// TestReloadNeedsRoomForBoth: a reload keeps the current generation until
// the new one replaces it, so a budget that holds one copy refuses it at
// once, saying what to do; unloading first works, the load waiting until
// the reader of the unloaded generation lets go.
func TestReloadNeedsRoomForBoth(t *testing.T) {
	leakcheck.Check(t)
	size := tinySize(t)
	src, shm := loadertest.SourceDir(t), t.TempDir()
	waiting := make(chan string, 1)
	c := inProcess(t, Options{SourceDir: src, ShmDir: shm, Budget: size + size/2,
		drainWait: func(id string) { waiting <- id }})
	gen1 := loadertest.MustLoad(t, c, "m", "tiny.gguf", false)
	letGo := lease(t, gen1.GetPath())

	_, err := loadertest.LoadAll(t, c, &corelmv1.LoadModelRequest{ModelId: "m", Path: "tiny.gguf", Reload: true})
	loadertest.WantCode(t, err, codes.ResourceExhausted, "needs both", `unload "m" first`, runtime.FormatBytes(size+size/2))
	if files := loadertest.ShmFiles(t, shm); len(files) != 1 {
		t.Fatalf("a refused reload left %v", files)
	}

	if _, err := c.UnloadModel(t.Context(), &corelmv1.UnloadModelRequest{ModelId: "m"}); err != nil {
		t.Fatal(err)
	}
	// The unloaded generation is still mapped: it keeps its bytes, under
	// a name no reader will open.
	if files := loadertest.ShmFiles(t, shm); len(files) != 1 || !strings.HasPrefix(files[0], drainingPrefix) {
		t.Fatalf("after unload: %v, want one draining file", files)
	}
	done := make(chan *corelmv1.PublishedModel)
	go func() { done <- mustLoadIn(t, c, "m", "tiny.gguf") }()
	if id := <-waiting; id != "m" {
		t.Fatalf("waiting for %q", id)
	}
	letGo()
	gen2 := <-done
	if gen2 == nil || gen2.GetGeneration() <= gen1.GetGeneration() {
		t.Fatalf("load after the drain: %v", gen2)
	}
	if files := loadertest.ShmFiles(t, shm); len(files) != 1 || files[0] != filepath.Base(gen2.GetPath()) {
		t.Errorf("directory holds %v", files)
	}
}

// mustLoadIn is loadertest.MustLoad for another goroutine: nil on error.
func mustLoadIn(t *testing.T, c corelmv1.LoaderServiceClient, id, path string) *corelmv1.PublishedModel {
	resps, err := loadertest.LoadAll(t, c, &corelmv1.LoadModelRequest{ModelId: id, Path: path, Reload: true})
	if err != nil {
		t.Error(err)
		return nil
	}
	return resps[len(resps)-1].GetModel()
}

// TestReloadWaitsForDrain: with room for two copies, a reload is published
// beside the mapped generation; the next one waits until that one's
// reader lets go, and fails with the reason when it does not within the
// drain timeout.
func TestReloadWaitsForDrain(t *testing.T) {
	leakcheck.Check(t)
	size := tinySize(t)
	for _, drains := range []bool{true, false} {
		name := map[bool]string{true: "reader lets go", false: "drain timeout"}[drains]
		t.Run(name, func(t *testing.T) {
			src, shm := loadertest.SourceDir(t), t.TempDir()
			waiting := make(chan string, 1)
			timeout := time.Minute
			if !drains {
				timeout = 200 * time.Millisecond
			}
			c := inProcess(t, Options{SourceDir: src, ShmDir: shm, Budget: 2*size + size/2, DrainTimeout: timeout,
				drainWait: func(id string) { waiting <- id }})
			gen1 := loadertest.MustLoad(t, c, "m", "tiny.gguf", false)
			letGo := lease(t, gen1.GetPath())
			gen2 := loadertest.MustLoad(t, c, "m", "tiny.gguf", true) // two copies fit
			if gen2.GetGeneration() != 2 {
				t.Fatalf("second generation %d", gen2.GetGeneration())
			}
			if !drains {
				start := time.Now()
				_, err := loadertest.LoadAll(t, c, &corelmv1.LoadModelRequest{ModelId: "m", Path: "tiny.gguf", Reload: true})
				loadertest.WantCode(t, err, codes.ResourceExhausted, "did not within 200ms (--drain-timeout)", "still mapped")
				if d := time.Since(start); d < timeout {
					t.Errorf("failed after %v, before the drain timeout", d)
				}
				<-waiting
				return
			}
			done := make(chan *corelmv1.PublishedModel)
			go func() { done <- mustLoadIn(t, c, "m", "tiny.gguf") }()
			<-waiting
			letGo()
			if gen3 := <-done; gen3 == nil || gen3.GetGeneration() != 3 {
				t.Fatalf("third generation: %v", gen3)
			}
			// gen2 had no reader: gone at once; gen1 gone once let go.
			if files := loadertest.ShmFiles(t, shm); len(files) != 1 {
				t.Errorf("directory holds %v", files)
			}
		})
	}
}

// TestDrainingSurvivesRestart: a restarted loader counts a superseded
// generation an earlier run left still mapped, and removes one whose
// readers have gone.
func TestDrainingSurvivesRestart(t *testing.T) {
	leakcheck.Check(t)
	size := tinySize(t)
	src, shm := loadertest.SourceDir(t), t.TempDir()
	conn, stop := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return Serve(ctx, lis, Config{Options: Options{SourceDir: src, ShmDir: shm, Budget: 10 * size, Logger: slog.New(slog.DiscardHandler)}})
	})
	c := corelmv1.NewLoaderServiceClient(conn)
	gen1 := loadertest.MustLoad(t, c, "m", "tiny.gguf", false)
	letGo := lease(t, gen1.GetPath())
	loadertest.MustLoad(t, c, "m", "tiny.gguf", true)
	other := loadertest.MustLoad(t, c, "o", "tiny.gguf", false)
	letGoOther := lease(t, other.GetPath())
	loadertest.MustLoad(t, c, "o", "tiny.gguf", true)
	stop()
	letGoOther() // o's first generation drains while no loader runs

	waiting := make(chan string, 1)
	c = inProcess(t, Options{SourceDir: src, ShmDir: shm, Budget: 3*size + size/2,
		drainWait: func(id string) { waiting <- id }})
	files := loadertest.ShmFiles(t, shm)
	if len(files) != 3 {
		t.Fatalf("after restart: %v, want m.2, o.2 and m.1 draining", files)
	}
	// m.2 + o.2 + m.1 (draining) + a new one exceed 3.5 copies: wait.
	done := make(chan *corelmv1.PublishedModel)
	go func() { done <- mustLoadIn(t, c, "n", "tiny.gguf") }()
	<-waiting
	letGo()
	if n := <-done; n == nil {
		t.Fatal("load after the drain failed")
	}
}

// TestDefaultBudget: never more than memory less the margin, nor more than
// the file system holds.
func TestDefaultBudget(t *testing.T) {
	mem, err := runtime.DetectMemory()
	if err != nil {
		t.Fatal(err)
	}
	byMem, _, err := runtime.BudgetFrom(mem)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{t.TempDir(), "/dev/shm"} {
		b, how, err := DefaultBudget(dir)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		if size := int64(st.Blocks) * st.Bsize; b <= 0 || b > byMem || b > size {
			t.Errorf("%s: budget %d (%s); memory allows %d, the file system holds %d", dir, b, how, byMem, size)
		}
		t.Logf("%s: %s (%s)", dir, runtime.FormatBytes(b), how)
	}
}
