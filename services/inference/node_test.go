package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/corelm/corelm/internal/servicetest"
)

// TestNodeClient streams generations from the inference binary with the
// Node.js client in clients/node (GenerateStream and the bidi Generate),
// when node and npm are installed.
func TestNodeClient(t *testing.T) {
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		t.Skip("node and npm are needed")
	}
	dir, err := filepath.Abs("../../clients/node")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@grpc", "grpc-js")); err != nil {
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}
	p := start(t, "inference", "--model-file", "stories")
	_, want, wantText := servicetest.Greedy(t, "Once upon a time", 32)
	for _, mode := range []string{"stream", "bidi"} {
		args := []string{"generate.js", "--addr", p.Addr, "--model", "stories", "--prompt", "Once upon a time",
			"--max-tokens", "32", "--temperature", "0", "--json"}
		if mode == "bidi" {
			args = append(args, "--bidi")
		}
		cmd := exec.CommandContext(t.Context(), node, args...)
		cmd.Dir = dir
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: node: %v", mode, err)
		}
		var got struct {
			IDs   []int32 `json:"ids"`
			Text  string  `json:"text"`
			Final struct {
				FinishReason string `json:"finish_reason"`
				Usage        struct {
					CompletionTokens int `json:"completion_tokens"`
				} `json:"usage"`
			} `json:"final"`
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%s: %v in %q", mode, err, out)
		}
		if !slices.Equal(got.IDs, want) || got.Text != wantText {
			t.Errorf("%s: %v %q, want %v %q", mode, got.IDs, got.Text, want, wantText)
		}
		if got.Final.FinishReason != "FINISH_REASON_LENGTH" || got.Final.Usage.CompletionTokens != len(want) {
			t.Errorf("%s: final %+v", mode, got.Final)
		}
	}
}
