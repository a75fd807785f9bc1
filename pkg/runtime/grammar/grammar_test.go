package grammar

import (
	"errors"
	"strings"
	"testing"
)

func TestGBNF(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		match   []string
		nomatch []string
	}{
		{"literal", `root ::= "ab"`, []string{"ab"}, []string{"", "a", "abc", "b"}},
		{"alternation", `root ::= "a" | "bc" # comment`, []string{"a", "bc"}, []string{"ab", "b"}},
		{"sequence and refs", "root ::= x y\nx ::= \"x\"\ny ::= [0-9]", []string{"x0", "x9"}, []string{"x", "xa"}},
		{"star", `root ::= "a"*`, []string{"", "a", "aaaa"}, []string{"b"}},
		{"plus", `root ::= [ab]+`, []string{"a", "abba"}, []string{"", "c"}},
		{"optional", `root ::= "a" "b"?`, []string{"a", "ab"}, []string{"abb"}},
		{"counted", `root ::= "a"{2,3}`, []string{"aa", "aaa"}, []string{"a", "aaaa"}},
		{"at least", `root ::= "a"{2,}`, []string{"aa", "aaaaa"}, []string{"a"}},
		{"exact", `root ::= [0-9]{3}`, []string{"123"}, []string{"12", "1234"}},
		{"group", "root ::= (\"a\" |\n \"b\")+ \"c\"", []string{"ac", "abac"}, []string{"c"}},
		{"negated class", `root ::= [^"\\]*`, []string{"abc", "héllo", "日本"}, []string{`a"`, `\`}},
		{"any char", `root ::= . .`, []string{"ab", "é日", "😀x"}, []string{"a", "abc"}},
		{"unicode range", `root ::= [α-ω]+`, []string{"αβγ", "ω"}, []string{"a", "Α"}},
		{"escapes", `root ::= "\x41\u00e9\n\t\"" [\x00-\x1f]`, []string{"Aé\n\t\"\x01"}, []string{"Aé\n\t\""}},
		{"right recursion", "root ::= \"(\" root \")\" | \"\"", []string{"", "()", "((()))"}, []string{"(()", ")"}},
		{"nullable loop body", `root ::= ("a"?)* "b"`, []string{"b", "aab"}, []string{"", "ba"}},
		{"multi-line rule continues after |", "root ::= \"a\" |\n  \"b\"\n", []string{"a", "b"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := Parse(tt.src)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.match {
				if !g.Match([]byte(s)) {
					t.Errorf("%q does not match", s)
				}
			}
			for _, s := range tt.nomatch {
				if g.Match([]byte(s)) {
					t.Errorf("%q matches", s)
				}
			}
		})
	}
}

func TestGBNFErrors(t *testing.T) {
	tests := []struct {
		src  string
		want error
	}{
		{`x ::= "a"`, ErrSyntax},
		{`root ::= y`, ErrSyntax},
		{`root ::= "a`, ErrSyntax},
		{`root ::= [a`, ErrSyntax},
		{`root ::= "a"**`, ErrSyntax},
		{`root ::= "a"{3,2}`, ErrSyntax},
		{`root ::= root "a"`, ErrUnsupported},
		{"root ::= x\nx ::= \"\" | x \"a\"", ErrUnsupported},
		{`root ::= <[1000]>`, ErrUnsupported},
		{"root ::= \"a\"\nroot ::= \"b\"", ErrSyntax},
	}
	for _, tt := range tests {
		if _, err := Parse(tt.src); !errors.Is(err, tt.want) {
			t.Errorf("Parse(%q) = %v, want %v", tt.src, err, tt.want)
		}
	}
}

func TestPrefixes(t *testing.T) {
	g := MustParse(`root ::= "{" [a-z]+ "}"`)
	m := NewMatcher(g)
	for _, b := range []byte("{ab") {
		if !m.Accept([]byte{b}) {
			t.Fatalf("rejected %q", b)
		}
		if m.Complete() {
			t.Fatal("complete too early")
		}
	}
	if m.Accept([]byte("x}}")) {
		t.Fatal("accepted a non-prefix")
	}
	if !m.Accept([]byte("}")) || !m.Complete() {
		t.Fatal("not complete after }")
	}
}

// TestExpansionLimits: nested nullable repetitions, whose start alone
// would take millions of expansion steps (and once overflowed the stack),
// are refused; large counts that expand shallowly still work.
func TestExpansionLimits(t *testing.T) {
	if _, err := Parse(`root ::= (("a"{0,1000}){0,1000}){0,1000}`); !errors.Is(err, ErrTooComplex) {
		t.Fatalf("nested nullable repetitions: %v, want ErrTooComplex", err)
	}
	g, err := FromJSONSchema([]byte(`{"type":"array","items":{"type":"string","minLength":900,"maxLength":1000},"minItems":500,"maxItems":1000}`))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMatcher(g)
	if !m.Accept([]byte(`[ "`+strings.Repeat("x", 950)+`", "`)) || m.Complete() || m.Err() != nil {
		t.Fatalf("large counts: matcher stopped (err %v)", m.Err())
	}
}
