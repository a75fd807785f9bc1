package main

import (
	"context"
	"fmt"
	"os"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// openModel opens a model file, or the embedded demo model when path is
// empty or names it. A GGUF file is opened through the pack cache
// (runtime.DefaultPackCache; CORELM_PACK_CACHE=off turns it off): packed
// for this CPU's kernels the first time, its packed copy reused after.
func openModel(path string, threads int) (*runtime.Loaded, error) {
	return openWith(path, threads, runtime.DefaultPackCache())
}

// openWith is openModel with the pack cache pc (nil: none).
func openWith(path string, threads int, pc *runtime.PackCache) (*runtime.Loaded, error) {
	if threads <= 0 {
		threads = kernels.DefaultThreads()
	}
	env := model.Env{Pool: kernels.NewPool(threads)}
	if path == "" || models.IsName(path) {
		if _, err := os.Stat(path); path == "" || err != nil {
			return runtime.ParseGGUF(models.Stories, env)
		}
	}
	if pc != nil {
		var shown bool
		pc.Progress = func(path string, done, total int64) {
			if !shown {
				shown = true
				fmt.Fprintf(os.Stderr, "corelm: packing %s for this CPU's kernels into %s (%s, once: later runs reuse it; %s=off to skip)\n",
					path, pc.Dir, runtime.FormatBytes(total), runtime.PackCacheEnv)
			}
		}
	}
	l, note, err := pc.Open(context.Background(), path, env)
	if note != "" {
		fmt.Fprintf(os.Stderr, "corelm: %s: running the GGUF layout (%s)\n", path, note)
	}
	return l, err
}
