package grammar

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrSyntax is wrapped by errors about malformed grammar, schema or regex
// text; ErrUnsupported by errors about a construct or keyword that is well
// formed but not supported. Both are refused up front: nothing is ignored.
var (
	ErrSyntax      = errors.New("syntax error")
	ErrUnsupported = errors.New("unsupported")
)

// The parsed form of GBNF: a rule is a choice of sequences of items.
type (
	choice []sequence
	item   struct {
		kind     itemKind
		text     string   // itemLiteral: the bytes to match
		ranges   []rng    // itemClass: code point ranges, already negated if ^
		ref      string   // itemRef: rule name
		group    choice   // itemGroup
		min, max int      // repetition of the item; max < 0 = unbounded
		pos      position // for errors
	}
	sequence []item
	rng      struct{ lo, hi rune }
	itemKind uint8
	position struct{ line, col int }
)

const (
	itemLiteral itemKind = iota
	itemClass
	itemRef
	itemGroup
)

// maxRepeat bounds a {m,n} count (each counted copy is compiled out), so a
// grammar cannot make the compiler allocate without limit.
const maxRepeat = 10000

// parser reads llama.cpp's GBNF: `name ::= alternatives` rules, one per
// line unless inside parentheses or after `|`; "literals", [classes] with
// ranges and ^ negation, `.`, (groups), the * + ? {m} {m,} {m,n}
// repetitions, `#` comments and the \x \u \U \t \r \n \\ \" \[ \] escapes.
type parser struct {
	src  string
	i    int
	line int
	bol  int // offset of the current line's start
}

func (p *parser) pos() position { return position{p.line + 1, p.i - p.bol + 1} }

func (p *parser) errf(format string, a ...any) error {
	return fmt.Errorf("%w: line %d col %d: %s", ErrSyntax, p.line+1, p.i-p.bol+1, fmt.Sprintf(format, a...))
}

// space skips blanks and comments, and newlines when nl is set.
func (p *parser) space(nl bool) {
	for p.i < len(p.src) {
		c := p.src[p.i]
		switch {
		case c == ' ' || c == '\t' || c == '\r':
			p.i++
		case c == '\n' && nl:
			p.i++
			p.line++
			p.bol = p.i
		case c == '#':
			for p.i < len(p.src) && p.src[p.i] != '\n' {
				p.i++
			}
		default:
			return
		}
	}
}

func isWordChar(c byte) bool {
	return c == '-' || c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func (p *parser) name() string {
	start := p.i
	for p.i < len(p.src) && isWordChar(p.src[p.i]) {
		p.i++
	}
	return p.src[start:p.i]
}

// parseGBNF returns the rules of src in the order they are defined.
func parseGBNF(src string) (names []string, rules map[string]choice, err error) {
	p := &parser{src: src}
	rules = map[string]choice{}
	for {
		p.space(true)
		if p.i >= len(p.src) {
			break
		}
		name := p.name()
		if name == "" {
			return nil, nil, p.errf("expected a rule name, found %q", p.peekText())
		}
		p.space(false)
		if !strings.HasPrefix(p.src[p.i:], "::=") {
			return nil, nil, p.errf("expected ::= after rule name %q", name)
		}
		p.i += 3
		p.space(true)
		alts, err := p.alternatives(false)
		if err != nil {
			return nil, nil, err
		}
		if _, dup := rules[name]; dup {
			return nil, nil, p.errf("rule %q is defined twice", name)
		}
		rules[name] = alts
		names = append(names, name)
		if p.i < len(p.src) && p.src[p.i] != '\n' {
			return nil, nil, p.errf("unexpected %q", p.peekText())
		}
	}
	return names, rules, nil
}

func (p *parser) peekText() string {
	end := min(p.i+10, len(p.src))
	return p.src[p.i:end]
}

func (p *parser) alternatives(nested bool) (choice, error) {
	var alts choice
	for {
		s, err := p.sequence(nested)
		if err != nil {
			return nil, err
		}
		alts = append(alts, s)
		if p.i < len(p.src) && p.src[p.i] == '|' {
			p.i++
			p.space(true)
			continue
		}
		return alts, nil
	}
}

func (p *parser) sequence(nested bool) (sequence, error) {
	var s sequence
	for p.i < len(p.src) {
		c := p.src[p.i]
		at := p.pos()
		var it item
		switch {
		case c == '"':
			p.i++
			var b strings.Builder
			for {
				if p.i >= len(p.src) || p.src[p.i] == '\n' {
					return nil, p.errf("unterminated literal")
				}
				if p.src[p.i] == '"' {
					p.i++
					break
				}
				r, err := p.char()
				if err != nil {
					return nil, err
				}
				b.WriteRune(r)
			}
			it = item{kind: itemLiteral, text: b.String()}
		case c == '[':
			p.i++
			neg := p.i < len(p.src) && p.src[p.i] == '^'
			if neg {
				p.i++
			}
			var rs []rng
			for {
				if p.i >= len(p.src) || p.src[p.i] == '\n' {
					return nil, p.errf("unterminated character class")
				}
				if p.src[p.i] == ']' {
					p.i++
					break
				}
				lo, err := p.char()
				if err != nil {
					return nil, err
				}
				hi := lo
				if p.i+1 < len(p.src) && p.src[p.i] == '-' && p.src[p.i+1] != ']' {
					p.i++
					if hi, err = p.char(); err != nil {
						return nil, err
					}
					if hi < lo {
						return nil, p.errf("range %q-%q is reversed", lo, hi)
					}
				}
				rs = append(rs, rng{lo, hi})
			}
			rs = normalize(rs)
			if neg {
				rs = negate(rs)
			}
			it = item{kind: itemClass, ranges: rs}
		case c == '.':
			p.i++
			it = item{kind: itemClass, ranges: negate(nil)}
		case c == '(':
			p.i++
			p.space(true)
			g, err := p.alternatives(true)
			if err != nil {
				return nil, err
			}
			if p.i >= len(p.src) || p.src[p.i] != ')' {
				return nil, p.errf("expected )")
			}
			p.i++
			it = item{kind: itemGroup, group: g}
		case c == '<':
			return nil, fmt.Errorf("%w: line %d col %d: token references (<...>) are not supported", ErrUnsupported, at.line, at.col)
		case isWordChar(c):
			save := p.i
			n := p.name()
			// A name followed by ::= starts the next rule.
			q := p.i
			for q < len(p.src) && (p.src[q] == ' ' || p.src[q] == '\t') {
				q++
			}
			if strings.HasPrefix(p.src[q:], "::=") {
				p.i = save
				return s, nil
			}
			it = item{kind: itemRef, ref: n}
		default:
			return s, nil
		}
		it.pos = at
		it.min, it.max = 1, 1
		p.space(nested)
		if err := p.repetition(&it, nested); err != nil {
			return nil, err
		}
		s = append(s, it)
	}
	return s, nil
}

// repetition reads the operators after an item. Stacked operators (a**)
// are refused, as llama.cpp does.
func (p *parser) repetition(it *item, nested bool) error {
	if p.i >= len(p.src) {
		return nil
	}
	switch p.src[p.i] {
	case '*':
		it.min, it.max = 0, -1
	case '+':
		it.min, it.max = 1, -1
	case '?':
		it.min, it.max = 0, 1
	case '{':
		p.i++
		p.space(false)
		m, ok := p.number()
		if !ok {
			return p.errf("expected a count after {")
		}
		n := m
		p.space(false)
		if p.i < len(p.src) && p.src[p.i] == ',' {
			p.i++
			p.space(false)
			if p.i < len(p.src) && p.src[p.i] == '}' {
				n = -1
			} else if n, ok = p.number(); !ok {
				return p.errf("expected a count after ,")
			}
			p.space(false)
		}
		if p.i >= len(p.src) || p.src[p.i] != '}' {
			return p.errf("expected }")
		}
		if m > maxRepeat || n > maxRepeat {
			return p.errf("repetition count above %d", maxRepeat)
		}
		if n >= 0 && n < m {
			return p.errf("repetition {%d,%d} has max below min", m, n)
		}
		it.min, it.max = m, n
	default:
		return nil
	}
	p.i++
	p.space(nested)
	if p.i < len(p.src) && strings.IndexByte("*+?{", p.src[p.i]) >= 0 {
		return p.errf("repetition of a repetition; use a group")
	}
	return nil
}

func (p *parser) number() (int, bool) {
	start := p.i
	for p.i < len(p.src) && p.src[p.i] >= '0' && p.src[p.i] <= '9' {
		p.i++
	}
	if p.i == start || p.i-start > 9 {
		return 0, false
	}
	n, err := strconv.Atoi(p.src[start:p.i])
	return n, err == nil
}

// char reads one character of a literal or class, decoding escapes.
func (p *parser) char() (rune, error) {
	c := p.src[p.i]
	if c != '\\' {
		r, size := utf8.DecodeRuneInString(p.src[p.i:])
		if r == utf8.RuneError && size <= 1 {
			return 0, p.errf("invalid UTF-8")
		}
		p.i += size
		return r, nil
	}
	if p.i+1 >= len(p.src) {
		return 0, p.errf("escape at end of input")
	}
	e := p.src[p.i+1]
	p.i += 2
	hex := 0
	switch e {
	case 'x':
		hex = 2
	case 'u':
		hex = 4
	case 'U':
		hex = 8
	case 't':
		return '\t', nil
	case 'r':
		return '\r', nil
	case 'n':
		return '\n', nil
	case '\\', '"', '[', ']', '-', '^', '/':
		return rune(e), nil
	default:
		return 0, p.errf("unknown escape \\%c", e)
	}
	if p.i+hex > len(p.src) {
		return 0, p.errf("short \\%c escape", e)
	}
	v, err := strconv.ParseUint(p.src[p.i:p.i+hex], 16, 32)
	if err != nil || v > utf8.MaxRune || v >= 0xD800 && v <= 0xDFFF {
		return 0, p.errf("bad \\%c escape %q", e, p.src[p.i:p.i+hex])
	}
	p.i += hex
	return rune(v), nil
}
