package constrain

import (
	"testing"

	"github.com/corelm/corelm/internal/fixtures"
	"github.com/corelm/corelm/pkg/runtime/grammar"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
)

// BenchmarkMask measures the per-token cost of constrained decoding on
// Llama-3's 128k-token vocabulary: Mask and Accept for every token of a
// realistic document, with a fresh Matcher per document (as a request has),
// so trie walks for new parser states are included. ns/token is the
// number to compare with a decode step; "sample" is the unconstrained
// sampler on the same logits (temperature 0.8, top-k 40), for scale.
func BenchmarkMask(b *testing.B) {
	tok := fixtures.Tokenizer(b, "llama-bpe")
	v := TokenizerVocab(tok)
	doc := `{"id": "0a1b2c3d", "status": "active", "profile": {"name": "Ada Lovelace", "email": null, "score": 97.5}, "roles": ["admin", "user"]}`
	cases := []struct {
		name string
		spec Spec
	}{
		{"schema", Spec{Kind: JSONSchema, Text: realistic}},
		{"json_object", Spec{Kind: JSONObject}},
	}
	ids, err := tok.Encode(doc, tokenizer.EncodeOptions{AddBOS: tokenizer.BOSNone})
	if err != nil {
		b.Fatal(err)
	}
	logits := make([]float32, v.Size())
	for _, tc := range cases {
		g, err := Compile(tc.spec)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				c := NewMatcher(g, v, nil)
				for _, id := range ids {
					if err := c.Mask(logits); err != nil {
						b.Fatal(err)
					}
					if err := c.Accept(id); err != nil {
						b.Fatal(err)
					}
				}
				if !c.Complete() {
					b.Fatal("document incomplete")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/token")
		})
	}
	// warm: matchers come from a Pool, as in the server, so a schema used
	// again finds its states' masks already computed.
	for _, tc := range cases {
		g, _ := Compile(tc.spec)
		b.Run(tc.name+"-warm", func(b *testing.B) {
			p := NewPool(4)
			for b.Loop() {
				c := p.Get(g, v, nil)
				for _, id := range ids {
					if err := c.Mask(logits); err != nil {
						b.Fatal(err)
					}
					if err := c.Accept(id); err != nil {
						b.Fatal(err)
					}
				}
				c.Release()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/token")
		})
	}
	b.Run("compile-schema", func(b *testing.B) {
		for b.Loop() {
			if _, err := Compile(cases[0].spec); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sample", func(b *testing.B) {
		s := sample.New(sample.Defaults())
		for i := range logits {
			logits[i] = float32(i%977) / 100
		}
		work := make([]float32, len(logits))
		for b.Loop() {
			copy(work, logits)
			s.Sample(work, nil)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/token")
	})
	_ = grammar.Dead
}
