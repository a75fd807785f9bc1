package runtime_test

import (
	"testing"

	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/internal/runtimetest"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// noTensors is a source with metadata only.
type noTensors struct{ runtimetest.Meta }

func (noTensors) LookupTensor(string) (model.TensorInfo, bool) { return model.TensorInfo{}, false }
func (noTensors) TensorNames() []string                        { return nil }

// TestBuildFailsWithNil: whatever the architecture, a model that does not
// bind comes back as a nil model.Model, not as an interface holding a nil
// pointer (which would compare != nil).
func TestBuildFailsWithNil(t *testing.T) {
	for _, arch := range runtime.Architectures() {
		src := noTensors{runtimetest.Meta{model.KeyArchitecture: arch}}
		m, err := runtime.Build(src, model.Env{})
		if err == nil || m != nil {
			t.Errorf("%s: Build of a model without tensors = (%v, %v), want (nil, an error)", arch, m, err)
		}
	}
}
