package quantize_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/quantize"
	"github.com/corelm/corelm/pkg/runtime/synth"
)

// Deeper models than the golden files' two layers, so that the mixes'
// layer rules pick different types along the depth: untied (llama, with
// rows of 384 that 256-value blocks do not divide), tied (qwen2, gemma2)
// and fused projections (phi3).
var deepShapes = map[string]synth.Shape{
	"llama-untied": {Arch: "llama", Dim: 256, Layers: 10, FFN: 384, Heads: 4, KVHeads: 2, Vocab: 320, Context: 512, RopeBase: 10000, RMSEps: 1e-5},
	"qwen2-tied":   {Arch: "qwen2", Dim: 256, Layers: 9, FFN: 512, Heads: 4, KVHeads: 2, Vocab: 320, Context: 512, RopeBase: 1e6, RMSEps: 1e-6, Tied: true},
	"gemma2-tied":  {Arch: "gemma2", Dim: 256, Layers: 8, FFN: 512, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 320, Context: 512, RopeBase: 10000, RMSEps: 1e-6, Tied: true, SlidingWin: 32, AttnSoftcap: 50, FinalSoftcap: 30},
	"phi3-fused":   {Arch: "phi3", Dim: 256, Layers: 10, FFN: 512, Heads: 4, KVHeads: 4, Vocab: 320, Context: 4096, RopeBase: 10000, RMSEps: 1e-5, OrigContext: 1024},
}

const deepSeed = 23

func deepSource(t testing.TB, name string) []byte {
	t.Helper()
	var buf bytes.Buffer
	f32, _ := quantize.ParseScheme("F32")
	if _, err := synth.Write(&buf, deepShapes[name], name, f32, deepSeed); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestWriteDeepSources writes the deep models' F32 files into
// $CORELM_WRITE_QUANT_SOURCES, for llama-quantize (testdata/SOURCE.md).
func TestWriteDeepSources(t *testing.T) {
	dir := os.Getenv("CORELM_WRITE_QUANT_SOURCES")
	if dir == "" {
		t.Skip("CORELM_WRITE_QUANT_SOURCES is not set")
	}
	for name := range deepShapes {
		if err := os.WriteFile(filepath.Join(dir, name+"-F32.gguf"), deepSource(t, name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// tensorDigest is a tensor of llama-quantize's output: its type and the
// first 8 bytes of the SHA-256 of its bytes.
type tensorDigest struct {
	Type   string `json:"type"`
	SHA256 string `json:"sha256"`
}

// TestConvertMatchesLlamaQuantize quantizes F32 models with every scheme
// and compares each tensor's type and bytes with llama-quantize's output of
// the same file (llama.cpp 0a50d99): the committed golden files (two
// layers), and the deep models through testdata/llama-quantize.json.
func TestConvertMatchesLlamaQuantize(t *testing.T) {
	raw, err := os.ReadFile("testdata/llama-quantize.json")
	if err != nil {
		t.Fatal(err)
	}
	var manifest map[string]map[string]map[string]tensorDigest // model → scheme → tensor
	if err := json.Unmarshal(raw, &manifest); err != nil {
		t.Fatal(err)
	}
	pool := kernels.NewPool(2)
	defer pool.Close()
	checked := 0
	for model, schemes := range manifest {
		var src []byte
		if _, deep := deepShapes[model]; deep && raceEnabled {
			continue
		} else if deep {
			src = deepSource(t, model)
		} else if src, err = os.ReadFile(filepath.Join("../testdata/golden/models", model+"-F32.gguf")); err != nil {
			t.Fatal(err)
		}
		f, err := gguf.Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range schemes {
			t.Run(model+"/"+name, func(t *testing.T) {
				scheme, err := quantize.ParseScheme(name)
				if err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				if err := quantize.Convert(context.Background(), f, scheme, pool, &buf, nil); err != nil {
					t.Fatal(err)
				}
				got, err := gguf.Parse(buf.Bytes())
				if err != nil {
					t.Fatalf("output does not parse: %v", err)
				}
				if ft, _ := got.Uint("general.file_type"); ft != uint64(scheme.FileType) {
					t.Errorf("general.file_type = %d, want %d", ft, scheme.FileType)
				}
				if len(got.Tensors) != len(want) {
					t.Errorf("%d tensors, llama-quantize wrote %d", len(got.Tensors), len(want))
				}
				for tn, w := range want {
					gt, ok := got.Tensor(tn)
					if !ok {
						t.Errorf("tensor %s missing", tn)
						continue
					}
					if gt.Type.String() != w.Type {
						t.Errorf("%s: type %s, llama-quantize chose %s", tn, gt.Type, w.Type)
						continue
					}
					sum := sha256.Sum256(got.TensorData(gt))
					if hex.EncodeToString(sum[:8]) != w.SHA256 {
						t.Errorf("%s (%s): bytes differ from llama-quantize's", tn, w.Type)
					}
				}
			})
			checked++
		}
	}
	want := 8 * 10 // models × schemes
	if raceEnabled {
		want /= 2 // the golden files only
	}
	if checked < want {
		t.Errorf("only %d model × scheme pairs checked, want %d", checked, want)
	}
}

func TestTypesFallBack(t *testing.T) {
	m := quantize.Model{Arch: "llama", Layers: 32, Heads: 32, KVHeads: 8}
	tests := []struct {
		scheme string
		t      quantize.Tensor
		want   kernels.DType
	}{
		{"Q4_K_M", quantize.Tensor{Name: "blk.0.attn_norm.weight", Type: kernels.F32, Shape: []uint64{4096}}, kernels.F32},
		{"Q4_K_M", quantize.Tensor{Name: "blk.0.attn_q.weight", Type: kernels.F16, Shape: []uint64{4096, 4096}}, kernels.Q4_K},
		{"Q4_K_M", quantize.Tensor{Name: "blk.0.ffn_up.weight", Type: kernels.F16, Shape: []uint64{96, 64}}, kernels.Q5_0},
		{"Q4_K_M", quantize.Tensor{Name: "blk.0.ffn_up.weight", Type: kernels.F16, Shape: []uint64{100, 64}}, kernels.F16},
		{"Q6_K", quantize.Tensor{Name: "blk.0.ffn_up.weight", Type: kernels.F16, Shape: []uint64{96, 64}}, kernels.Q8_0},
		{"Q5_K_S", quantize.Tensor{Name: "blk.0.ffn_up.weight", Type: kernels.F16, Shape: []uint64{96, 64}}, kernels.Q5_1},
		{"F16", quantize.Tensor{Name: "blk.0.ffn_up.weight", Type: kernels.F32, Shape: []uint64{100, 64}}, kernels.F16},
	}
	for _, tt := range tests {
		s, _ := quantize.ParseScheme(tt.scheme)
		got, err := s.Types(m, []quantize.Tensor{tt.t})
		if err != nil || got[tt.t.Name] != tt.want {
			t.Errorf("%s: %s %v = %v (%v), want %s", tt.scheme, tt.t.Name, tt.t.Shape, got[tt.t.Name], err, tt.want)
		}
	}
	q8, _ := quantize.ParseScheme("Q8_0")
	if _, err := q8.Types(m, []quantize.Tensor{{Name: "blk.0.ffn_up.weight", Type: kernels.F16, Shape: []uint64{100, 64}}}); err == nil {
		t.Error("Q8_0 rows of 100: no error, but llama.cpp has no fallback for Q8_0")
	}
}

// TestConvertQ4_1Q5_0MatchesPure: Q4_1 and Q5_0 follow Q4_0's type rules
// (the output matrix, or the token embedding when tied, in Q6_K: checked
// on Q4_0 against llama-quantize above); every other matrix must be
// byte-identical to llama-quantize --pure's (the golden files of the same
// F32 models, which put every matrix in the base type).
func TestConvertQ4_1Q5_0MatchesPure(t *testing.T) {
	pool := kernels.NewPool(2)
	defer pool.Close()
	dir := "../testdata/golden/models"
	for _, model := range []string{"llama", "qwen2", "gemma2", "phi3"} {
		src, err := os.ReadFile(filepath.Join(dir, model+"-F32.gguf"))
		if err != nil {
			t.Fatal(err)
		}
		f, err := gguf.Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"Q4_1", "Q5_0"} {
			scheme, err := quantize.ParseScheme(name)
			if err != nil {
				t.Fatal(err)
			}
			pure, err := gguf.Open(filepath.Join(dir, model+"-"+name+".gguf"))
			if err != nil {
				t.Fatal(err)
			}
			defer pure.Close()
			var buf bytes.Buffer
			if err := quantize.Convert(context.Background(), f, scheme, pool, &buf, nil); err != nil {
				t.Fatal(err)
			}
			got, err := gguf.Parse(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			_, untied := f.Tensor("output.weight")
			matrices := 0
			for i := range got.Tensors {
				gt := &got.Tensors[i]
				pt, ok := pure.Tensor(gt.Name)
				if !ok {
					t.Fatalf("%s %s: tensor %s not in llama-quantize's file", model, name, gt.Name)
				}
				if gt.Name == "output.weight" || (!untied && gt.Name == "token_embd.weight") {
					if gt.Type != kernels.Q6_K {
						t.Errorf("%s %s: %s in %v, want Q6_K", model, name, gt.Name, gt.Type)
					}
					continue
				}
				if gt.Type != pt.Type || !bytes.Equal(got.TensorData(gt), pure.TensorData(pt)) {
					t.Errorf("%s %s: %s (%v) differs from llama-quantize's (%v)", model, name, gt.Name, gt.Type, pt.Type)
				}
				if gt.Type == scheme.Base {
					matrices++
				}
			}
			if matrices == 0 {
				t.Errorf("%s %s: no %v matrix", model, name, scheme.Base)
			}
		}
	}
}
