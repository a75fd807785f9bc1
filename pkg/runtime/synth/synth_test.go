package synth_test

import (
	"bytes"
	"testing"

	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/internal/runtimetest"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/quantize"
	"github.com/corelm/corelm/pkg/runtime/synth"
)

// run writes s quantized as typ, binds it and runs a step.
func run(t *testing.T, s synth.Shape, typ string) {
	t.Helper()
	scheme, err := quantize.ParseScheme(typ)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := synth.Write(&buf, s, "tiny", scheme, 1); err != nil {
		t.Fatal(err)
	}
	l, err := runtime.ParseGGUF(buf.Bytes(), model.Env{Pool: runtimetest.Pool(t, 1)})
	if err != nil {
		t.Fatalf("synthetic model does not validate: %v", err)
	}
	logits := runtimetest.Eval(t, l.Model, []int32{1, 300, 301}, model.StateOptions{Context: 64}, 0)
	for _, x := range logits {
		if x != x {
			t.Fatal("NaN logit")
		}
	}
}

func TestTinyModelRuns(t *testing.T) {
	for _, typ := range []string{"Q4_K_M", "Q8_0", "F16"} {
		t.Run(typ, func(t *testing.T) { run(t, synth.Presets["tiny-llama"], typ) })
	}
}

// TestEveryArchitecture: every architecture of the registry has a synth
// entry whose model binds and runs (the tiny llama's shape, renamed).
func TestEveryArchitecture(t *testing.T) {
	for _, arch := range runtime.Architectures() {
		t.Run(arch, func(t *testing.T) {
			s := synth.Presets["tiny-llama"]
			s.Arch = arch
			run(t, s, "Q8_0")
		})
	}
}

func TestPresetsAreConsistent(t *testing.T) {
	for name, s := range synth.Presets {
		hd := s.Dim / s.Heads
		if s.HeadDim > 0 {
			hd = s.HeadDim
		}
		if s.Heads%s.KVHeads != 0 || hd%32 != 0 || s.Dim%32 != 0 || s.FFN%32 != 0 {
			t.Errorf("%s: inconsistent shape %+v", name, s)
		}
	}
}

// TestPhi3ControlTokens: llama.cpp's loader looks up <|endoftext|> (and
// <unk>, <s>, </s>) by name in a model called "phi-3…", so the synthetic
// Phi-3.5 vocabulary carries Phi-3's added tokens at their real ids.
func TestPhi3ControlTokens(t *testing.T) {
	var tokens []string
	var types []int32
	for _, kv := range synth.Presets["phi-3.5-mini"].Metadata("phi-3.5-mini", 15) {
		switch kv.Key {
		case "tokenizer.ggml.tokens":
			tokens, _ = kv.Value.Strings()
		case "tokenizer.ggml.token_type":
			types, _ = kv.Value.Int32s()
		}
	}
	want := map[int]string{0: "<unk>", 1: "<s>", 2: "</s>", 32000: "<|endoftext|>", 32007: "<|end|>", 32010: "<|user|>"}
	for id, text := range want {
		if id >= len(tokens) || tokens[id] != text {
			t.Fatalf("token %d of %d is not %q", id, len(tokens), text)
		}
	}
	if types[32000] != 3 || types[32011] == 3 {
		t.Errorf("token types at 32000, 32011: %d, %d; want control (3), then not", types[32000], types[32011])
	}
}
