package pack

import (
	"testing"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// TestBuildFromPacked builds the same model from the GGUF file and from its
// packed form; both must agree on the configuration.
func TestBuildFromPacked(t *testing.T) {
	env := model.Env{Pool: kernels.NewPool(1)}
	for name, src := range sources(t) {
		t.Run(name, func(t *testing.T) {
			g, err := gguf.Parse(src)
			if err != nil {
				t.Fatal(err)
			}
			want, err := runtime.Build(model.FromGGUF(g), env)
			if err != nil {
				t.Fatal(err)
			}
			f, err := Parse(mustPack(t, src, Options{}))
			if err != nil {
				t.Fatal(err)
			}
			got, err := runtime.Build(f, env)
			if err != nil {
				t.Fatal(err)
			}
			if *got.Config() != *want.Config() {
				t.Errorf("config from packed file %+v, from GGUF %+v", got.Config(), want.Config())
			}
		})
	}
}
