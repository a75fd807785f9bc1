package grammar

import "fmt"

// Grammar is a compiled context-free grammar over bytes, immutable and safe
// to share between matchers. Every rule is a list of alternatives; every
// alternative a run of elements in one flat array, ended by an end marker,
// so a position in the grammar is one int32 (as in llama.cpp's grammar,
// where a stack entry is a pointer into a rule's elements).
type Grammar struct {
	elems []elem
	sets  []byteSet
	rules [][]int32 // rule → start position of each alternative
	names []string  // rule names, for errors and String
	root  int32
	src   string // the GBNF it was compiled from
}

type elemKind uint8

const (
	elemEnd   elemKind = iota // end of an alternative: return to the caller
	elemBytes                 // one byte from sets[arg]
	elemRef                   // rule arg
)

type elem struct {
	kind elemKind
	arg  int32
}

// byteSet is a set of byte values.
type byteSet [4]uint64

func (s *byteSet) has(b byte) bool { return s[b>>6]&(1<<(b&63)) != 0 }
func (s *byteSet) add(lo, hi byte) {
	for c := int(lo); c <= int(hi); c++ {
		s[c>>6] |= 1 << (c & 63)
	}
}

// maxElems bounds the size of a compiled grammar.
const maxElems = 1 << 20

// GBNF returns the source text the grammar was compiled from.
func (g *Grammar) GBNF() string { return g.src }

// Parse compiles GBNF text (llama.cpp's grammar format) whose start rule is
// "root". Syntax errors wrap ErrSyntax; constructs this package does not
// support (token references) wrap ErrUnsupported; undefined rules and left
// recursion are errors too.
func Parse(src string) (*Grammar, error) {
	names, rules, err := parseGBNF(src)
	if err != nil {
		return nil, err
	}
	if _, ok := rules["root"]; !ok {
		return nil, fmt.Errorf("%w: the grammar has no root rule", ErrSyntax)
	}
	c := &compiler{index: map[string]int32{}, setIndex: map[byteSet]int32{}}
	for _, n := range names {
		c.newRule(n)
	}
	for _, n := range names {
		alts, err := c.choice(rules[n], n)
		if err != nil {
			return nil, err
		}
		c.alts[c.index[n]] = alts
	}
	g, err := c.finish(c.index["root"])
	if err != nil {
		return nil, err
	}
	g.src = src
	// A grammar whose start alone exceeds the matcher's limits (nested
	// nullable repetitions) is refused now rather than at the first token.
	if err := NewMatcher(g).Err(); err != nil {
		return nil, err
	}
	return g, nil
}

// MustParse is Parse for grammars known to be valid; it panics otherwise.
func MustParse(src string) *Grammar {
	g, err := Parse(src)
	if err != nil {
		panic(err)
	}
	return g
}

type compiler struct {
	names    []string
	alts     [][][]elem
	index    map[string]int32
	sets     []byteSet
	setIndex map[byteSet]int32
	size     int
}

func (c *compiler) newRule(name string) int32 {
	id := int32(len(c.names))
	if _, taken := c.index[name]; taken {
		name = fmt.Sprintf("%s-%d", name, id)
	}
	c.index[name] = id
	c.names = append(c.names, name)
	c.alts = append(c.alts, nil)
	return id
}

func (c *compiler) set(s byteSet) elem {
	id, ok := c.setIndex[s]
	if !ok {
		id = int32(len(c.sets))
		c.sets = append(c.sets, s)
		c.setIndex[s] = id
	}
	return elem{elemBytes, id}
}

func (c *compiler) grow(n int) error {
	c.size += n
	if c.size > maxElems {
		return fmt.Errorf("%w: the grammar is too large (more than %d elements once repetitions are expanded)", ErrUnsupported, maxElems)
	}
	return nil
}

func (c *compiler) choice(ch choice, owner string) ([][]elem, error) {
	out := make([][]elem, 0, len(ch))
	for _, s := range ch {
		var alt []elem
		for _, it := range s {
			var err error
			if alt, err = c.item(alt, it, owner); err != nil {
				return nil, err
			}
		}
		if err := c.grow(len(alt) + 1); err != nil {
			return nil, err
		}
		out = append(out, alt)
	}
	return out, nil
}

// item appends it, with its repetition, to alt. Counted copies are written
// out; an unbounded tail becomes a right-recursive rule (x* ::= x x* | ε)
// and an optional tail of k copies a chain of k nested optional rules.
func (c *compiler) item(alt []elem, it item, owner string) ([]elem, error) {
	one, err := c.unit(it, owner)
	if err != nil {
		return nil, err
	}
	for range it.min {
		alt = append(alt, one...)
		if err := c.grow(len(one)); err != nil {
			return nil, err
		}
	}
	switch {
	case it.max < 0:
		r := c.newRule(owner + "-star")
		self := elem{elemRef, r}
		c.alts[r] = [][]elem{append(append([]elem(nil), one...), self), nil}
		alt = append(alt, self)
		err = c.grow(len(one) + 3)
	case it.max > it.min:
		var next []elem // the empty tail
		for range it.max - it.min {
			r := c.newRule(owner + "-opt")
			c.alts[r] = [][]elem{append(append([]elem(nil), one...), next...), nil}
			next = []elem{{elemRef, r}}
			if err = c.grow(len(one) + 3); err != nil {
				return nil, err
			}
		}
		alt = append(alt, next...)
	}
	return alt, err
}

// unit is the elements matching one occurrence of it.
func (c *compiler) unit(it item, owner string) ([]elem, error) {
	switch it.kind {
	case itemLiteral:
		out := make([]elem, 0, len(it.text))
		for i := 0; i < len(it.text); i++ {
			var s byteSet
			s.add(it.text[i], it.text[i])
			out = append(out, c.set(s))
		}
		return out, nil
	case itemClass:
		return c.class(it.ranges, owner)
	case itemRef:
		id, ok := c.index[it.ref]
		if !ok {
			return nil, fmt.Errorf("%w: line %d col %d: rule %q is not defined", ErrSyntax, it.pos.line, it.pos.col, it.ref)
		}
		return []elem{{elemRef, id}}, nil
	case itemGroup:
		if len(it.group) == 1 && it.min == 1 && it.max == 1 {
			var alt []elem
			for _, sub := range it.group[0] {
				var err error
				if alt, err = c.item(alt, sub, owner); err != nil {
					return nil, err
				}
			}
			return alt, nil
		}
		r := c.newRule(owner + "-group")
		alts, err := c.choice(it.group, owner)
		if err != nil {
			return nil, err
		}
		c.alts[r] = alts
		return []elem{{elemRef, r}}, nil
	}
	panic("grammar: unknown item kind")
}

// class compiles a code point class: one byte-set element when it is all
// ASCII, else a rule whose alternatives are its UTF-8 byte sequences.
func (c *compiler) class(rs []rng, owner string) ([]elem, error) {
	rs = withoutSurrogates(rs)
	if len(rs) == 0 {
		return nil, fmt.Errorf("%w: an empty character class matches nothing", ErrSyntax)
	}
	var seqs [][]byteRange
	for _, r := range rs {
		seqs = utf8Sequences(seqs, r.lo, r.hi)
	}
	var single byteSet
	var multi [][]elem
	hasSingle := false
	for _, s := range seqs {
		if len(s) == 1 {
			single.add(s[0].lo, s[0].hi)
			hasSingle = true
			continue
		}
		alt := make([]elem, len(s))
		for i, br := range s {
			var bs byteSet
			bs.add(br.lo, br.hi)
			alt[i] = c.set(bs)
		}
		multi = append(multi, alt)
	}
	if len(multi) == 0 {
		return []elem{c.set(single)}, nil
	}
	r := c.newRule(owner + "-char")
	if hasSingle {
		multi = append([][]elem{{c.set(single)}}, multi...)
	}
	c.alts[r] = multi
	if err := c.grow(len(multi) * 5); err != nil {
		return nil, err
	}
	return []elem{{elemRef, r}}, nil
}

// finish lays the rules out in one array and refuses left recursion, which
// a top-down matcher cannot run (llama.cpp refuses it too).
func (c *compiler) finish(root int32) (*Grammar, error) {
	g := &Grammar{sets: c.sets, names: c.names, root: root, rules: make([][]int32, len(c.alts))}
	for r, alts := range c.alts {
		for _, alt := range alts {
			g.rules[r] = append(g.rules[r], int32(len(g.elems)))
			g.elems = append(g.elems, alt...)
			g.elems = append(g.elems, elem{kind: elemEnd})
		}
	}
	if err := c.checkLeftRecursion(); err != nil {
		return nil, err
	}
	return g, nil
}

func (c *compiler) checkLeftRecursion() error {
	n := len(c.alts)
	nullable := make([]bool, n)
	for changed := true; changed; {
		changed = false
		for r, alts := range c.alts {
			if nullable[r] {
				continue
			}
			for _, alt := range alts {
				all := true
				for _, e := range alt {
					if e.kind != elemRef || !nullable[e.arg] {
						all = false
						break
					}
				}
				if all {
					nullable[r], changed = true, true
					break
				}
			}
		}
	}
	// first[r]: the rules r can call before reading a byte, and whether
	// the call is the last element of its alternative (a tail call, which
	// pushes no return position).
	type call struct {
		to   int32
		tail bool
	}
	first := make([][]call, n)
	for r, alts := range c.alts {
		for _, alt := range alts {
			for i, e := range alt {
				if e.kind != elemRef {
					break
				}
				first[r] = append(first[r], call{e.arg, i == len(alt)-1})
				if !nullable[e.arg] {
					break
				}
			}
		}
	}
	// A cycle of such calls loops without reading a byte. Through tail
	// calls only (x* with a nullable x), the matcher's stacks stay the
	// same and it stops at the repeat; a call that pushes a return
	// position makes the stacks grow without end: left recursion. So
	// refuse a non-tail call inside a strongly connected component
	// (Tarjan's algorithm).
	index := make([]int, n)
	low := make([]int, n)
	comp := make([]int, n)
	onStack := make([]bool, n)
	for i := range index {
		index[i] = -1
	}
	var stack []int32
	next, comps := 0, 0
	var connect func(v int32)
	connect = func(v int32) {
		index[v], low[v] = next, next
		next++
		stack = append(stack, v)
		onStack[v] = true
		for _, w := range first[v] {
			switch {
			case index[w.to] < 0:
				connect(w.to)
				low[v] = min(low[v], low[w.to])
			case onStack[w.to]:
				low[v] = min(low[v], index[w.to])
			}
		}
		if low[v] == index[v] {
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				comp[w] = comps
				if w == v {
					break
				}
			}
			comps++
		}
	}
	for r := range n {
		if index[r] < 0 {
			connect(int32(r))
		}
	}
	for r := range n {
		for _, w := range first[r] {
			if !w.tail && comp[r] == comp[w.to] {
				return fmt.Errorf("%w: left recursion: rule %q calls %q before reading anything, and can be reached back from it", ErrUnsupported, c.names[r], c.names[w.to])
			}
		}
	}
	return nil
}
