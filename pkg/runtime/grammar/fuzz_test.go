package grammar

import (
	"errors"
	"math/rand/v2"
	"testing"
)

// checkCompiled: a compile error wraps ErrSyntax or ErrUnsupported, and a
// compiled grammar can be walked without panicking.
func checkCompiled(t *testing.T, g *Grammar, err error) {
	if err != nil {
		if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("error wraps neither ErrSyntax nor ErrUnsupported: %v", err)
		}
		return
	}
	rng := rand.New(rand.NewPCG(1, 2))
	if s, ok := sentence(g, rng, 64); ok && !g.Match(s) {
		t.Fatalf("a walked sentence %q does not match", s)
	}
}

// FuzzGBNF: whatever grammar text a client sends, Parse does not panic.
func FuzzGBNF(f *testing.F) {
	for _, s := range []string{`root ::= "a"`, `root ::= [^"\\]* x` + "\nx ::= (\"b\" | [c-e]{2,3})?", `root ::= root "a"`,
		`root ::= .+ "\u00e9" [\x00-\x1f]`, "root ::= (\n\"a\"\n)", `root ::= <[1]>`, `root ::= "a"{0,5}`,
		`root ::= (("a"{0,99}){0,99}){0,99}`, `root ::= ("a"?)* "b"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		if len(src) > 2000 {
			return
		}
		g, err := Parse(src)
		checkCompiled(t, g, err)
	})
}

// FuzzJSONSchema: whatever schema a client sends, FromJSONSchema does not
// panic and refuses with the package's errors.
func FuzzJSONSchema(f *testing.F) {
	for _, s := range schemas {
		f.Add(s)
	}
	f.Add(`{"type":"integer","minimum":1e300}`)
	f.Add(`{"$ref":"#/$defs/a","$defs":{"a":{"$ref":"#/$defs/a"}}}`)
	f.Fuzz(func(t *testing.T, src string) {
		if len(src) > 2000 {
			return
		}
		g, err := FromJSONSchema([]byte(src))
		checkCompiled(t, g, err)
	})
}

// FuzzRegex: whatever pattern a client sends, FromRegex does not panic.
func FuzzRegex(f *testing.F) {
	for _, s := range []string{`a+b?`, `[^a-c]{2,5}`, `(?i)x`, `a(?=b)`, `\p{Greek}.`, `^$`, `(a|)*`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, re string) {
		if len(re) > 500 {
			return
		}
		g, err := FromRegex(re)
		checkCompiled(t, g, err)
	})
}
