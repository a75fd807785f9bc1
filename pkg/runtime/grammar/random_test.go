package grammar

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"testing"

	"github.com/corelm/corelm/internal/fixtures"
)

// randomSchema builds a schema from the supported keywords, depth levels
// deep at most.
func randomSchema(rng *rand.Rand, depth int) map[string]any {
	leaf := depth <= 0
	switch k := rng.IntN(10); {
	case k == 0:
		s := map[string]any{"type": "string"}
		if rng.IntN(2) == 0 {
			lo := rng.IntN(3)
			s["minLength"], s["maxLength"] = lo, lo+rng.IntN(6)
		} else if rng.IntN(2) == 0 {
			s["pattern"] = []string{`^[a-z]{1,4}\d?$`, `x+`, `^(ab|cd)*$`, `[0-9]`}[rng.IntN(4)]
		} else if rng.IntN(2) == 0 {
			s["format"] = []string{"date", "time", "date-time", "uuid", "ipv4", "email"}[rng.IntN(6)]
		}
		return s
	case k == 1:
		s := map[string]any{"type": "integer"}
		if rng.IntN(2) == 0 {
			lo := rng.IntN(2000) - 1000
			s["minimum"], s["maximum"] = lo, lo+rng.IntN(3000)
		} else if rng.IntN(2) == 0 {
			s["exclusiveMinimum"] = -5
		}
		return s
	case k == 2:
		s := map[string]any{"type": "number"}
		if rng.IntN(2) == 0 {
			s["minimum"], s["maximum"] = -2.5, 7.75
		}
		return s
	case k == 3:
		return map[string]any{"type": []string{"boolean", "null", "string"}[rng.IntN(3)]}
	case k == 4:
		return map[string]any{"enum": []any{"a", 1, nil, true, []any{1, "x"}}[:1+rng.IntN(5)]}
	case k == 5 && !leaf:
		props := map[string]any{}
		var req []string
		for i := range 1 + rng.IntN(3) {
			name := fmt.Sprintf("p%d", i)
			props[name] = randomSchema(rng, depth-1)
			if rng.IntN(2) == 0 {
				req = append(req, name)
			}
		}
		s := map[string]any{"type": "object", "properties": props}
		if len(req) > 0 {
			s["required"] = req
		}
		switch rng.IntN(3) {
		case 0:
			s["additionalProperties"] = false
		case 1:
			s["additionalProperties"] = map[string]any{"type": "integer"}
		}
		return s
	case k == 6 && !leaf:
		s := map[string]any{"type": "array", "items": randomSchema(rng, depth-1)}
		if rng.IntN(2) == 0 {
			lo := rng.IntN(3)
			s["minItems"], s["maxItems"] = lo, lo+rng.IntN(3)
		} else {
			s["maxItems"] = 3
		}
		if rng.IntN(3) == 0 {
			s["prefixItems"] = []any{randomSchema(rng, depth-1)}
		}
		return s
	case k == 7 && !leaf:
		return map[string]any{"anyOf": []any{randomSchema(rng, depth-1), randomSchema(rng, depth-1)}}
	case k == 8 && !leaf:
		return map[string]any{"type": []string{"integer", "null"}, "maximum": 10}
	}
	return map[string]any{"type": "boolean"}
}

// TestRandomSchemas: for many random schemas, random sentences of the
// compiled grammar validate under an independent validator.
func TestRandomSchemas(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 19))
	for i := range 300 {
		doc := randomSchema(rng, 3)
		if rng.IntN(4) == 0 { // the same schema reached through $defs
			doc = map[string]any{"$defs": map[string]any{"d": doc}, "$ref": "#/$defs/d"}
		}
		src, _ := json.Marshal(doc)
		g, err := FromJSONSchema(src)
		if err != nil {
			t.Fatalf("schema %d %s: %v", i, src, err)
		}
		sch := fixtures.JSONSchema(t, string(src))
		for range 10 {
			s, ok := sentence(g, rng, 2000)
			if !ok {
				continue
			}
			if err := sch.Validate(string(s)); err != nil {
				t.Fatalf("schema %s: %s does not validate: %v", src, s, err)
			}
		}
	}
}

func randomRegex(rng *rand.Rand, depth int) string {
	atoms := []string{`a`, `b`, `\d`, `[x-z]`, `[^ab]`, `.`, `é`, `\w`, `\.`, `[α-γ]`}
	if depth <= 0 {
		return atoms[rng.IntN(len(atoms))]
	}
	sub := func() string { return randomRegex(rng, depth-1) }
	switch rng.IntN(7) {
	case 0:
		return sub() + sub()
	case 1:
		return "(" + sub() + "|" + sub() + ")"
	case 2:
		return "(?:" + sub() + ")*"
	case 3:
		return "(" + sub() + ")+"
	case 4:
		return "(" + sub() + ")?"
	case 5:
		lo := rng.IntN(3)
		return fmt.Sprintf("(%s){%d,%d}", sub(), lo, lo+rng.IntN(3))
	}
	return sub() + atoms[rng.IntN(len(atoms))]
}

// TestRandomRegexes: random sentences of random regexes' grammars match
// the same regexes under Go's regexp package.
func TestRandomRegexes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 19))
	for range 200 {
		re := randomRegex(rng, 3)
		g, err := FromRegex(re)
		if err != nil {
			t.Fatalf("%s: %v", re, err)
		}
		want := regexp.MustCompile(`^(?:` + re + `)$`)
		for range 10 {
			s, ok := sentence(g, rng, 500)
			if ok && !want.Match(s) {
				t.Fatalf("%s: sentence %q does not match", re, s)
			}
		}
	}
}
