package server

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/loader/internal/loadertest"
)

// Tests that need a seam inside the server run it in-process.

// fullAfter is a file system that fills up past n bytes.
type fullAfter struct {
	w io.WriterAt
	n int64
}

func (f fullAfter) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.n {
		return 0, unix.ENOSPC
	}
	return f.w.WriteAt(p, off)
}

// TestFailedLoadLeavesNothing: a load that fails half-way gives the
// client the cause and leaves no file behind.
func TestFailedLoadLeavesNothing(t *testing.T) {
	tests := []struct {
		name  string
		seam  func(t *testing.T, src string, o *Options)
		path  string
		code  codes.Code
		words []string
	}{
		{"ENOSPC writing", func(t *testing.T, src string, o *Options) {
			o.writer = func(f *os.File) io.WriterAt { return fullAfter{f, 1 << 20} }
		}, "stories.gguf", codes.ResourceExhausted, []string{"writing", "no space left on device"}},
		{"source truncated after validation", func(t *testing.T, src string, o *Options) {
			o.afterValidate = func(string) {
				// The file shrinks under the loader's mapping.
				if err := os.Truncate(filepath.Join(src, "tiny.gguf"), 1000); err != nil {
					t.Error(err)
				}
			}
		}, "tiny.gguf", codes.InvalidArgument, []string{"tiny.gguf", "source file changed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, shm := loadertest.SourceDir(t), t.TempDir()
			opts := Options{SourceDir: src, ShmDir: shm}
			tt.seam(t, src, &opts)
			_, err := loadertest.LoadAll(t, inProcess(t, opts), &corelmv1.LoadModelRequest{ModelId: "m", Path: tt.path})
			loadertest.WantCode(t, err, tt.code, tt.words...)
			if files := loadertest.ShmFiles(t, shm); len(files) != 0 {
				t.Fatalf("files left: %v", files)
			}
		})
	}
}

// TestLoadsAreIndependentAndCoalesce holds one model's load after
// validation: listing and loading another model proceed, and a second
// request for the held model joins the first.
func TestLoadsAreIndependentAndCoalesce(t *testing.T) {
	src, shm := loadertest.SourceDir(t), t.TempDir()
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	var slowLoads atomic.Int32
	c := inProcess(t, Options{SourceDir: src, ShmDir: shm, afterValidate: func(id string) {
		if id == "slow" {
			slowLoads.Add(1)
			entered <- struct{}{}
			<-release
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	type result struct {
		first, last *corelmv1.LoadModelResponse
		err         error
	}
	results := make(chan result, 2)
	joined := make(chan struct{}, 2)
	var wg sync.WaitGroup
	start := func() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream, err := c.LoadModel(ctx, &corelmv1.LoadModelRequest{ModelId: "slow", Path: "tiny.gguf"})
			if err != nil {
				results <- result{err: err}
				return
			}
			var r result
			for {
				resp, err := stream.Recv()
				if err != nil {
					if r.last == nil || r.last.GetStage() != corelmv1.LoadStage_LOAD_STAGE_READY {
						r.err = err
					}
					results <- r
					return
				}
				if r.first == nil {
					r.first = resp
					joined <- struct{}{}
				}
				r.last = resp
			}
		}()
	}
	start()
	<-entered
	<-joined
	start()
	<-joined // the second request is attached to the load in flight

	// Neither listing nor another model waits for the held load.
	if _, err := c.ListModels(ctx, &corelmv1.LoaderServiceListModelsRequest{}); err != nil {
		t.Fatal(err)
	}
	fast := loadertest.MustLoad(t, c, "fast", "stories.gguf", false)
	// A different path for the model in flight is refused.
	_, err := loadertest.LoadAll(t, c, &corelmv1.LoadModelRequest{ModelId: "slow", Path: "stories.gguf"})
	loadertest.WantCode(t, err, codes.Aborted, "tiny.gguf")

	close(release)
	wg.Wait()
	close(results)
	for r := range results {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.first.GetStage() == corelmv1.LoadStage_LOAD_STAGE_READY || r.last.GetReused() || r.last.GetModel().GetGeneration() != 1 {
			t.Errorf("coalesced load: first %v, last %v", r.first, r.last)
		}
	}
	if n := slowLoads.Load(); n != 1 {
		t.Errorf("%d loads ran for two coalesced requests", n)
	}
	if fast.GetGeneration() != 1 {
		t.Errorf("fast model generation %d", fast.GetGeneration())
	}
}

// TestCancelledLoadLeavesNothing cancels the only request of a load.
func TestCancelledLoadLeavesNothing(t *testing.T) {
	src, shm := loadertest.SourceDir(t), t.TempDir()
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	c := inProcess(t, Options{SourceDir: src, ShmDir: shm, afterValidate: func(id string) {
		once.Do(func() {
			close(entered)
			<-release
		})
	}})
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.LoadModel(ctx, &corelmv1.LoadModelRequest{ModelId: "m", Path: "tiny.gguf"})
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	cancel()
	_, err = stream.Recv()
	for err == nil {
		_, err = stream.Recv()
	}
	loadertest.WantCode(t, err, codes.Canceled)
	close(release)
	// The load notices the cancellation and cleans up; a later load of
	// the same model works.
	m := loadertest.MustLoad(t, c, "m", "tiny.gguf", false)
	if files := loadertest.ShmFiles(t, shm); len(files) != 1 || files[0] != filepath.Base(m.GetPath()) {
		t.Errorf("directory holds %v", files)
	}
}
