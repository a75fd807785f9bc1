package runtime_test

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/internal/runtimetest"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sched"
)

// TestGoldenEmbeddings compares corelm's embeddings of the golden token
// sequence, made through the scheduler in chunks as the service makes them,
// with llama.cpp's on the same files (testdata/golden/embeddings: pooled,
// not normalised; see SOURCE.md), served at the context of the logit
// goldens (Phi-3 picks its LongRoPE factors by it). The tolerance is the
// file's logit tolerance, as NRMSE over the vector (a wrong pooling or a
// missing norm is far beyond it: NRMSE ≥ 0.2).
func TestGoldenEmbeddings(t *testing.T) {
	dir := "testdata/golden"
	tol := map[string]float64{}
	for _, e := range readManifest(t, dir) {
		tol[e.Arch+"-"+e.Format] = e.TolNRMSE
	}
	pool := runtimetest.Pool(t, kernels.DefaultThreads())
	for _, arch := range runtime.Architectures() {
		for _, format := range []string{"F32", "Q8_0", "Q4_K_M"} {
			name := arch + "-" + format
			t.Run(name, func(t *testing.T) {
				l, err := runtime.OpenGGUF(filepath.Join(dir, "models", name+".gguf"), model.Env{Pool: pool})
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				ids := runtimetest.ReadTokens(t, filepath.Join(dir, "tokens", arch+".txt"))
				s := sched.New(l.Model, sched.Config{MaxSeqs: 3, StepTokens: 40, Context: 256})
				defer s.Shutdown(t.Context())
				for _, p := range []model.Pooling{model.PoolMean, model.PoolCLS, model.PoolLast} {
					want := runtimetest.ReadF32(t, filepath.Join(dir, "embeddings", fmt.Sprintf("%s-%v.f32", name, p)))
					got := embed(t, s, ids, p)
					if len(got) != len(want) {
						t.Fatalf("%v: %d values, llama.cpp %d", p, len(got), len(want))
					}
					nrmse, cos := vectorDiff(got, want)
					t.Logf("%v: NRMSE %.3e (limit %.3e), cosine %.8f", p, nrmse, tol[name], cos)
					if !(nrmse <= tol[name]) {
						t.Errorf("%v pooling: NRMSE %.4e (limit %.4e), cosine %.8f vs llama.cpp", p, nrmse, tol[name], cos)
					}
				}
			})
		}
	}
}

func embed(t *testing.T, s *sched.Scheduler, ids []int32, p model.Pooling) []float32 {
	t.Helper()
	h, err := s.Submit(t.Context(), sched.Request{Prompt: ids, Pooling: p})
	if err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := h.Recv(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == sched.EventFinal {
			if ev.Final.Err != nil {
				t.Fatal(ev.Final.Err)
			}
			return ev.Final.Embedding
		}
	}
}

// vectorDiff is the RMS of got-want over the RMS of want, and their cosine
// similarity.
func vectorDiff(got, want []float32) (nrmse, cos float64) {
	var d2, w2, g2, gw float64
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		d2 += (g - w) * (g - w)
		w2 += w * w
		g2 += g * g
		gw += g * w
	}
	return math.Sqrt(d2 / w2), gw / math.Sqrt(g2*w2)
}
