package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/quantize"
	"github.com/corelm/corelm/pkg/runtime/synth"
)

func runQuantize(ctx context.Context, args []string) error {
	fs := newFlags("quantize")
	threads := fs.Int("threads", 0, "threads (default: the CPUs this process may use)")
	if err := fs.parse(args, 3, "usage: corelm quantize [--threads N] IN.gguf OUT.gguf TYPE"); err != nil {
		return err
	}
	in, out, typ := fs.Arg(0), fs.Arg(1), fs.Arg(2)
	scheme, err := quantize.ParseScheme(typ)
	if err != nil {
		return usagef("%v", err)
	}
	src, err := gguf.Open(in)
	if err != nil {
		return err
	}
	defer src.Close()
	pool := kernels.NewPool(*threads)
	defer pool.Close()
	return writeAtomically(out, func(w *bufio.Writer) error {
		return quantize.Convert(ctx, src, scheme, pool, w, func(done, total int) {
			fmt.Fprintf(os.Stderr, "\rquantizing %d/%d tensors", done, total)
			if done == total {
				fmt.Fprintln(os.Stderr)
			}
		})
	})
}

func runSynth(ctx context.Context, args []string) error {
	fs := newFlags("synth")
	like := fs.String("like", "", "shape to copy: "+strings.Join(synth.PresetNames(), ", "))
	typ := fs.String("type", "Q4_K_M", "weight format or mix")
	seed := fs.Uint64("seed", 1, "random seed")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	shape, ok := synth.Presets[*like]
	if !ok || fs.NArg() != 1 {
		return usagef("usage: corelm synth --like {%s} [--type Q4_K_M] OUT.gguf", strings.Join(synth.PresetNames(), "|"))
	}
	scheme, err := quantize.ParseScheme(*typ)
	if err != nil {
		return usagef("%v", err)
	}
	return writeAtomically(fs.Arg(0), func(w *bufio.Writer) error {
		_, err := synth.Write(w, shape, "synthetic-"+*like, scheme, *seed)
		return err
	})
}

// writeAtomically writes path through a temporary file in the same
// directory, renamed into place only when write succeeds.
func writeAtomically(path string, write func(*bufio.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	if err := write(w); err != nil {
		tmp.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
