package corelmv1

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
)

// TestGenerateStreamJSON checks that the documented grpcurl call of
// GenerateStream maps onto GenerateStart as intended.
func TestGenerateStreamJSON(t *testing.T) {
	const body = `{"model_id":"stories","text":"Once upon a time","max_tokens":32,"sampling":{"temperature":0}}`
	var req GenerateStart
	if err := protojson.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	if req.GetModelId() != "stories" || req.GetText() != "Once upon a time" || req.GetMaxTokens() != 32 {
		t.Errorf("decoded %v", &req)
	}
	if req.GetSampling() == nil || req.GetSampling().Temperature == nil || req.GetSampling().GetTemperature() != 0 {
		t.Errorf("temperature 0 must be present: %v", req.GetSampling())
	}
	if req.GetSampling().TopK != nil {
		t.Error("unset top_k must be absent")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		req  interface{ Validate() error }
		okay bool
	}{
		{&LoadModelRequest{ModelId: "llama-3.1_8b", Path: "a.gguf"}, true},
		{&LoadModelRequest{ModelId: "", Path: "a.gguf"}, false},
		{&LoadModelRequest{ModelId: ".hidden", Path: "a.gguf"}, false},
		{&LoadModelRequest{ModelId: "a/b", Path: "a.gguf"}, false},
		{&LoadModelRequest{ModelId: "a", Path: ""}, true}, // loaded by id
		{&LoadModelRequest{ModelId: "a", Path: "a.gguf", Options: &LoadOptions{Context: -1}}, false},
		{&LoadModelRequest{ModelId: "a", Path: "a.gguf", Options: &LoadOptions{KvType: 9}}, false},
		{&UnloadModelRequest{ModelId: "a"}, true},
		{&UnloadModelRequest{}, false},
	}
	for i, tt := range tests {
		if err := tt.req.Validate(); (err == nil) != tt.okay {
			t.Errorf("%d: %v: Validate() = %v", i, tt.req, err)
		}
	}
}
