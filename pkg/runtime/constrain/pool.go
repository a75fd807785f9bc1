package constrain

import (
	"slices"
	"sync"

	"github.com/corelm/corelm/pkg/runtime/grammar"
)

// Pool keeps the matchers of finished generations, with their parser
// states, DFA transitions and masks, for later generations under the same
// grammar and vocabulary: a client sending one schema with every request
// pays for the trie walks once, not per request. Safe for concurrent use;
// each Matcher it hands out belongs to one generation until Release.
type Pool struct {
	mu   sync.Mutex
	max  int
	n    int
	free map[poolKey][]*Matcher
	lru  []poolKey // keys by last release, oldest first
}

type poolKey struct {
	g *grammar.Grammar
	v *Vocab
}

// NewPool returns a pool keeping at most n idle matchers.
func NewPool(n int) *Pool { return &Pool{max: n, free: map[poolKey][]*Matcher{}} }

// Get returns a matcher at the start of g's language over v (a pooled one
// when there is one), with stops as the request's stop tokens. Release it
// when the generation ends.
func (p *Pool) Get(g *grammar.Grammar, v *Vocab, stops []int32) *Matcher {
	k := poolKey{g, v}
	p.mu.Lock()
	var m *Matcher
	if l := p.free[k]; len(l) > 0 {
		m = l[len(l)-1]
		p.free[k] = l[:len(l)-1]
		if len(p.free[k]) == 0 {
			delete(p.free, k)
		}
		p.n--
	}
	p.mu.Unlock()
	if m == nil {
		m = NewMatcher(g, v, stops)
	} else {
		m.m.Reset()
		ends := slices.Concat(v.eog, stops)
		slices.Sort(ends)
		m.ends = slices.Compact(ends)
	}
	m.pool = p
	return m
}

// maxPooledBytes is the most cache memory a pooled matcher may hold; a
// bigger one (a grammar with very many states) is dropped, so the idle
// pool stays small next to the model.
const maxPooledBytes = 4 << 20

// Release gives the matcher back to the pool it came from (if any); it
// must not be used afterwards.
func (c *Matcher) Release() {
	p := c.pool
	if p == nil {
		return
	}
	c.pool = nil
	if c.footprint() > maxPooledBytes || c.m.Err() != nil {
		return
	}
	k := poolKey{c.g, c.v}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free[k] = append(p.free[k], c)
	p.lru = append(slices.DeleteFunc(p.lru, func(x poolKey) bool { return x == k }), k)
	p.n++
	for p.n > p.max && len(p.lru) > 0 {
		old := p.lru[0]
		l := p.free[old]
		if len(l) == 0 {
			p.lru = p.lru[1:]
			delete(p.free, old)
			continue
		}
		l[0] = nil
		p.free[old] = l[1:]
		p.n--
	}
}
