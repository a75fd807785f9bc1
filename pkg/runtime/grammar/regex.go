package grammar

import (
	"errors"
	"fmt"
	"regexp/syntax"
	"slices"
	"strings"
	"unicode/utf8"
)

// The regex subset, parsed with Go's regexp/syntax (Perl syntax, RE2
// semantics): literals and escapes, classes ([a-z], [^...], \d \w \s and
// their negations, Unicode classes such as \p{Greek}), `.`, groups
// (capturing or not, named or not), alternation, * + ? {m} {m,} {m,n}
// (lazy forms too: they match the same strings), and ^ / $ at the very
// start or end. Refused, by name: lookaround and backreferences (RE2 does
// not parse them), \b and \B, anchors anywhere else, case-insensitive
// matching ((?i)).

// RegexGBNF returns GBNF whose root matches exactly the strings re matches
// as a whole (anchors at its ends are allowed and change nothing).
func RegexGBNF(re string) (string, error) {
	r, err := parseRegex(re)
	if err != nil {
		return "", err
	}
	r, _, _ = stripAnchors(r)
	rc := &regexConv{}
	body, err := rc.expr(r)
	if err != nil {
		return "", err
	}
	return "root ::= " + body + "\n", nil
}

// FromRegex compiles re (see RegexGBNF) into a Grammar.
func FromRegex(re string) (*Grammar, error) {
	src, err := RegexGBNF(re)
	if err != nil {
		return nil, err
	}
	return Parse(src)
}

func parseRegex(re string) (*syntax.Regexp, error) {
	r, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		var se *syntax.Error
		if errors.As(err, &se) {
			lookbehind := se.Code == syntax.ErrInvalidNamedCapture &&
				(strings.HasPrefix(se.Expr, "(?<=") || strings.HasPrefix(se.Expr, "(?<!"))
			switch {
			case se.Code == syntax.ErrInvalidPerlOp, se.Code == syntax.ErrInvalidEscape, lookbehind:
				return nil, fmt.Errorf("%w: regex construct %q (lookaround and backreferences are not supported)", ErrUnsupported, se.Expr)
			}
		}
		return nil, fmt.Errorf("%w: regex: %v", ErrSyntax, err)
	}
	return r, nil
}

// stripAnchors removes ^ and $ at the ends of r and reports which it found.
func stripAnchors(r *syntax.Regexp) (*syntax.Regexp, bool, bool) {
	isStart := func(x *syntax.Regexp) bool { return x.Op == syntax.OpBeginText || x.Op == syntax.OpBeginLine }
	isEnd := func(x *syntax.Regexp) bool { return x.Op == syntax.OpEndText || x.Op == syntax.OpEndLine }
	switch {
	case isStart(r) || isEnd(r):
		return &syntax.Regexp{Op: syntax.OpEmptyMatch}, isStart(r), isEnd(r)
	case r.Op != syntax.OpConcat || len(r.Sub) == 0:
		return r, false, false
	}
	subs := r.Sub
	start, end := false, false
	if isStart(subs[0]) {
		subs, start = subs[1:], true
	}
	if len(subs) > 0 && isEnd(subs[len(subs)-1]) {
		subs, end = subs[:len(subs)-1], true
	}
	out := *r
	out.Sub = subs
	if len(subs) == 0 {
		return &syntax.Regexp{Op: syntax.OpEmptyMatch}, start, end
	}
	return &out, start, end
}

// regexConv writes a regex as a GBNF expression. With jsonString set the
// expression matches the regex's strings as they are written inside a
// JSON string: '"' and '\' escaped, \n \t \r written as escapes, other
// control characters (which JSON cannot hold unescaped) left out.
type regexConv struct {
	jsonString bool
}

func (rc *regexConv) expr(r *syntax.Regexp) (string, error) {
	switch r.Op {
	case syntax.OpNoMatch:
		return "", fmt.Errorf("%w: a regex that matches nothing", ErrUnsupported)
	case syntax.OpEmptyMatch:
		return `""`, nil
	case syntax.OpLiteral:
		if r.Flags&syntax.FoldCase != 0 {
			return "", fmt.Errorf("%w: regex case-insensitive matching ((?i))", ErrUnsupported)
		}
		parts := make([]string, 0, len(r.Rune))
		for _, c := range r.Rune {
			p, ok := rc.literal(c)
			if !ok {
				return "", fmt.Errorf("%w: regex literal control character %U inside a JSON string", ErrUnsupported, c)
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, " "), nil
	case syntax.OpCharClass:
		var rs []rng
		for i := 0; i+1 < len(r.Rune); i += 2 {
			rs = append(rs, rng{r.Rune[i], r.Rune[i+1]})
		}
		return rc.class(normalize(rs))
	case syntax.OpAnyCharNotNL:
		// ECMAScript's . (JSON Schema patterns) excludes all line
		// terminators; so does this, to stay inside both dialects.
		return rc.class(negate(normalize([]rng{{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}})))
	case syntax.OpAnyChar:
		return rc.class(negate(nil))
	case syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText:
		return "", fmt.Errorf("%w: regex anchor (^ or $) other than at the start or end", ErrUnsupported)
	case syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return "", fmt.Errorf("%w: regex word boundary (\\b, \\B)", ErrUnsupported)
	case syntax.OpCapture:
		s, err := rc.expr(r.Sub[0])
		return "(" + s + ")", err
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		s, err := rc.expr(r.Sub[0])
		op := map[syntax.Op]string{syntax.OpStar: "*", syntax.OpPlus: "+", syntax.OpQuest: "?"}[r.Op]
		return "(" + s + ")" + op, err
	case syntax.OpRepeat:
		s, err := rc.expr(r.Sub[0])
		if r.Max < 0 {
			return fmt.Sprintf("(%s){%d,}", s, r.Min), err
		}
		return fmt.Sprintf("(%s){%d,%d}", s, r.Min, r.Max), err
	case syntax.OpConcat, syntax.OpAlternate:
		parts := make([]string, len(r.Sub))
		for i, sub := range r.Sub {
			s, err := rc.expr(sub)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		if r.Op == syntax.OpConcat {
			return strings.Join(parts, " "), nil
		}
		return "(" + strings.Join(parts, " | ") + ")", nil
	}
	return "", fmt.Errorf("%w: regex construct %v", ErrUnsupported, r.Op)
}

// jsonEscapes are the characters a JSON string must escape that a pattern
// may still produce, with the escapes written for them.
var jsonEscapes = map[rune]string{'"': `\"`, '\\': `\\`, '\n': `\n`, '\t': `\t`, '\r': `\r`}

func (rc *regexConv) literal(c rune) (string, bool) {
	if rc.jsonString {
		if e, ok := jsonEscapes[c]; ok {
			return gbnfLiteral(e), true
		}
		if c < 0x20 {
			return "", false
		}
	}
	return gbnfLiteral(string(c)), true
}

func (rc *regexConv) class(rs []rng) (string, error) {
	var extra []string
	if rc.jsonString {
		for c, e := range jsonEscapes {
			for _, r := range rs {
				if r.lo <= c && c <= r.hi {
					extra = append(extra, gbnfLiteral(e))
				}
			}
		}
		rs = subtract(rs, []rng{{0, 0x1f}, {'"', '"'}, {'\\', '\\'}})
	}
	rs = withoutSurrogates(rs)
	var alts []string
	if len(rs) > 0 {
		alts = append(alts, gbnfClass(rs))
	}
	slices.Sort(extra)
	alts = append(alts, extra...)
	switch len(alts) {
	case 0:
		return "", fmt.Errorf("%w: a regex class with no character a JSON string can hold", ErrUnsupported)
	case 1:
		return alts[0], nil
	}
	return "(" + strings.Join(alts, " | ") + ")", nil
}

// subtract returns rs without the code points of cut (both normalized).
func subtract(rs, cut []rng) []rng {
	return intersect(rs, negate(normalize(cut)))
}

func intersect(a, b []rng) []rng {
	var out []rng
	for _, x := range a {
		for _, y := range b {
			lo, hi := max(x.lo, y.lo), min(x.hi, y.hi)
			if lo <= hi {
				out = append(out, rng{lo, hi})
			}
		}
	}
	return normalize(out)
}

// gbnfLiteral quotes s as a GBNF literal.
func gbnfLiteral(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c >= 0x20 && c < 0x7f:
			b.WriteRune(c)
		default:
			writeEscape(&b, c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// gbnfClass writes ranges as a GBNF character class.
func gbnfClass(rs []rng) string {
	var b strings.Builder
	b.WriteByte('[')
	for _, r := range rs {
		classChar(&b, r.lo)
		if r.hi != r.lo {
			b.WriteByte('-')
			classChar(&b, r.hi)
		}
	}
	b.WriteByte(']')
	return b.String()
}

func classChar(b *strings.Builder, c rune) {
	if c < utf8.RuneSelf && (c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
		b.WriteRune(c)
		return
	}
	writeEscape(b, c)
}

func writeEscape(b *strings.Builder, c rune) {
	switch {
	case c <= 0xff:
		fmt.Fprintf(b, `\x%02X`, c)
	case c <= 0xffff:
		fmt.Fprintf(b, `\u%04X`, c)
	default:
		fmt.Fprintf(b, `\U%08X`, c)
	}
}
