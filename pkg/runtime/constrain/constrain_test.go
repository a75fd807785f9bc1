package constrain

import (
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/corelm/corelm/internal/fixtures"
	"github.com/corelm/corelm/pkg/runtime/grammar"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
)

const realistic = `{"type":"object","properties":{
	"id":{"type":"string","pattern":"^[a-f0-9]{8}$"},
	"status":{"enum":["active","inactive","banned"]},
	"profile":{"type":"object","properties":{"name":{"type":"string","minLength":1,"maxLength":40},
		"email":{"type":["string","null"]},"score":{"type":"number","minimum":0,"maximum":100}},
		"required":["name","score"],"additionalProperties":false},
	"roles":{"type":"array","items":{"enum":["admin","user","guest"]},"minItems":1,"maxItems":3}},
	"required":["id","status","profile","roles"]}`

// TestMaskIsExact checks masks against brute force: a token is allowed
// exactly when a fresh matcher at the same output accepts its bytes.
func TestMaskIsExact(t *testing.T) {
	tok := fixtures.Tokenizer(t, "llama-bpe")
	v := TokenizerVocab(tok)
	g, err := grammar.FromJSONSchema([]byte(realistic))
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"", `{"id": "ab`, `{"id":"0123abcd", "status": "act`, `{"id":"0123abcd","status":"active","profile":{"name":"x","score":99.`} {
		c := NewMatcher(g, v, nil)
		gm := grammar.NewMatcher(g)
		if !gm.Accept([]byte(prefix)) {
			t.Fatalf("prefix %q refused", prefix)
		}
		// Move c over the prefix byte by byte using single-byte tokens.
		for i := range len(prefix) {
			id, ok := singleByteTokenCached(tok, prefix[i])
			if !ok {
				t.Fatalf("no token for byte %q", prefix[i])
			}
			if err := c.Accept(id); err != nil {
				t.Fatal(err)
			}
		}
		logits := make([]float32, v.Size())
		if err := c.Mask(logits); err != nil {
			t.Fatal(err)
		}
		n := 0
		for id := range int32(v.Size()) {
			b := v.bytes(id)
			want := len(b) > 0 && gm.Next(gm.State(), b[0]) != grammar.Dead && accepts(gm, b)
			got := !math.IsInf(float64(logits[id]), -1)
			if got != want {
				t.Fatalf("prefix %q: token %d (%q): allowed %v, want %v", prefix, id, b, got, want)
			}
			if got {
				n++
			}
		}
		t.Logf("prefix %q: %d of %d tokens allowed", prefix, n, v.Size())
	}
}

func accepts(gm *grammar.Matcher, b []byte) bool {
	st := gm.State()
	for _, c := range b {
		if st = gm.Next(st, c); st == grammar.Dead {
			return false
		}
	}
	return true
}

// TestSampledOutputsValidate draws fresh random logits at every step (a
// stand-in for a model that knows nothing of the schema; the argmax of
// noisy logits is a random draw, without the cost of sorting 128k
// candidates) and checks that every finished output validates.
func TestSampledOutputsValidate(t *testing.T) {
	schemas := []string{
		realistic,
		`{"type":"array","items":{"type":"integer","minimum":-5,"maximum":5},"maxItems":6}`,
		`{"anyOf":[{"type":"string","maxLength":12},{"type":"boolean"}]}`,
		`{"$defs":{"n":{"type":"object","properties":{"v":{"type":"integer"},"k":{"type":"array","items":{"$ref":"#/$defs/n"},"maxItems":2}},"required":["v"]}},"$ref":"#/$defs/n"}`,
	}
	for _, name := range []string{"llama-bpe", "llama-spm"} {
		tok := fixtures.Tokenizer(t, name)
		v := TokenizerVocab(tok)
		for si, src := range schemas {
			g, err := grammar.FromJSONSchema([]byte(src))
			if err != nil {
				t.Fatal(err)
			}
			sch := fixtures.JSONSchema(t, src)
			finished := 0
			for seed := range uint64(6) {
				out, ok := sampleOutput(t, g, v, tok, seed, 400)
				if !ok {
					continue
				}
				finished++
				if err := sch.Validate(string(out)); err != nil {
					t.Fatalf("%s schema %d seed %d: %s does not validate: %v", name, si, seed, out, err)
				}
			}
			t.Logf("%s schema %d: %d of 6 finished within 400 tokens", name, si, finished)
		}
	}
}

// sampleOutput generates under g with random logits that favour ending
// (so walks finish) and returns the output and whether it ended with EOG.
func sampleOutput(t *testing.T, g *grammar.Grammar, v *Vocab, tok *tokenizer.Tokenizer, seed uint64, limit int) ([]byte, bool) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	c := NewMatcher(g, v, nil)
	var out []byte
	logits := make([]float32, v.Size())
	for range limit {
		for i := range logits {
			logits[i] = float32(rng.NormFloat64())
		}
		for _, b := range []byte(`"}]`) {
			if id, ok := singleByteTokenCached(tok, b); ok {
				logits[id] += 4
			}
		}
		for _, id := range tok.EOGTokens() {
			logits[id] += 8
		}
		if err := c.Mask(logits); err != nil {
			t.Fatal(err)
		}
		id := sample.Argmax(logits)
		if err := c.Accept(id); err != nil {
			t.Fatalf("sampled a masked token: %v", err)
		}
		if tok.IsEOG(id) {
			return out, true
		}
		out = append(out, v.bytes(id)...)
	}
	return out, false
}

var (
	sbMu    sync.Mutex
	sbCache = map[*tokenizer.Tokenizer]map[byte]int32{}
)

func singleByteTokenCached(tok *tokenizer.Tokenizer, b byte) (int32, bool) {
	sbMu.Lock()
	defer sbMu.Unlock()
	m := sbCache[tok]
	if m == nil {
		m = map[byte]int32{}
		for id := range int32(tok.VocabSize()) {
			if p := tok.TokenBytes(id); len(p) == 1 && !tok.IsControl(id) {
				if _, ok := m[p[0]]; !ok {
					m[p[0]] = id
				}
			}
		}
		sbCache[tok] = m
	}
	id, ok := m[b]
	return id, ok
}

func TestEndOnlyWhenComplete(t *testing.T) {
	tok := fixtures.Tokenizer(t, "llama-bpe")
	v := TokenizerVocab(tok)
	stop := int32(1000) // an ordinary token used as a request stop token
	c := NewMatcher(grammar.MustParse(`root ::= "ab"`), v, []int32{stop})
	logits := make([]float32, v.Size())
	if err := c.Mask(logits); err != nil {
		t.Fatal(err)
	}
	for _, id := range append(tok.EOGTokens(), stop) {
		if !math.IsInf(float64(logits[id]), -1) {
			t.Fatalf("end token %d allowed before the output is complete", id)
		}
	}
	if err := c.Accept(tok.EOS()); !errors.Is(err, ErrRejected) {
		t.Fatalf("EOS accepted early: %v", err)
	}
	ab, ok := tok.TokenID("ab")
	if !ok {
		t.Fatal("no token ab")
	}
	if err := c.Accept(ab); err != nil {
		t.Fatal(err)
	}
	clear(logits)
	if err := c.Mask(logits); err != nil {
		t.Fatal(err)
	}
	for id, l := range logits {
		end := tok.IsEOG(int32(id)) || int32(id) == stop
		if end == math.IsInf(float64(l), -1) {
			t.Fatalf("after the sentence: token %d allowed=%v", id, !end)
		}
	}
}

func TestDeadEnd(t *testing.T) {
	v := NewVocab([][]byte{[]byte("a"), []byte("b"), nil}, []int32{2})
	c := NewMatcher(grammar.MustParse(`root ::= "c"`), v, nil)
	if err := c.Mask(make([]float32, 3)); !errors.Is(err, ErrDeadEnd) {
		t.Fatalf("got %v, want ErrDeadEnd", err)
	}
}

func TestCache(t *testing.T) {
	c := NewCache(2)
	a, err := c.Compile(Spec{Kind: Regex, Text: "a+"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := c.Compile(Spec{Kind: Regex, Text: "a+"}); b != a {
		t.Fatal("not cached")
	}
	if b, _ := c.Compile(Spec{Kind: GBNF, Text: `root ::= "a"+`}); b == a {
		t.Fatal("kinds share an entry")
	}
	c.Compile(Spec{Kind: Regex, Text: "b"})
	if b, _ := c.Compile(Spec{Kind: Regex, Text: "a+"}); b == a {
		t.Fatal("not evicted past capacity")
	}
	if _, err := c.Compile(Spec{Kind: JSONSchema, Text: `{"format":"x"}`}); !errors.Is(err, grammar.ErrUnsupported) {
		t.Fatalf("got %v", err)
	}
}

// TestPool: a released matcher comes back reset, keeps its caches, and
// masks exactly as a fresh one does.
func TestPool(t *testing.T) {
	tok := fixtures.Tokenizer(t, "llama-bpe")
	v := TokenizerVocab(tok)
	g, err := grammar.FromJSONSchema([]byte(realistic))
	if err != nil {
		t.Fatal(err)
	}
	p := NewPool(2)
	a := p.Get(g, v, nil)
	brace, _ := tok.TokenID("{")
	if err := a.Accept(brace); err != nil {
		t.Fatal(err)
	}
	a.Release()
	b := p.Get(g, v, []int32{brace})
	if b != a {
		t.Fatal("the released matcher was not reused")
	}
	fresh := NewMatcher(g, v, []int32{brace})
	l1, l2 := make([]float32, v.Size()), make([]float32, v.Size())
	if err := b.Mask(l1); err != nil {
		t.Fatal(err)
	}
	if err := fresh.Mask(l2); err != nil {
		t.Fatal(err)
	}
	for i := range l1 {
		if math.IsInf(float64(l1[i]), -1) != math.IsInf(float64(l2[i]), -1) {
			t.Fatalf("token %d: pooled and fresh masks differ", i)
		}
	}
	if !math.IsInf(float64(l1[brace]), -1) {
		t.Fatal("a stop token is allowed before the output is complete")
	}
	b.Release()
	b.Release() // a second release is a no-op
	for range 3 {
		p.Get(grammar.MustParse(`root ::= "x"`), v, nil).Release()
	}
	if p.n > 2 {
		t.Fatalf("pool holds %d matchers, cap 2", p.n)
	}
}

// TestAmbiguousGrammarRefused: a grammar whose parses multiply fails the
// generation instead of slowing every step down.
func TestAmbiguousGrammarRefused(t *testing.T) {
	v := NewVocab([][]byte{[]byte("a"), []byte("c"), nil}, []int32{2})
	c := NewMatcher(grammar.MustParse(`root ::= "a" root "c" | "a" root | ""`), v, nil)
	logits := make([]float32, 3)
	for i := range 2000 {
		if err := c.Mask(logits); err != nil {
			if !errors.Is(err, grammar.ErrAmbiguous) {
				t.Fatalf("step %d: %v", i, err)
			}
			return
		}
		if err := c.Accept(0); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	t.Fatal("2000 ambiguous steps accepted")
}

// TestWalkWork logs what the first walks of a realistic schema cost in
// grammar steps, against the maxWalkWork bound.
func TestWalkWork(t *testing.T) {
	tok := fixtures.Tokenizer(t, "llama-bpe")
	v := TokenizerVocab(tok)
	g, err := grammar.FromJSONSchema([]byte(realistic))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := tok.Encode(`{"id": "0a1b2c3d", "status": "active", "profile": {"name": "Ada", "email": null, "score": 97.5}, "roles": ["admin"]}`, tokenizer.EncodeOptions{AddBOS: tokenizer.BOSNone})
	if err != nil {
		t.Fatal(err)
	}
	c := NewMatcher(g, v, nil)
	logits := make([]float32, v.Size())
	most := uint64(0)
	for _, id := range ids {
		before := c.m.Work()
		if err := c.Mask(logits); err != nil {
			t.Fatal(err)
		}
		most = max(most, c.m.Work()-before)
		if err := c.Accept(id); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("most grammar steps for one mask: %d (bound %d), total %d", most, maxWalkWork, c.m.Work())
	if most > maxWalkWork/16 {
		t.Errorf("a realistic schema's mask took %d steps, close to the bound %d", most, maxWalkWork)
	}
}
