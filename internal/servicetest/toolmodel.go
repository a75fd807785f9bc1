package servicetest

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/runtime/quantize"
	"github.com/corelm/corelm/pkg/runtime/synth"
)

// ChatTestdata is the chat package's testdata directory: the real chat
// templates (<name>.jinja) and the tool rendering cases (tools/).
func ChatTestdata() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "pkg", "runtime", "chat", "testdata")
}

// ToolModel writes a small synthetic Llama (random weights) with Llama-3's
// tokenizer (128,256 tokens, the tokenizer package's fixture) and the real
// chat template of the named model in ChatTestdata (e.g.
// "meta-llama-Llama-3.1-8B-Instruct", "Qwen-Qwen2.5-7B-Instruct"), and
// returns its path: a model whose prompts are rendered, tools included,
// as the real model's are.
func ToolModel(t testing.TB, template string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(ChatTestdata(), template+".jinja"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(ChatTestdata(), "..", "..", "tokenizer", "testdata", "ggml-vocab-llama-bpe.gguf.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	vocab, err := gguf.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	tokens, _ := vocab.Strings("tokenizer.ggml.tokens")
	shape := synth.Shape{Arch: "llama", Dim: 64, Layers: 2, FFN: 128, Heads: 4, KVHeads: 2, Vocab: len(tokens),
		Context: 2048, RopeBase: 500000, RMSEps: 1e-5}
	scheme, err := quantize.ParseScheme("Q8_0")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := synth.Write(&buf, shape, "tools", scheme, 19); err != nil {
		t.Fatal(err)
	}
	weights, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	w := gguf.NewWriter(3)
	w.SetAlignment(32)
	for _, kv := range weights.KVs {
		if !strings.HasPrefix(kv.Key, "tokenizer.") && kv.Key != "general.alignment" {
			w.AddKV(kv.Key, kv.Value)
		}
	}
	for _, kv := range vocab.KVs {
		if strings.HasPrefix(kv.Key, "tokenizer.") {
			w.AddKV(kv.Key, kv.Value)
		}
	}
	w.AddKV("tokenizer.chat_template", gguf.Str(string(src)))
	// As the real files: Llama-3's template writes its BOS, Qwen2.5 has
	// none.
	w.AddKV("tokenizer.ggml.add_bos_token", gguf.Bool(strings.Contains(string(src), "bos_token")))
	for _, tn := range weights.Tensors {
		w.AddTensor(tn.Name, tn.Type, tn.Shape, weights.TensorData(&tn))
	}
	path := filepath.Join(t.TempDir(), template+".gguf")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(out); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
