package quantize_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
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
// rows of 384 that 256-value blocks do not divide), tied (qwen2, gemma2),
// fused projections (phi3), and a mixture of 4 experts with a shared one
// (qwen2moe: not the 8 experts of llama-quantize's Mixtral rules, which
// the golden mixtures have; its ffn_down layers come from the names).
var deepShapes = map[string]synth.Shape{
	"llama-untied": {Arch: "llama", Dim: 256, Layers: 10, FFN: 384, Heads: 4, KVHeads: 2, Vocab: 320, Context: 512, RopeBase: 10000, RMSEps: 1e-5},
	"qwen2-tied":   {Arch: "qwen2", Dim: 256, Layers: 9, FFN: 512, Heads: 4, KVHeads: 2, Vocab: 320, Context: 512, RopeBase: 1e6, RMSEps: 1e-6, Tied: true},
	"gemma2-tied":  {Arch: "gemma2", Dim: 256, Layers: 8, FFN: 512, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 320, Context: 512, RopeBase: 10000, RMSEps: 1e-6, Tied: true, SlidingWin: 32, AttnSoftcap: 50, FinalSoftcap: 30},
	"phi3-fused":   {Arch: "phi3", Dim: 256, Layers: 10, FFN: 512, Heads: 4, KVHeads: 4, Vocab: 320, Context: 4096, RopeBase: 10000, RMSEps: 1e-5, OrigContext: 1024},
	"qwen2moe-4x": {Arch: "qwen2moe", Dim: 256, Layers: 8, FFN: 512, Heads: 4, KVHeads: 2, Vocab: 320, Context: 4096, RopeBase: 1e6, RMSEps: 1e-6,
		Experts: 4, ExpertsUsed: 2, ExpertFFN: 256, SharedFFN: 256},
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
	want := 12 * 11 // models × schemes
	if raceEnabled {
		want = 7 * 11 // the golden files only
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

// TestTypesMixtures: llama-quantize's Mixtral rules apply to exactly 8
// experts (OLMoE's 64 and Granite's 40 get the dense choices), and a
// mixture's ffn_down layer is the one its name says, whatever the order.
func TestTypesMixtures(t *testing.T) {
	q4km, _ := quantize.ParseScheme("Q4_K_M")
	q5km, _ := quantize.ParseScheme("Q5_K_M")
	attn := []quantize.Tensor{
		{Name: "blk.0.attn_v.weight", Type: kernels.F32, Shape: []uint64{256, 256}},
		{Name: "blk.0.attn_k.weight", Type: kernels.F32, Shape: []uint64{256, 256}},
		{Name: "blk.0.attn_output.weight", Type: kernels.F32, Shape: []uint64{256, 256}},
	}
	tests := []struct {
		scheme     quantize.Scheme
		experts    int
		v, k, attO kernels.DType
	}{
		{q4km, 8, kernels.Q8_0, kernels.Q8_0, kernels.Q5_K},
		{q5km, 8, kernels.Q8_0, kernels.Q8_0, kernels.Q5_K},
		{q4km, 64, kernels.Q6_K, kernels.Q4_K, kernels.Q4_K},
		{q4km, 0, kernels.Q6_K, kernels.Q4_K, kernels.Q4_K},
	}
	for _, tt := range tests {
		got, err := tt.scheme.Types(quantize.Model{Arch: "olmoe", Layers: 16, Heads: 16, KVHeads: 16, Experts: tt.experts}, attn)
		if err != nil {
			t.Fatal(err)
		}
		if got[attn[0].Name] != tt.v || got[attn[1].Name] != tt.k || got[attn[2].Name] != tt.attO {
			t.Errorf("%s, %d experts: attn_v %s attn_k %s attn_output %s, want %s %s %s", tt.scheme.Name, tt.experts,
				got[attn[0].Name], got[attn[1].Name], got[attn[2].Name], tt.v, tt.k, tt.attO)
		}
	}
	// Layers 0..7 of 8, listed out of order: use_more_bits picks 0 (the first
	// eighth), 7 (the last) and 3, 6 (every third from the first eighth).
	var downs []quantize.Tensor
	for _, l := range []int{7, 3, 0, 5, 1, 6, 2, 4} {
		for _, name := range []string{"blk.%d.ffn_down_exps.weight", "blk.%d.ffn_down_shexp.weight"} {
			downs = append(downs, quantize.Tensor{Name: fmt.Sprintf(name, l), Type: kernels.F32, Shape: []uint64{256, 256, 4}})
		}
	}
	got, err := q4km.Types(quantize.Model{Arch: "qwen2moe", Layers: 8, Heads: 4, KVHeads: 2, Experts: 4}, downs)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range downs {
		var l int
		fmt.Sscanf(d.Name, "blk.%d.", &l)
		want := kernels.Q4_K
		if l == 0 || l == 3 || l == 6 || l == 7 {
			want = kernels.Q6_K
		}
		if got[d.Name] != want {
			t.Errorf("%s: %s, want %s", d.Name, got[d.Name], want)
		}
	}
	if _, err := q4km.Types(quantize.Model{Arch: "qwen2moe", Layers: 8, Experts: 4},
		[]quantize.Tensor{{Name: "blk.8.ffn_down_exps.weight", Type: kernels.F32, Shape: []uint64{256, 256, 4}}}); err == nil {
		t.Error("ffn_down of block 8 in an 8-layer mixture: no error (llama-quantize refuses it)")
	}
}

// TestConvertLegacyMatchesPure: Q4_1, Q5_0 and Q5_1 follow Q4_0's type rules
// (the output matrix, or the token embedding when tied, in Q6_K: checked
// on Q4_0 against llama-quantize above); every other matrix must be
// byte-identical to llama-quantize --pure's (the golden files of the same
// F32 models, which put every matrix in the base type).
func TestConvertLegacyMatchesPure(t *testing.T) {
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
		for _, name := range []string{"Q4_1", "Q5_0", "Q5_1"} {
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
