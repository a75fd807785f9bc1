package grammar

import (
	"encoding/binary"
	"fmt"
	"slices"
	"unsafe"
)

// Matcher recognises prefixes of a grammar's language one byte at a time.
//
// It is a pushdown recogniser in the manner of llama.cpp's grammar: the
// parse is a set of stacks of grammar positions, each stack one way the
// input so far can continue, every top a byte element (or the empty stack,
// meaning the input is a complete sentence). Two things make it cheap
// enough to walk a 128k-token vocabulary trie at every step:
//
//   - stacks are hash-consed: a stack is an int32 naming (top position,
//     rest of stack), so equal stacks are equal numbers and a set of stacks
//     is a short sorted list of numbers;
//   - each distinct set of stacks is interned as a State, and the
//     transitions between States are cached per byte: a lazily built DFA.
//     A JSON string body, say, is one State whose transitions lead back to
//     itself, so after the first token walk most trie nodes cost one array
//     load.
//
// An Earley recogniser would accept left recursion too, but its item sets
// grow with the input and do not repeat, which defeats the cache; left
// recursion is refused instead (llama.cpp refuses it as well), and JSON
// Schema and regex translations never produce it.
//
// A Matcher is not safe for concurrent use; the Grammar it reads is.
type Matcher struct {
	g     *Grammar
	nodes []stackNode
	index map[stackNode]int32

	states     []stateInfo
	stateIndex map[string]State
	cur        State
	epoch      uint64 // counts compactions, which renumber States

	// work counts closure steps, so callers can bound what one input
	// costs; stepStart is its value when the current transition began.
	// err is set once a state exceeds maxStacks or a transition
	// maxStepWork.
	work, stepStart uint64
	err             error
	todo            []int32 // closure's list

	// closure scratch
	seen map[int32]struct{}
	out  []int32
	key  []byte
}

// State names a set of parse stacks of a Matcher. Dead (-1) is the state of
// an input no sentence starts with.
type State int32

// Dead is the State of input that is not a prefix of the language.
const Dead State = -1

type stackNode struct {
	pos    int32 // grammar position of the top
	parent int32 // the rest of the stack; 0 = empty
}

type stateInfo struct {
	stacks []int32 // sorted; 0 is the empty stack (complete)
	trans  *[256]State
}

// unknown marks a transition not computed yet.
const unknown State = -2

// Limits past which a Matcher forgets its caches (keeping its current
// state), so memory stays bounded on any input.
const (
	maxNodes  = 1 << 20
	maxStates = 1 << 14
)

// maxStacks bounds the parse stacks of one state. Grammars from JSON
// Schemas and regexes stay in the tens; only a highly ambiguous grammar
// reaches it, and it would make every step of its generation slow.
const maxStacks = 512

// ErrAmbiguous is the error of a matcher whose grammar is so ambiguous that
// a state holds more than maxStacks parse stacks.
var ErrAmbiguous = fmt.Errorf("%w: the grammar is too ambiguous (more than %d parses at once)", ErrUnsupported, maxStacks)

// maxStepWork bounds the expansion steps of one transition. Grammars from
// schemas take tens; nesting nullable repetitions ((("a"{0,9}){0,9}){0,9})
// multiplies them.
const maxStepWork = 1 << 18

// ErrTooComplex is the error of a matcher one of whose transitions took
// more than maxStepWork expansion steps.
var ErrTooComplex = fmt.Errorf("%w: the grammar is too complex to follow (more than %d expansion steps for one byte)", ErrUnsupported, maxStepWork)

// NewMatcher returns a matcher at the start of g's language.
func NewMatcher(g *Grammar) *Matcher {
	m := &Matcher{g: g, seen: map[int32]struct{}{}}
	m.reset()
	m.Reset()
	return m
}

// Reset moves the matcher back to the start of the language, keeping its
// caches: a matcher reused for the next generation under the same grammar
// starts warm.
func (m *Matcher) Reset() {
	m.beginStep()
	for _, a := range m.g.rules[m.g.root] {
		m.closure(m.node(a, 0))
	}
	if m.err != nil {
		m.out = m.out[:0]
	}
	m.cur = m.intern(m.out)
}

func (m *Matcher) reset() {
	m.nodes = append(m.nodes[:0], stackNode{-1, 0}) // node 0: the empty stack
	m.index = map[stackNode]int32{}
	m.states = m.states[:0]
	m.stateIndex = map[string]State{}
}

func (m *Matcher) node(pos, parent int32) int32 {
	k := stackNode{pos, parent}
	if id, ok := m.index[k]; ok {
		return id
	}
	id := int32(len(m.nodes))
	m.nodes = append(m.nodes, k)
	m.index[k] = id
	return id
}

// closure expands stack s until every stack's top is a byte element or the
// stack is empty, appending the results to m.out. A call whose next element
// is the end of its alternative pushes no return position (a tail call), so
// right recursion (x* and friends) keeps the stacks short. It works from an
// explicit list, not by recursion: nested nullable rules can make the
// expansion deep. Past maxStepWork steps since the last beginStep it stops
// and sets m.err.
func (m *Matcher) closure(s int32) {
	todo := append(m.todo[:0], s)
	for len(todo) > 0 && m.err == nil {
		s := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if _, ok := m.seen[s]; ok {
			continue
		}
		m.seen[s] = struct{}{}
		m.work++
		if m.work-m.stepStart > maxStepWork {
			m.err = ErrTooComplex
			break
		}
		if s == 0 {
			m.out = append(m.out, 0)
			continue
		}
		n := m.nodes[s]
		e := m.g.elems[n.pos]
		switch e.kind {
		case elemEnd:
			todo = append(todo, n.parent)
		case elemBytes:
			m.out = append(m.out, s)
		case elemRef:
			ret := n.parent
			if m.g.elems[n.pos+1].kind != elemEnd {
				ret = m.node(n.pos+1, n.parent)
			}
			for _, a := range m.g.rules[e.arg] {
				todo = append(todo, m.node(a, ret))
			}
		}
	}
	m.todo = todo[:0]
}

// beginStep starts the work count of one transition (or of the start).
func (m *Matcher) beginStep() {
	m.out = m.out[:0]
	clear(m.seen)
	m.stepStart = m.work
}

// intern returns the State of a set of stacks (m.out's contents).
func (m *Matcher) intern(stacks []int32) State {
	if len(stacks) == 0 {
		return Dead
	}
	slices.Sort(stacks)
	stacks = slices.Compact(stacks)
	m.key = m.key[:0]
	for _, s := range stacks {
		m.key = binary.LittleEndian.AppendUint32(m.key, uint32(s))
	}
	if st, ok := m.stateIndex[unsafe.String(unsafe.SliceData(m.key), len(m.key))]; ok {
		return st
	}
	st := State(len(m.states))
	m.states = append(m.states, stateInfo{stacks: slices.Clone(stacks)})
	m.stateIndex[string(m.key)] = st
	return st
}

// State is where the matcher is.
func (m *Matcher) State() State { return m.cur }

// Complete reports whether the input accepted so far is a sentence.
func (m *Matcher) Complete() bool { return m.Accepting(m.cur) }

// Accepting reports whether st holds a complete sentence.
func (m *Matcher) Accepting(st State) bool {
	return st >= 0 && m.states[st].stacks[0] == 0
}

// Next is the State after reading b in st (Dead if b cannot follow). It
// does not move the matcher. States stay valid until Accept moves the
// matcher past the cache limits.
func (m *Matcher) Next(st State, b byte) State {
	if st < 0 {
		return Dead
	}
	info := &m.states[st]
	if info.trans != nil {
		if t := info.trans[b]; t != unknown {
			return t
		}
	} else {
		info.trans = new([256]State)
		for i := range info.trans {
			info.trans[i] = unknown
		}
	}
	m.beginStep()
	for _, s := range info.stacks {
		if s == 0 {
			continue
		}
		n := m.nodes[s]
		if m.g.sets[m.g.elems[n.pos].arg].has(b) {
			m.closure(m.node(n.pos+1, n.parent))
		}
	}
	if len(m.out) > maxStacks && m.err == nil {
		m.err = ErrAmbiguous
	}
	if m.err != nil {
		m.out = m.out[:0]
	}
	t := m.intern(m.out)
	m.states[st].trans[b] = t // m.states may have grown: index again
	return t
}

// Err reports whether the grammar turned out too ambiguous or complex to
// follow (ErrAmbiguous, ErrTooComplex); the transitions that hit a limit
// read as Dead.
func (m *Matcher) Err() error { return m.err }

// Work is the number of expansion steps the matcher has done: a measure
// of what computing its transitions has cost so far.
func (m *Matcher) Work() uint64 { return m.work }

// Accept moves the matcher over bytes, reporting false (and leaving the
// matcher where it was) if they do not continue a sentence.
func (m *Matcher) Accept(bytes []byte) bool {
	st := m.cur
	for _, b := range bytes {
		if st = m.Next(st, b); st == Dead {
			return false
		}
	}
	m.cur = st
	if len(m.nodes) > maxNodes || len(m.states) > maxStates {
		m.compact()
	}
	return true
}

// Footprint is roughly the bytes the matcher's caches hold (stacks, states
// and their transition tables).
func (m *Matcher) Footprint() int {
	n := len(m.nodes)*24 + len(m.states)*48
	for i := range m.states {
		n += 4 * len(m.states[i].stacks)
		if m.states[i].trans != nil {
			n += 256 * 4
		}
	}
	return n
}

// Epoch changes whenever the matcher renumbers its States (when its caches
// reach their limits): a caller keeping data per State must drop it then.
func (m *Matcher) Epoch() uint64 { return m.epoch }

// compact forgets every cached stack and state but the current one.
func (m *Matcher) compact() {
	m.epoch++
	var paths [][]int32
	for _, s := range m.states[m.cur].stacks {
		var p []int32
		for ; s != 0; s = m.nodes[s].parent {
			p = append(p, m.nodes[s].pos)
		}
		paths = append(paths, p)
	}
	m.reset()
	var stacks []int32
	for _, p := range paths {
		s := int32(0)
		for i := len(p) - 1; i >= 0; i-- {
			s = m.node(p[i], s)
		}
		stacks = append(stacks, s)
	}
	m.cur = m.intern(stacks)
}

// Match reports whether s is a complete sentence of g.
func (g *Grammar) Match(s []byte) bool {
	m := NewMatcher(g)
	return m.Accept(s) && m.Complete()
}
