package sched

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/corelm/corelm/internal/fixtures"
	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/runtime/constrain"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
)

func storiesTokenizer(tb testing.TB) *tokenizer.Tokenizer {
	tb.Helper()
	f, err := gguf.Parse(models.Stories)
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := tokenizer.New(f)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

var constrainedSchemas = []string{
	`{"type":"object","properties":{"name":{"type":"string","maxLength":10},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"]}`,
	`{"type":"array","items":{"enum":["cat","dog","bird"]},"minItems":1,"maxItems":4}`,
	`{"anyOf":[{"type":"boolean"},{"type":"null"},{"type":"integer","minimum":-1000,"maximum":1000}]}`,
	`{"type":"object","properties":{"id":{"type":"string","pattern":"^[a-f0-9]{4}$"},
		"tags":{"type":"array","items":{"type":"string","maxLength":6},"maxItems":2},
		"pos":{"type":"object","properties":{"x":{"type":"number","minimum":0,"maximum":9}},"required":["x"]}},
		"required":["id","pos"],"additionalProperties":false}`,
}

// TestStoriesConstrainedOutputsValidate runs the stories model under JSON
// Schemas, greedy and sampled at temperature 1 with several seeds: every
// generation that ends on end-of-generation is a document the schema
// (checked by an independent validator) accepts; the others end with
// FinishLength, never with an incomplete document reported as a stop.
func TestStoriesConstrainedOutputsValidate(t *testing.T) {
	m := loadStories(t, 2)
	tok := storiesTokenizer(t)
	v := constrain.TokenizerVocab(tok)
	prompt, err := tok.Encode("Once upon a time", tokenizer.EncodeOptions{AddBOS: tokenizer.BOSForce})
	if err != nil {
		t.Fatal(err)
	}
	s := New(m, Config{MaxSeqs: 4})
	defer shutdown(t, s)
	for si, src := range constrainedSchemas {
		g, err := constrain.Compile(constrain.Spec{Kind: constrain.JSONSchema, Text: src})
		if err != nil {
			t.Fatal(err)
		}
		sch := fixtures.JSONSchema(t, src)
		stopped := 0
		for seed := range 5 {
			params := sample.Params{Temperature: 1, Seed: uint64(seed)}
			if seed == 0 {
				params = sample.Params{} // greedy
			}
			stop := []int32{2}
			req := Request{Prompt: prompt, MaxTokens: 160, Sampling: params, IsEOG: tok.IsEOG, StopTokens: stop,
				Constraint: constrain.NewMatcher(g, v, stop)}
			toks, final := collect(t, s, req)
			text, err := tok.Decode(toks)
			if err != nil {
				t.Fatal(err)
			}
			switch final.Reason {
			case FinishStop:
				stopped++
				if err := sch.Validate(text); err != nil {
					t.Fatalf("schema %d seed %d: %q: %v", si, seed, text, err)
				}
			case FinishLength:
				if len(toks) != 160 {
					t.Fatalf("schema %d seed %d: length after %d tokens", si, seed, len(toks))
				}
			default:
				t.Fatalf("schema %d seed %d: finish %v (%v)", si, seed, final.Reason, final.Err)
			}
		}
		t.Logf("schema %d: %d of 5 generations complete", si, stopped)
		if stopped < 3 {
			t.Errorf("schema %d: only %d of 5 generations completed", si, stopped)
		}
	}
}

// TestStoriesConstrainedGreedyEqual: when the unconstrained greedy output
// already satisfies the constraint, the constrained one is the same.
func TestStoriesConstrainedGreedyEqual(t *testing.T) {
	m := loadStories(t, 2)
	tok := storiesTokenizer(t)
	v := constrain.TokenizerVocab(tok)
	prompt, err := tok.Encode("Once upon a time", tokenizer.EncodeOptions{AddBOS: tokenizer.BOSForce})
	if err != nil {
		t.Fatal(err)
	}
	s := New(m, Config{MaxSeqs: 1})
	defer shutdown(t, s)
	base := Request{Prompt: prompt, MaxTokens: 48, IsEOG: tok.IsEOG}
	want, wantFinal := collect(t, s, base)
	text, _ := tok.Decode(want)
	specs := []constrain.Spec{
		{Kind: constrain.Regex, Text: `[^{}#]*`},
		{Kind: constrain.Regex, Text: `,?( ?[A-Za-z']+[,.!?]?)+\n?`},
		{Kind: constrain.GBNF, Text: "root ::= (word | punct | space)*\nword ::= [A-Za-z']+\npunct ::= [,.!?\"]\nspace ::= [ \\n]"},
	}
	for _, spec := range specs {
		g, err := constrain.Compile(spec)
		if err != nil {
			t.Fatal(err)
		}
		if !g.Match([]byte(text)) {
			t.Fatalf("%v %q does not match the unconstrained output %q", spec.Kind, spec.Text, text)
		}
		req := base
		req.Constraint = constrain.NewMatcher(g, v, nil)
		got, final := collect(t, s, req)
		if !slices.Equal(got, want) || final.Reason != wantFinal.Reason {
			t.Errorf("%v %q: constrained greedy %v (%v), unconstrained %v (%v)", spec.Kind, spec.Text, got, final.Reason, want, wantFinal.Reason)
		}
	}
}

// TestConstraintDeadEnd: a grammar the vocabulary cannot continue fails
// the generation with ErrConstraint rather than emitting anything else.
func TestConstraintDeadEnd(t *testing.T) {
	m := loadStories(t, 1)
	tok := storiesTokenizer(t)
	pieces := make([][]byte, tok.VocabSize())
	for id := range pieces {
		if p := tok.TokenBytes(int32(id)); !bytes.ContainsAny(p, "xX") && !tok.IsControl(int32(id)) {
			pieces[id] = p
		}
	}
	v := constrain.NewVocab(pieces, tok.EOGTokens())
	g, _ := constrain.Compile(constrain.Spec{Kind: constrain.Regex, Text: `ax`})
	s := New(m, Config{MaxSeqs: 1})
	defer shutdown(t, s)
	toks, final := collect(t, s, Request{Prompt: []int32{1}, MaxTokens: 8, IsEOG: tok.IsEOG, Constraint: constrain.NewMatcher(g, v, nil)})
	if final.Reason != FinishError || !strings.Contains(fmt.Sprint(final.Err), "constraint") {
		t.Fatalf("finish %v (%v) after %v, want an error", final.Reason, final.Err, toks)
	}
}

// TestConstraintLength: a budget that ends before the document is complete
// reports FinishLength, not a stop.
func TestConstraintLength(t *testing.T) {
	m := loadStories(t, 1)
	tok := storiesTokenizer(t)
	v := constrain.TokenizerVocab(tok)
	g, err := constrain.Compile(constrain.Spec{Kind: constrain.JSONSchema, Text: constrainedSchemas[0]})
	if err != nil {
		t.Fatal(err)
	}
	s := New(m, Config{MaxSeqs: 1})
	defer shutdown(t, s)
	toks, final := collect(t, s, Request{Prompt: []int32{1}, MaxTokens: 3, IsEOG: tok.IsEOG, Constraint: constrain.NewMatcher(g, v, nil)})
	text, _ := tok.Decode(toks)
	if final.Reason != FinishLength || len(toks) != 3 || !strings.HasPrefix(text, "{") {
		t.Fatalf("finish %v after %q, want length after 3 tokens of a document", final.Reason, text)
	}
}

// TestConstrainedPreemptionLosesNothing: constrained generations that are
// preempted for want of KV blocks resume with their parse state where it
// was, and their outputs equal unpreempted runs.
func TestConstrainedPreemptionLosesNothing(t *testing.T) {
	m := loadStories(t, 2)
	tok := storiesTokenizer(t)
	v := constrain.TokenizerVocab(tok)
	g, err := constrain.Compile(constrain.Spec{Kind: constrain.GBNF,
		Text: "root ::= (word \" \")+\nword ::= [a-z]+ | \"{\" [a-z]+ \"}\""})
	if err != nil {
		t.Fatal(err)
	}
	const ctx = 512
	probe := New(m, Config{Context: ctx})
	pool := probe.bytesFor(240)
	shutdown(t, probe)
	reqs := func() []Request {
		rs := make([]Request, 3)
		for i := range rs {
			rs[i] = Request{Prompt: sharedPrompt(2, 38, i, m.Config().Vocab), MaxTokens: 200, IsEOG: tok.IsEOG,
				Constraint: constrain.NewMatcher(g, v, nil)}
		}
		rs[1].Sampling = sample.Params{Temperature: 0.9, TopK: 40, Seed: 7}
		return rs
	}
	want := runAlone(t, m, Config{Context: ctx}, reqs())
	s := New(m, Config{MaxSeqs: 3, Context: ctx, KVBudget: pool})
	defer shutdown(t, s)
	for i, h := range submitAll(t, s, reqs()...) {
		got := drainOutput(t, h)
		if !slices.Equal(got.toks, want[i].toks) || got.final.Reason != want[i].final.Reason {
			t.Errorf("request %d: %v (%v), unpreempted %v (%v)", i, got.toks, got.final.Reason, want[i].toks, want[i].final.Reason)
		}
		text, _ := tok.Decode(got.toks)
		if got.final.Reason == FinishStop && !g.Match([]byte(text)) {
			t.Errorf("request %d: %q does not match", i, text)
		}
	}
	if st := s.Stats(); st.Preempted == 0 {
		t.Errorf("no preemption in a pool of %d bytes: %+v", pool, st)
	}
}
