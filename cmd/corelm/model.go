package main

import (
	"os"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// openModel opens a model file, or the embedded demo model when path is
// empty or names it.
func openModel(path string, threads int) (*runtime.Loaded, error) {
	if threads <= 0 {
		threads = kernels.DefaultThreads()
	}
	env := model.Env{Pool: kernels.NewPool(threads)}
	if path == "" || models.IsName(path) {
		if _, err := os.Stat(path); path == "" || err != nil {
			return runtime.ParseGGUF(models.Stories, env)
		}
	}
	return runtime.Open(path, env)
}
