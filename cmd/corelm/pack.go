package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
)

func runPack(ctx context.Context, args []string) error {
	fs := newFlags("pack")
	gen := fs.Uint64("generation", 1, "generation number recorded in the header")
	tierName := fs.String("tier", "host", "CPU tier to pack for: host (this machine), generic (ggml's layout only), avx2 or avx512vnni")
	if err := fs.parse(args, 2, "usage: corelm pack IN.gguf OUT.clm [--generation N] [--tier host|generic|avx2|avx512vnni]"); err != nil {
		return err
	}
	tier := runtime.HostTier()
	if *tierName != "host" {
		t, ok := pack.ParseTier(*tierName)
		if !ok {
			return usagef("--tier %q: want host, generic, avx2 or avx512vnni", *tierName)
		}
		tier = t
	}
	in, out := fs.Arg(0), fs.Arg(1)
	src, err := gguf.Open(in)
	if err != nil {
		return err
	}
	defer src.Close()
	// The same complete validation as `corelm inspect` and the loader.
	if _, err := runtime.Build(model.FromGGUF(src), model.Env{Pool: kernels.NewPool(1)}); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	plan, err := pack.NewPlan(src, pack.Options{Generation: *gen, Tier: tier, Annotations: map[string]string{"source_path": filepath.Base(in)}})
	if err != nil {
		return err
	}
	// Write beside the destination and rename, so OUT is never half-written.
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := tmp.Truncate(plan.Size()); err != nil {
		return err
	}
	if err := plan.Write(ctx, tmp); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	f, err := pack.Open(tmp.Name())
	if err != nil {
		return fmt.Errorf("re-reading the packed file: %w", err)
	}
	err = f.Verify()
	f.Close()
	if err != nil {
		return fmt.Errorf("re-reading the packed file: %w", err)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	fmt.Printf("%s: %d tensors, %s of tensor data, %s packed (generation %d)\n",
		out, len(src.Tensors), humanBytes(plan.DataBytes()), humanBytes(plan.Size()), *gen)
	return nil
}
