package runtime_test

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// -golden-dir runs the golden comparison over a full golden set (e.g. the
// 60 files of llama.cpp's reference outputs) instead of the committed subset.
var goldenDir = flag.String("golden-dir", "", "directory of a full golden set (manifest.json, models/, logits/, tokens/)")

type goldenEntry struct {
	File       string  `json:"file"`
	Arch       string  `json:"arch"`
	Format     string  `json:"format"`
	NTokens    int     `json:"n_tokens"`
	NVocab     int     `json:"n_vocab"`
	Logits     string  `json:"logits"`
	Tokens     string  `json:"tokens"`
	TolNRMSE   float64 `json:"tol_nrmse"`
	NRMSEvsF32 float64 `json:"nrmse_vs_f32"`
}

// TestGoldenLogits compares corelm's logits for every position of a fixed
// token sequence with llama.cpp's on the same file.
func TestGoldenLogits(t *testing.T) {
	dir := "testdata/golden"
	if *goldenDir != "" {
		dir = *goldenDir
	}
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var entries []goldenEntry
	if err := json.Unmarshal(raw, &entries); err != nil {
		t.Fatal(err)
	}
	supported := map[string]bool{}
	for _, a := range runtime.Architectures() {
		supported[a] = true
	}
	pool := kernels.NewPool(kernels.DefaultThreads())
	defer pool.Close()
	ran := 0
	for _, e := range entries {
		if !supported[e.Arch] {
			continue
		}
		ran++
		t.Run(e.Arch+"-"+e.Format, func(t *testing.T) {
			l, err := runtime.OpenGGUF(filepath.Join(dir, e.File), model.Env{Pool: pool})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			ids := readTokens(t, filepath.Join(dir, e.Tokens))
			want := readF32(t, filepath.Join(dir, e.Logits))
			if len(ids) != e.NTokens || len(want) != e.NTokens*e.NVocab {
				t.Fatalf("golden data shape: %d tokens, %d logits", len(ids), len(want))
			}
			got := evalAll(t, l.Model, ids)
			nrmse, agree, clear := compare(got, want, e.NVocab, 1.0)
			t.Logf("NRMSE %.3e (limit %.3e, format's own noise vs F32 %.3e), argmax agreement %.3f (%d/%d clear)", nrmse, e.TolNRMSE, e.NRMSEvsF32, agree, clear[0], clear[1])
			if !(nrmse <= e.TolNRMSE) {
				t.Errorf("NRMSE %.4e exceeds the tolerance %.4e", nrmse, e.TolNRMSE)
			}
			if clear[0] != clear[1] {
				t.Errorf("argmax disagrees with llama.cpp at %d of %d positions where its top-2 margin is clear", clear[1]-clear[0], clear[1])
			}
		})
	}
	if ran == 0 {
		t.Fatal("no golden file of a supported architecture")
	}
}

func evalAll(t *testing.T, m model.Model, ids []int32) []float32 {
	t.Helper()
	st, err := m.NewState(model.StateOptions{Context: 256, Chunk: len(ids)})
	if err != nil {
		t.Fatal(err)
	}
	b := &model.Batch{Seqs: []model.SeqBatch{{State: st, Tokens: ids, Logits: len(ids)}}}
	if err := m.Forward(b); err != nil {
		t.Fatal(err)
	}
	return b.Seqs[0].Out
}

// compare returns the NRMSE of got against want, the argmax agreement, and
// [agreeing, total] over positions where want's top-2 margin exceeds margin.
func compare(got, want []float32, vocab int, margin float32) (float64, float64, [2]int) {
	var num, den float64
	for i := range want {
		d := float64(got[i] - want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	rows := len(want) / vocab
	agree := 0
	var clear [2]int
	for r := 0; r < rows; r++ {
		g, w := got[r*vocab:(r+1)*vocab], want[r*vocab:(r+1)*vocab]
		ga, wa := argmax(g), argmax(w)
		if ga == wa {
			agree++
		}
		second := float32(math.Inf(-1))
		for i, x := range w {
			if i != wa && x > second {
				second = x
			}
		}
		if w[wa]-second > margin {
			clear[1]++
			if ga == wa {
				clear[0]++
			}
		}
	}
	return math.Sqrt(num) / math.Sqrt(den), float64(agree) / float64(rows), clear
}

func argmax(x []float32) int {
	b := 0
	for i, v := range x {
		if v > x[b] {
			b = i
		}
	}
	return b
}

func readTokens(t *testing.T, path string) []int32 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int32
	for _, f := range strings.Fields(string(raw)) {
		v, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, int32(v))
	}
	return ids
}

func readF32(t *testing.T, path string) []float32 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw)%4 != 0 {
		t.Fatal(fmt.Errorf("%s: %d bytes is not a float32 array", path, len(raw)))
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}
