package grammar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/corelm/corelm/internal/fixtures"
)

// schemas cover the supported keywords; each is checked by generating
// random sentences of its grammar and validating them with an independent
// JSON Schema implementation.
var schemas = map[string]string{
	"string":        `{"type":"string"}`,
	"bounded":       `{"type":"string","minLength":2,"maxLength":5}`,
	"integer range": `{"type":"integer","minimum":-120,"maximum":4567}`,
	"exclusive":     `{"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":100}`,
	"number range":  `{"type":"number","minimum":-3.5,"maximum":12.25}`,
	"number":        `{"type":"number"}`,
	"nullable":      `{"type":["string","null"]}`,
	"enum":          `{"enum":["red","green",3,null,{"a":[1,2]}]}`,
	"const":         `{"const":"fixed \"quoted\" é"}`,
	"object": `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0},
		"tags":{"type":"array","items":{"type":"string","maxLength":8},"maxItems":3},"ok":{"type":"boolean"}},
		"required":["name","age"]}`,
	"all optional": `{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"null"},"c":{"type":"boolean"}}}`,
	"additional": `{"type":"object","properties":{"id":{"type":"integer"},"i":{"type":"string"}},"required":["id"],
		"additionalProperties":{"type":"number"}}`,
	"free object":  `{"type":"object"}`,
	"map":          `{"type":"object","additionalProperties":{"enum":[1,2]}}`,
	"closed empty": `{"type":"object","additionalProperties":false}`,
	"array counts": `{"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":4}`,
	"prefixItems":  `{"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}],"items":false,"minItems":1}`,
	"prefix+items": `{"type":"array","prefixItems":[{"const":"x"}],"items":{"type":"boolean"},"minItems":2}`,
	"pattern":      `{"type":"string","pattern":"^[A-Z]{2}-\\d{3,4}$"}`,
	"unanchored":   `{"type":"string","pattern":"^a[\"\\\\]b"}`,
	"anyOf":        `{"anyOf":[{"type":"integer"},{"type":"string","maxLength":3}]}`,
	"oneOf":        `{"oneOf":[{"type":"integer"},{"type":"object","properties":{"k":{"const":1}},"required":["k"]}]}`,
	"oneOf enums":  `{"oneOf":[{"enum":["a","b"]},{"enum":["c"]}]}`,
	"defs": `{"$defs":{"point":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"}},"required":["x","y"]}},
		"type":"array","items":{"$ref":"#/$defs/point"},"maxItems":3}`,
	"recursive": `{"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},
		"kids":{"type":"array","items":{"$ref":"#/$defs/node"},"maxItems":2}},"required":["v"]}},"$ref":"#/$defs/node"}`,
	"root recursion": `{"type":"object","properties":{"next":{"anyOf":[{"$ref":"#"},{"type":"null"}]}},"required":["next"]}`,
	"allOf one":      `{"allOf":[{"type":"boolean"}],"title":"t"}`,
	"formats": `{"type":"object","properties":{"d":{"type":"string","format":"date"},"t":{"type":"string","format":"time"},
		"dt":{"type":"string","format":"date-time"},"u":{"type":"string","format":"uuid"},"ip":{"type":"string","format":"ipv4"},
		"e":{"type":"string","format":"email"}},"required":["d","t","dt","u","ip","e"]}`,
	"any":  `{}`,
	"true": `true`,
	"realistic": `{"type":"object","properties":{
		"id":{"type":"string","pattern":"^[a-f0-9]{8}$"},
		"status":{"enum":["active","inactive","banned"]},
		"profile":{"type":"object","properties":{"name":{"type":"string","minLength":1,"maxLength":40},
			"email":{"type":["string","null"]},"score":{"type":"number","minimum":0,"maximum":100}},
			"required":["name","score"],"additionalProperties":false},
		"roles":{"type":"array","items":{"enum":["admin","user","guest"]},"minItems":1,"maxItems":3}},
		"required":["id","status","profile","roles"]}`,
}

// sentence walks g's matcher at random until a complete sentence (biased
// towards closing punctuation so walks end), or "" after limit bytes.
func sentence(g *Grammar, rng *rand.Rand, limit int) ([]byte, bool) {
	m := NewMatcher(g)
	var out []byte
	var allowed []byte
	for len(out) < limit {
		if m.Complete() && rng.IntN(3) == 0 {
			return out, true
		}
		allowed = allowed[:0]
		for b := range 256 {
			if m.Next(m.State(), byte(b)) != Dead {
				allowed = append(allowed, byte(b))
			}
		}
		if len(allowed) == 0 {
			return out, m.Complete()
		}
		pick := allowed[rng.IntN(len(allowed))]
		if rng.IntN(2) == 0 {
			for _, b := range []byte(`"}],`) {
				if bytes.IndexByte(allowed, b) >= 0 {
					pick = b
					break
				}
			}
		}
		if !m.Accept([]byte{pick}) {
			panic("allowed byte refused")
		}
		out = append(out, pick)
	}
	return out, false
}

func TestJSONSchemaSentencesValidate(t *testing.T) {
	for name, src := range schemas {
		t.Run(name, func(t *testing.T) {
			g, err := FromJSONSchema([]byte(src))
			if err != nil {
				t.Fatal(err)
			}
			sch := fixtures.JSONSchema(t, src)
			rng := rand.New(rand.NewPCG(1, uint64(len(name))))
			complete := 0
			for range 200 {
				s, ok := sentence(g, rng, 3000)
				if !ok {
					continue
				}
				complete++
				if err := sch.Validate(string(s)); err != nil {
					t.Fatalf("%s: does not validate: %v\ngrammar:\n%s", s, err, g.GBNF())
				}
				if !json.Valid(s) {
					t.Fatalf("%s: encoding/json rejects it", s)
				}
			}
			if complete < 20 {
				t.Errorf("only %d of 200 random walks completed", complete)
			}
		})
	}
}

// Documents that validate and that the grammar's choices (property order,
// bounded whitespace) allow must be accepted.
func TestJSONSchemaAccepts(t *testing.T) {
	tests := []struct {
		schema string
		yes    []string
		no     []string
	}{
		{schemas["object"], []string{`{"name":"x","age":3}`, `{"name": "x", "age": 30, "tags": ["a", "b"], "ok": true}`,
			"{\n  \"name\": \"é\\u00e9\",\n  \"age\": 0\n}"},
			[]string{`{"age":3,"name":"x"}`, `{"name":"x"}`, `{"name":"x","age":-1}`, `{"name":"x","age":1,"z":1}`,
				`{"name":"x","age":1,"tags":["123456789"]}`}},
		{schemas["additional"], []string{`{"id":1,"i":"s","x":2.5}`, `{"id":1,"ix":1}`, `{"id":1,"":0}`}, []string{`{"id":1,"id":2}`, `{"id":1,"i":3}`}},
		{schemas["integer range"], []string{"-120", "0", "99", "4567", "1000"}, []string{"-121", "4568", "01", "-0", "5000"}},
		{schemas["exclusive"], []string{"1", "99"}, []string{"0", "100"}},
		{schemas["number range"], []string{"-3", "12", "11.99", "0.5"}, []string{"12.5", "-4", "13"}},
		{schemas["pattern"], []string{`"AB-123"`, `"ZZ-0000"`}, []string{`"ab-123"`, `"AB-12"`, `"AB-12345"`}},
		{schemas["unanchored"], []string{`"a\"byy"`, `"a\\b"`}, []string{`"ab"`, `"xa\"b"`}},
		{`{"type":"string","pattern":"a[\"\\\\]b"}`, []string{`"xxa\"byy"`, `"a\\b"`}, []string{`"ab"`}},
		{schemas["array counts"], []string{"[1,2]", "[ 1, 2, 3, 4 ]"}, []string{"[1]", "[1,2,3,4,5]", "[]"}},
		{schemas["prefixItems"], []string{`["a"]`, `["a",1]`}, []string{`[]`, `["a",1,2]`, `[1]`}},
		{schemas["enum"], []string{`"red"`, `3`, `null`, `{"a":[1,2]}`}, []string{`"blue"`, `4`}},
		{schemas["recursive"], []string{`{"v":1,"kids":[{"v":2},{"v":3,"kids":[]}]}`}, []string{`{"kids":[]}`}},
		{schemas["string"], []string{`"\ud7ff"`, `"\uE000"`}, []string{`"\ud800"`, "\"\x01\""}},
		{`{"type":"string","format":"date"}`, []string{`"2024-02-28"`, `"1999-12-31"`, `"2023-04-30"`}, []string{`"2024-02-30"`, `"2023-04-31"`, `"2024-13-01"`, `"24-01-01"`}},
		{`{"type":"string","format":"date-time"}`, []string{`"2024-07-26T12:00:00Z"`, `"2024-07-26T23:59:59.123+05:30"`}, []string{`"2024-07-26 12:00:00Z"`, `"2024-07-26T24:00:00Z"`}},
		{`{"type":"string","format":"email"}`, []string{`"ada.l+x@example.co.uk"`}, []string{`"a..b@example.com"`, `"@example.com"`, `"a@b"`}},
		{`{"type":"string","format":"ipv4"}`, []string{`"192.168.0.1"`, `"0.0.0.0"`}, []string{`"256.1.1.1"`, `"01.1.1.1"`}},
		{`{"type":"object","properties":{"a\"b":{"type":"integer"},"é/ü":{"enum":["ça","日本"]}},"required":["a\"b"],"additionalProperties":{"type":"null"}}`,
			[]string{`{"a\"b":1}`, `{"a\"b":1,"é/ü":"日本"}`, `{"a\"b":1,"é/ü":"ça","éx":null}`, `{"a\"b":1,"é":null}`},
			[]string{`{"a\"b":1,"é/ü":"ca"}`, `{"a\"b":1,"é/ü":null}`, `{"a\"b":1,"a\"b":null}`}},
		{`{"const":{"z":[1,{"y":null}],"a":"x"}}`, []string{`{"z":[1,{"y":null}],"a":"x"}`}, []string{`{"a":"x","z":[1,{"y":null}]}`}},
	}
	for _, tt := range tests {
		g, err := FromJSONSchema([]byte(tt.schema))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range tt.yes {
			if !g.Match([]byte(s)) {
				t.Errorf("schema %s: %s refused", tt.schema, s)
			}
		}
		for _, s := range tt.no {
			if g.Match([]byte(s)) {
				t.Errorf("schema %s: %s accepted", tt.schema, s)
			}
		}
	}
}

func TestJSONSchemaRefused(t *testing.T) {
	tests := []struct {
		schema string
		want   error
		names  string
	}{
		{`{"type":"string","format":"hostname"}`, ErrUnsupported, `format hostname`},
		{`{"type":"object","properties":{"a":{"type":"string","format":"uri"}}}`, ErrUnsupported, `#/properties/a/format`},
		{`{"type":"string","format":"date","maxLength":3}`, ErrUnsupported, `format together`},
		{`{"not":{"type":"null"}}`, ErrUnsupported, `"not"`},
		{`{"type":"array","uniqueItems":true}`, ErrUnsupported, `"uniqueItems"`},
		{`{"type":"object","minProperties":1}`, ErrUnsupported, `"minProperties"`},
		{`{"type":"object","patternProperties":{"a":{}}}`, ErrUnsupported, `"patternProperties"`},
		{`{"type":"number","multipleOf":2}`, ErrUnsupported, `"multipleOf"`},
		{`{"if":{},"then":{}}`, ErrUnsupported, `"if"`},
		{`{"type":"string","nullable":true}`, ErrUnsupported, `"nullable"`},
		{`{"allOf":[{"type":"string"},{"maxLength":3}]}`, ErrUnsupported, `allOf`},
		{`{"oneOf":[{"type":"string"},{"type":"string","maxLength":2}]}`, ErrUnsupported, `oneOf`},
		{`{"$ref":"http://example.com/s.json"}`, ErrUnsupported, `$ref`},
		{`{"$ref":"#/$defs/a","maxLength":3,"$defs":{"a":{}}}`, ErrUnsupported, `"maxLength"`},
		{`{"type":"string","pattern":"(?=a)b"}`, ErrUnsupported, `(?=`},
		{`{"type":"string","pattern":"\\bword"}`, ErrUnsupported, `word boundary`},
		{`{"type":"string","minItems":1}`, ErrUnsupported, `"minItems"`},
		{`{"type":"string","contentEncoding":"base64"}`, ErrUnsupported, `"contentEncoding"`},
		{`false`, ErrUnsupported, `false`},
		{`{"type":"strin"}`, ErrSyntax, `type`},
		{`{"type":`, ErrSyntax, `JSON`},
		{`{"type":"object","required":["x"],"properties":{}}`, ErrUnsupported, `"x"`},
	}
	for _, tt := range tests {
		_, err := FromJSONSchema([]byte(tt.schema))
		if !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), tt.names) {
			t.Errorf("%s: error %v, want %v naming %s", tt.schema, err, tt.want, tt.names)
		}
	}
}

func TestRegex(t *testing.T) {
	tests := []struct {
		re      string
		yes, no []string
	}{
		{`\d{3}-\d{4}`, []string{"555-1234"}, []string{"5551234", "555-12345"}},
		{`^(cat|dog)s?$`, []string{"cat", "dogs"}, []string{"cats!", "bird"}},
		{`[^a-c]+`, []string{"xyz", "日本"}, []string{"abc", ""}},
		{`a.c`, []string{"abc", "a日c"}, []string{"a\nc"}},
		{`(?:ab)*?x`, []string{"x", "ababx"}, []string{"abx?"}},
		{`\w+@\w+\.com`, []string{"me@host.com"}, []string{"me@host.org"}},
		{`\p{Greek}+`, []string{"αβ"}, []string{"ab"}},
	}
	for _, tt := range tests {
		g, err := FromRegex(tt.re)
		if err != nil {
			t.Fatalf("%s: %v", tt.re, err)
		}
		for _, s := range tt.yes {
			if !g.Match([]byte(s)) {
				t.Errorf("%s: %q refused", tt.re, s)
			}
		}
		for _, s := range tt.no {
			if g.Match([]byte(s)) {
				t.Errorf("%s: %q accepted", tt.re, s)
			}
		}
	}
	for _, re := range []string{`a(?!b)`, `(a)\1`, `\bx`, `a^b`, `(?i)abc`, `(?<=a)b`} {
		if _, err := FromRegex(re); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: error %v, want ErrUnsupported", re, err)
		}
	}
}

func TestJSONObject(t *testing.T) {
	g := JSONObject()
	for _, s := range []string{`{}`, `{"a":[1,{"b":null}],"c":"\u00e9"}`, "{ \"x\": -0.5e10 }"} {
		if !g.Match([]byte(s)) {
			t.Errorf("%s refused", s)
		}
	}
	for _, s := range []string{`[]`, `"x"`, `{"a":}`, `{"a":1,}`, `{} `} {
		if g.Match([]byte(s)) {
			t.Errorf("%s accepted", s)
		}
	}
}
