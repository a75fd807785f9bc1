package sched

import (
	"testing"

	"github.com/corelm/corelm/internal/fixtures"
	"github.com/corelm/corelm/pkg/runtime/chat"
	"github.com/corelm/corelm/pkg/runtime/constrain"
	"github.com/corelm/corelm/pkg/runtime/internal/runtimetest"
	"github.com/corelm/corelm/pkg/runtime/llama"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
)

// llama3Vocab is Llama-3's tokenizer and a small synthetic Llama with its
// 128,256-token vocabulary.
func llama3Vocab(t *testing.T) (model.Model, *tokenizer.Tokenizer) {
	t.Helper()
	m, err := llama.New(model.FromGGUF(fixtures.VocabModel(t, "llama-bpe", "", 1024)), model.Env{Pool: runtimetest.Pool(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	return m, fixtures.Tokenizer(t, "llama-bpe")
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
		sch := fixtures.JSONSchema(t, src)
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
				if err := sch.Validate(text); err != nil {
					t.Fatalf("schema %d seed %d: %q: %v", si, seed, text, err)
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
	schemas := map[string]*fixtures.Schema{}
	for _, tl := range tools {
		schemas[tl.Name] = fixtures.JSONSchema(t, tl.Parameters)
	}
	s := New(m, Config{MaxSeqs: 2})
	defer shutdown(t, s)
	for _, name := range []string{"meta-llama-Llama-3.1-8B-Instruct", "Qwen-Qwen2.5-7B-Instruct"} {
		tmpl, err := chat.Compile(fixtures.ChatTemplate(t, name))
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
				if err := sch.Validate(c.Arguments); err != nil {
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
