package main

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/corelm/corelm/internal/servicetest"
)

// TestNodeClient streams generations from the inference binary with the
// Node.js client in clients/node (GenerateStream and the bidi Generate),
// when node and npm are installed.
func TestNodeClient(t *testing.T) {
	node, dir := servicetest.NodeClient(t, "../../clients/node", "@grpc/grpc-js")
	p := start(t, "inference", "--model-file", "stories")
	_, want, wantText := servicetest.Greedy(t, "Once upon a time", 32)
	for _, mode := range []string{"stream", "bidi"} {
		args := []string{"generate.js", "--addr", p.Addr, "--model", "stories", "--prompt", "Once upon a time",
			"--max-tokens", "32", "--temperature", "0", "--json"}
		if mode == "bidi" {
			args = append(args, "--bidi")
		}
		out := servicetest.ClientOutput(t, dir, node, args...)
		var got clientResult
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

// clientResult is one generation as the Node.js and Python clients print it
// with --json.
type clientResult struct {
	IDs   []int32 `json:"ids"`
	Text  string  `json:"text"`
	Final struct {
		FinishReason string `json:"finish_reason"`
		Usage        struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
		// int64 fields, which protobuf's JSON writes as strings.
		Timings struct {
			QueueNs   int64 `json:"queue_ns,string"`
			PrefillNs int64 `json:"prefill_ns,string"`
			DecodeNs  int64 `json:"decode_ns,string"`
			TTFTNs    int64 `json:"time_to_first_token_ns,string"`
		} `json:"timings"`
	} `json:"final"`
}
