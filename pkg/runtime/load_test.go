package runtime_test

import (
	"bytes"
	"slices"
	"testing"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack/packtest"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/quantize"
	"github.com/corelm/corelm/pkg/runtime/synth"
)

// TestOpenPacked opens the packed form of each model with runtime.Open: it
// must be recognised by its magic, seen through model.FromPack exactly as
// model.FromGGUF sees the source, and build the same configuration.
func TestOpenPacked(t *testing.T) {
	tiny, err := packtest.Tiny.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var olmoe bytes.Buffer // expert stacks: stored expert by expert
	if _, err := synth.Write(&olmoe, synth.Presets["golden-olmoe"], "olmoe", quantize.Schemes["Q4_K_M"], 1); err != nil {
		t.Fatal(err)
	}
	env := model.Env{Pool: kernels.NewPool(1)}
	tests := []struct {
		name string
		src  []byte
	}{
		{"stories", models.Stories},
		{"tiny-quantized", tiny},
		{"olmoe", olmoe.Bytes()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := gguf.Parse(tt.src)
			if err != nil {
				t.Fatal(err)
			}
			want, err := runtime.Build(model.FromGGUF(g), env)
			if err != nil {
				t.Fatal(err)
			}
			l := openPackedFile(t, g, env)
			if l.Packed == nil {
				t.Fatal("runtime.Open did not take the packed path")
			}
			if *l.Model.Config() != *want.Config() {
				t.Errorf("config from packed file %+v, from GGUF %+v", l.Model.Config(), want.Config())
			}
			src := model.FromGGUF(g)
			names := l.Source.TensorNames()
			if !slices.IsSorted(names) || len(names) != len(g.Tensors) {
				t.Fatalf("packed source lists %d tensors (sorted: %v), GGUF has %d", len(names), slices.IsSorted(names), len(g.Tensors))
			}
			for _, name := range src.TensorNames() {
				w, _ := src.LookupTensor(name)
				got, ok := l.Source.LookupTensor(name)
				want := w.Data
				if got.Layout == kernels.LayoutR16 {
					want = make([]byte, got.Bytes())
					kernels.RepackR16(w.Type, want, w.Data, w.Shape[0])
				}
				// An expert stack's experts are stored apart (in Parts).
				if !ok || got.Type != w.Type || !slices.Equal(got.Shape, w.Shape) || !bytes.Equal(bytes.Join(got.Pieces(), nil), want) {
					t.Errorf("tensor %s: packed %s %v %s, GGUF %s %v", name, got.Type, got.Shape, got.Layout, w.Type, w.Shape)
				}
			}
			if _, ok := l.Source.LookupTensor("no.such.tensor"); ok {
				t.Error("a missing tensor was found")
			}
		})
	}
}
