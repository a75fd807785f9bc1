package sched

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/runtime/chat"
	"github.com/corelm/corelm/pkg/runtime/constrain"
	"github.com/corelm/corelm/pkg/runtime/internal/runtimetest"
	"github.com/corelm/corelm/pkg/runtime/llama"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/quantize"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/synth"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
)

// llama3Vocab is Llama-3's tokenizer (the tokenizer package's fixture) and
// a small synthetic Llama with its 128,256-token vocabulary.
func llama3Vocab(t *testing.T) (model.Model, *tokenizer.Tokenizer) {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "tokenizer", "testdata", "ggml-vocab-llama-bpe.gguf.gz"))
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
	vf, err := gguf.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.New(vf)
	if err != nil {
		t.Fatal(err)
	}
	shape := synth.Shape{Arch: "llama", Dim: 64, Layers: 2, FFN: 128, Heads: 4, KVHeads: 2, Vocab: tok.VocabSize(),
		Context: 1024, RopeBase: 500000, RMSEps: 1e-5}
	scheme, err := quantize.ParseScheme("Q8_0")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := synth.Write(&buf, shape, "llama3-vocab", scheme, 19); err != nil {
		t.Fatal(err)
	}
	mf, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	m, err := llama.New(model.FromGGUF(mf), model.Env{Pool: runtimetest.Pool(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	return m, tok
}

// TestLlama3VocabConstrained: on a synthetic model with Llama-3's
// vocabulary (random weights: the model knows nothing of JSON), outputs
// under schemas, greedy and sampled, validate when they stop and end with
// LENGTH otherwise.
func TestLlama3VocabConstrained(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 128k-vocabulary model")
	}
	m, tok := llama3Vocab(t)
	v := constrain.TokenizerVocab(tok)
	prompt, err := tok.Encode("Reply in JSON.", tokenizer.EncodeOptions{AddBOS: tokenizer.BOSForce})
	if err != nil {
		t.Fatal(err)
	}
	s := New(m, Config{MaxSeqs: 2})
	defer shutdown(t, s)
	stopped := 0
	for si, src := range constrainedSchemas {
		g, err := constrain.Compile(constrain.Spec{Kind: constrain.JSONSchema, Text: src})
		if err != nil {
			t.Fatal(err)
		}
		sch := compileJSONSchema(t, src)
		for seed := range 2 {
			params := sample.Params{Temperature: 1, TopK: 40, Seed: uint64(seed)}
			if seed == 0 {
				params = sample.Params{}
			}
			req := Request{Prompt: prompt, MaxTokens: 60, Sampling: params, IsEOG: tok.IsEOG, Constraint: constrain.NewMatcher(g, v, nil)}
			toks, final := collect(t, s, req)
			text, _ := tok.Decode(toks)
			switch final.Reason {
			case FinishStop:
				stopped++
				doc, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
				if err != nil {
					t.Fatalf("schema %d seed %d: %q is not JSON: %v", si, seed, text, err)
				}
				if err := sch.Validate(doc); err != nil {
					t.Fatalf("schema %d seed %d: %s does not validate: %v", si, seed, text, err)
				}
			case FinishLength:
			default:
				t.Fatalf("schema %d seed %d: finish %v (%v) after %q", si, seed, final.Reason, final.Err, text)
			}
			t.Logf("schema %d seed %d: %v %q", si, seed, final.Reason, text)
		}
	}
	if stopped == 0 {
		t.Error("no generation completed its document")
	}
}

// TestLlama3VocabToolCalls: with tool choice "required", a generation
// under the forced-call grammar of the Llama-3.1 and of the Qwen2.5 format
// (prompts rendered by the real templates, with the tools) is, whenever it
// stops, calls that ParseCalls recognises with arguments valid under the
// called tool's schema.
func TestLlama3VocabToolCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 128k-vocabulary model")
	}
	m, tok := llama3Vocab(t)
	v := constrain.TokenizerVocab(tok)
	tools := []chat.Tool{
		{Name: "get_weather", Description: "Weather in a city.", Parameters: `{"type":"object","properties":{"city":{"type":"string","maxLength":12},"unit":{"enum":["C","F"]}},"required":["city"]}`},
		{Name: "add", Description: "Adds two integers.", Parameters: `{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}`},
	}
	schemas := map[string]*jsonschema.Schema{}
	for _, tl := range tools {
		schemas[tl.Name] = compileJSONSchema(t, tl.Parameters)
	}
	s := New(m, Config{MaxSeqs: 2})
	defer shutdown(t, s)
	for _, name := range []string{"meta-llama-Llama-3.1-8B-Instruct", "Qwen-Qwen2.5-7B-Instruct"} {
		src, err := os.ReadFile(filepath.Join("..", "chat", "testdata", name+".jinja"))
		if err != nil {
			t.Fatal(err)
		}
		tmpl, err := chat.Compile(string(src))
		if err != nil {
			t.Fatal(err)
		}
		f := tmpl.ToolFormat()
		prompt, err := tmpl.Render([]chat.Message{{Role: "user", Content: "What is 2+3?"}},
			chat.Options{AddGenerationPrompt: true, BOSToken: "<|begin_of_text|>", Tools: tools})
		if err != nil {
			t.Fatal(err)
		}
		ids, err := tok.Encode(prompt, tokenizer.EncodeOptions{AddBOS: tokenizer.BOSNone, ParseSpecial: true})
		if err != nil {
			t.Fatal(err)
		}
		gsrc, err := f.CallGrammar(tools, "")
		if err != nil {
			t.Fatal(err)
		}
		g, err := constrain.Compile(constrain.Spec{Kind: constrain.GBNF, Text: gsrc})
		if err != nil {
			t.Fatal(err)
		}
		calls := 0
		for seed := range 3 {
			params := sample.Params{Temperature: 1, TopK: 40, Seed: uint64(seed)}
			if seed == 0 {
				params = sample.Params{}
			}
			req := Request{Prompt: ids, MaxTokens: 250, Sampling: params, IsEOG: tok.IsEOG, Constraint: constrain.NewMatcher(g, v, nil)}
			toks, final := collect(t, s, req)
			reply, _ := tok.Decode(toks)
			t.Logf("%v seed %d: %v %q", f, seed, final.Reason, reply)
			if final.Reason != FinishStop {
				if final.Reason != FinishLength {
					t.Fatalf("%v seed %d: finish %v (%v)", f, seed, final.Reason, final.Err)
				}
				continue
			}
			content, cs := f.ParseCalls(reply)
			if content != "" || len(cs) == 0 {
				t.Fatalf("%v seed %d: reply %q is not calls (content %q)", f, seed, reply, content)
			}
			for _, c := range cs {
				sch, ok := schemas[c.Name]
				if !ok {
					t.Fatalf("%v seed %d: called unknown tool %q", f, seed, c.Name)
				}
				args, _ := jsonschema.UnmarshalJSON(strings.NewReader(c.Arguments))
				if err := sch.Validate(args); err != nil {
					t.Fatalf("%v seed %d: %s(%s): %v", f, seed, c.Name, c.Arguments, err)
				}
				calls++
			}
		}
		if calls == 0 {
			t.Errorf("%v: no generation completed a call", f)
		}
	}
}
