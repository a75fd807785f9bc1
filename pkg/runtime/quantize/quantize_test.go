package quantize_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime/quantize"
)

// The golden set holds llama.cpp's own llama-quantize outputs of the same F32
// model; corelm's quantizers follow ggml's reference ones, so every tensor
// must come out byte-identical, and the mix must pick the same types.
func TestConvertMatchesLlamaQuantize(t *testing.T) {
	dir := "../testdata/golden/models"
	src, err := gguf.Open(filepath.Join(dir, "llama-F32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	pool := kernels.NewPool(2)
	defer pool.Close()
	for _, name := range []string{"Q8_0", "Q4_0", "Q6_K", "Q4_K_M"} {
		t.Run(name, func(t *testing.T) {
			scheme, err := quantize.ParseScheme(name)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := quantize.Convert(context.Background(), src, scheme, pool, &buf, nil); err != nil {
				t.Fatal(err)
			}
			got, err := gguf.Parse(buf.Bytes())
			if err != nil {
				t.Fatalf("output does not parse: %v", err)
			}
			want, err := gguf.Open(filepath.Join(dir, "llama-"+name+".gguf"))
			if err != nil {
				t.Fatal(err)
			}
			defer want.Close()
			if ft, _ := got.Uint("general.file_type"); ft != uint64(scheme.FileType) {
				t.Errorf("general.file_type = %d, want %d", ft, scheme.FileType)
			}
			for i := range want.Tensors {
				wt := &want.Tensors[i]
				gt, ok := got.Tensor(wt.Name)
				if !ok {
					t.Errorf("tensor %s missing", wt.Name)
					continue
				}
				if gt.Type != wt.Type {
					t.Errorf("%s: type %s, llama-quantize chose %s", wt.Name, gt.Type, wt.Type)
					continue
				}
				if !bytes.Equal(got.TensorData(gt), want.TensorData(wt)) {
					t.Errorf("%s (%s): bytes differ from llama-quantize's", wt.Name, wt.Type)
				}
			}
		})
	}
}

func TestTypeForFallsBack(t *testing.T) {
	s, _ := quantize.ParseScheme("q4_k_m")
	tests := []struct {
		name  string
		shape []uint64
		want  kernels.DType
	}{
		{"blk.0.attn_norm.weight", []uint64{4096}, kernels.F32},
		{"blk.0.attn_q.weight", []uint64{4096, 4096}, kernels.Q4_K},
		{"blk.0.attn_v.weight", []uint64{4096, 1024}, kernels.Q6_K}, // first eighth of 32 layers
		{"blk.5.attn_v.weight", []uint64{4096, 1024}, kernels.Q4_K},
		{"blk.6.ffn_down.weight", []uint64{14336, 4096}, kernels.Q6_K}, // (6-4)%3 == 2
		{"output.weight", []uint64{4096, 128256}, kernels.Q6_K},
		{"blk.0.ffn_up.weight", []uint64{96, 64}, kernels.Q8_0}, // row not a multiple of 256
		{"blk.0.ffn_up.weight", []uint64{100, 64}, kernels.F16},
	}
	for _, tt := range tests {
		if got := s.TypeFor(tt.name, tt.shape, 32); got != tt.want {
			t.Errorf("TypeFor(%s %v) = %s, want %s", tt.name, tt.shape, got, tt.want)
		}
	}
}
