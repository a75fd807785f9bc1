package server

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// TestServesEveryArchitecture: the golden test file of every architecture
// (Q8_0; the mixtures of experts, BitNet and Gemma-2 included) is served
// like any model: a greedy GenerateStream of token ids gives the tokens
// runtime.Generate gives on the same file.
func TestServesEveryArchitecture(t *testing.T) {
	golden := filepath.Join("..", "..", "..", "pkg", "runtime", "testdata", "golden")
	for _, arch := range runtime.Architectures() {
		t.Run(arch, func(t *testing.T) {
			path := filepath.Join(golden, "models", arch+"-Q8_0.gguf")
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("no golden Q8_0 file for %s: %v", arch, err)
			}
			text, err := os.ReadFile(filepath.Join(golden, "tokens", arch+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			var prompt []int32
			for _, f := range strings.Fields(string(text))[:12] {
				id, err := strconv.Atoi(f)
				if err != nil {
					t.Fatal(err)
				}
				prompt = append(prompt, int32(id))
			}
			const n = 8
			l, err := runtime.Open(path, model.Env{Pool: kernels.NewPool(1)})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			want, err := runtime.Generate(t.Context(), l.Model, runtime.GenerateRequest{Prompt: prompt, MaxTokens: n, Context: 64}, func(int32) error { return nil })
			if err != nil {
				t.Fatal(err)
			}

			greedy := float32(0)
			client, _ := serveFile(t, Options{Threads: 1, Context: 64, PackCache: "off"}, path, arch)
			stream, err := client.GenerateStream(t.Context(), &corelmv1.GenerateStart{ModelId: arch,
				Prompt:    &corelmv1.GenerateStart_TokenIds{TokenIds: &corelmv1.TokenIds{Ids: prompt}},
				MaxTokens: n, StopTokenIds: []int32{}, Sampling: &corelmv1.SamplingParams{Temperature: &greedy}})
			if err != nil {
				t.Fatal(err)
			}
			var got []int32
			for {
				resp, err := stream.Recv()
				if err == io.EOF || err == context.Canceled {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if tk := resp.GetToken(); tk != nil && tk.GetId() >= 0 {
					got = append(got, tk.GetId())
				}
			}
			if !slices.Equal(got, want.Tokens) || len(got) != n {
				t.Errorf("served %v, runtime.Generate %v", got, want.Tokens)
			}
		})
	}
}
