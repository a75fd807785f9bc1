package runtime_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/internal/runtimetest"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// TestPackCache: a GGUF file opened through the cache is packed once for
// this host, reused while unchanged, packed again (the old copy removed)
// when it changes, and gives the packed file's logits.
func TestPackCache(t *testing.T) {
	if runtime.HostTier() == pack.TierGeneric {
		t.Skip("this host's kernels read ggml's layout: nothing is packed")
	}
	src := filepath.Join(t.TempDir(), "m.gguf")
	data, err := os.ReadFile("testdata/golden/models/llama-Q4_K_M.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	env := model.Env{Pool: runtimetest.Pool(t, kernels.DefaultThreads())}
	packs := 0
	c := &runtime.PackCache{Dir: t.TempDir(), Progress: func(_ string, done, _ int64) {
		if done == 0 {
			packs++
		}
	}}
	open := func() *runtime.Loaded {
		t.Helper()
		l, note, err := c.Open(t.Context(), src, env)
		if err != nil || note != "" {
			t.Fatalf("open: %v %s", err, note)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	first := open()
	if first.Packed == nil || packs != 1 {
		t.Fatalf("first open: packed %v, %d packs", first.Packed != nil, packs)
	}
	if second := open(); second.Packed == nil || packs != 1 {
		t.Fatalf("second open: packed %v, %d packs; want the first copy reused", second.Packed != nil, packs)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(src, later, later); err != nil {
		t.Fatal(err)
	}
	third := open()
	files, _ := filepath.Glob(filepath.Join(c.Dir, "*.clm"))
	if third.Packed == nil || packs != 2 || len(files) != 1 {
		t.Fatalf("after a change: %d packs, %d files in the cache; want 2 and 1", packs, len(files))
	}
	ids := []int32{1, 20, 30, 40, 50, 60}
	direct, err := runtime.OpenPacked(files[0], env)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	want := runtimetest.Eval(t, direct.Model, ids, model.StateOptions{Context: 64}, 0)
	got := runtimetest.Eval(t, third.Model, ids, model.StateOptions{Context: 64}, 0)
	if nrmse, _, _ := compare(got, want, third.Model.Config().Vocab, 0); nrmse != 0 {
		t.Errorf("the cache's model differs from its packed file: NRMSE %g", nrmse)
	}
}
