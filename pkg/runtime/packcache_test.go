package runtime_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

// TestPackCacheBound: with room for one packed copy, packing a second
// model evicts the least recently used one, a hit renews a copy's use, and
// the partial file of a packing process that died is swept while one of a
// live process stays.
func TestPackCacheBound(t *testing.T) {
	if runtime.HostTier() == pack.TierGeneric {
		t.Skip("this host's kernels read ggml's layout: nothing is packed")
	}
	dir := t.TempDir()
	var srcs []string
	for _, name := range []string{"llama-Q4_K_M", "qwen2-Q4_K_M", "phi3-Q4_K_M"} {
		data, err := os.ReadFile("testdata/golden/models/" + name + ".gguf")
		if err != nil {
			t.Fatal(err)
		}
		src := filepath.Join(dir, name+".gguf")
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, src)
	}
	cacheDir := t.TempDir()
	dead := filepath.Join(cacheDir, ".packing-2147483647-1")
	live := filepath.Join(cacheDir, fmt.Sprintf(".packing-%d-1", os.Getppid()))
	old := time.Now().Add(-time.Hour)
	for _, f := range []string{dead, live} {
		if err := os.WriteFile(f, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f, old, old); err != nil {
			t.Fatal(err)
		}
	}
	packs := 0
	c := &runtime.PackCache{Dir: cacheDir, Progress: func(_ string, done, _ int64) {
		if done == 0 {
			packs++
		}
	}}
	packed := func(src string) string {
		t.Helper()
		p, note, err := c.Packed(t.Context(), src)
		if err != nil || note != "" || p == "" {
			t.Fatalf("%s: %q %q %v", src, p, note, err)
		}
		return p
	}
	copies := func() []string {
		files, _ := filepath.Glob(filepath.Join(cacheDir, "*.clm"))
		return files
	}
	a := packed(srcs[0])
	fi, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	c.MaxBytes = fi.Size() + fi.Size()/2 // one copy of either model, not two
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("the dead packer's partial file is still there (%v)", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live process's partial file went: %v", err)
	}
	b := packed(srcs[1])
	if got := copies(); len(got) != 1 || got[0] != b || packs != 2 {
		t.Fatalf("after packing a second model: copies %v, %d packs; want only %s", got, packs, b)
	}
	// Room for two: a comes back beside b. b is then used (a hit, no
	// pack) after a, so a third model evicts a, the least recently used.
	c.MaxBytes = 2*fi.Size() + fi.Size()/2
	a = packed(srcs[0])
	if len(copies()) != 2 || packs != 3 {
		t.Fatalf("with room for two: copies %v, %d packs", copies(), packs)
	}
	older := time.Now().Add(-time.Hour)
	if err := os.Chtimes(b, older, older); err != nil {
		t.Fatal(err)
	}
	if packed(srcs[1]) != b || packs != 3 {
		t.Fatal("a hit packed again")
	}
	d := packed(srcs[2])
	if got := copies(); len(got) != 2 || !slices.Contains(got, b) || !slices.Contains(got, d) || slices.Contains(got, a) || packs != 4 {
		t.Fatalf("copies %v after a third model; want %s (used last) and %s", got, b, d)
	}
}
