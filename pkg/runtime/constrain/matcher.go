package constrain

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"

	"github.com/corelm/corelm/pkg/runtime/grammar"
)

// ErrDeadEnd is returned when no token of the vocabulary continues the
// output and the output is not complete: the grammar needs bytes the
// vocabulary cannot spell.
var ErrDeadEnd = errors.New("constraint: no token of the vocabulary continues the output")

// ErrRejected is returned by Accept for a token the mask did not allow.
var ErrRejected = errors.New("constraint: token not allowed here")

// maxMasks bounds the masks a Matcher keeps (each is Vocab.Size bits).
const maxMasks = 64

// maxWalkWork bounds the grammar expansion steps of computing one mask.
// A JSON Schema's first mask on a 128k vocabulary takes far fewer; the
// bound keeps one request's pathological grammar from stalling the
// scheduler, which samples every sequence on one goroutine.
const maxWalkWork = 1 << 22

// ErrTooExpensive is returned by Mask when computing the allowed tokens
// of a state would take more than maxWalkWork grammar steps.
var ErrTooExpensive = fmt.Errorf("%w: the grammar is too expensive to follow over this vocabulary", grammar.ErrUnsupported)

// Matcher follows one generation under a grammar. Not safe for concurrent
// use.
type Matcher struct {
	g     *grammar.Grammar
	pool  *Pool // where Release returns it; nil: nowhere
	v     *Vocab
	m     *grammar.Matcher
	ends  []int32 // end-of-generation and the request's stop tokens
	masks map[grammar.State][]uint64
	epoch uint64
	walk  []grammar.State // per trie depth
	saved []float32
}

// NewMatcher starts a generation under g. stops are the request's own stop
// tokens: like end-of-generation they are allowed only where the output is
// complete, since the generation would end on them.
func NewMatcher(g *grammar.Grammar, v *Vocab, stops []int32) *Matcher {
	ends := slices.Concat(v.eog, stops)
	slices.Sort(ends)
	return &Matcher{
		g:     g,
		v:     v,
		m:     grammar.NewMatcher(g),
		ends:  slices.Compact(ends),
		masks: map[grammar.State][]uint64{},
		walk:  make([]grammar.State, v.maxLen+1),
	}
}

// footprint is roughly the bytes of the matcher's caches: its masks and
// the grammar matcher's states.
func (c *Matcher) footprint() int {
	return len(c.masks)*8*((c.v.size+63)/64) + c.m.Footprint()
}

// Complete reports whether the output so far is a sentence of the grammar.
func (c *Matcher) Complete() bool { return c.m.Complete() }

// allowed returns the bit set of tokens whose bytes continue the output
// from the matcher's state (end tokens not included).
func (c *Matcher) allowed() ([]uint64, error) {
	if e := c.m.Epoch(); e != c.epoch {
		clear(c.masks) // the matcher renumbered its states
		c.epoch = e
	}
	st := c.m.State()
	if mask, ok := c.masks[st]; ok {
		return mask, nil
	}
	if len(c.masks) >= maxMasks {
		clear(c.masks)
	}
	mask := make([]uint64, (c.v.size+63)/64)
	v := c.v
	budget := c.m.Work() + maxWalkWork
	c.walk[0] = st
	for i := 0; i < len(v.edge); {
		d := v.depth[i]
		next := c.m.Next(c.walk[d-1], v.edge[i])
		if next == grammar.Dead {
			i = int(v.skip[i])
			continue
		}
		if c.m.Work() > budget {
			return nil, ErrTooExpensive
		}
		c.walk[d] = next
		for _, id := range v.toks[v.tokAt[i]:v.tokAt[i+1]] {
			mask[id>>6] |= 1 << (id & 63)
		}
		i++
	}
	if err := c.m.Err(); err != nil {
		return nil, err
	}
	c.masks[st] = mask
	return mask, nil
}

// Mask sets the logit of every token that may not come next to -Inf. It
// fails with ErrDeadEnd when no token may.
func (c *Matcher) Mask(logits []float32) error {
	mask, err := c.allowed()
	if err != nil {
		return err
	}
	complete := c.m.Complete()
	if complete {
		c.saved = c.saved[:0]
		for _, id := range c.ends {
			if int(id) < len(logits) {
				c.saved = append(c.saved, logits[id])
			}
		}
	}
	any := false
	inf := float32(math.Inf(-1))
	for w, word := range mask {
		if word == ^uint64(0) {
			any = true
			continue
		}
		if word != 0 {
			any = true
		}
		lo := w * 64
		hi := min(lo+64, len(logits))
		if word == 0 {
			for i := lo; i < hi; i++ {
				logits[i] = inf
			}
			continue
		}
		for free := ^word; free != 0; free &= free - 1 {
			if i := lo + bits.TrailingZeros64(free); i < hi {
				logits[i] = inf
			}
		}
	}
	if complete {
		k := 0
		for _, id := range c.ends {
			if int(id) < len(logits) {
				logits[id] = c.saved[k]
				k++
			}
		}
		return nil
	}
	for _, id := range c.ends {
		if int(id) < len(logits) {
			logits[id] = inf
		}
	}
	if !any {
		return ErrDeadEnd
	}
	return nil
}

// Accept moves past the sampled token tok.
func (c *Matcher) Accept(tok int32) error {
	if tok < 0 || int(tok) >= c.v.size {
		return fmt.Errorf("%w: token %d outside the vocabulary", ErrRejected, tok)
	}
	if _, end := slices.BinarySearch(c.ends, tok); end {
		if !c.m.Complete() {
			return fmt.Errorf("%w: end token %d before the output is complete", ErrRejected, tok)
		}
		return nil
	}
	b := c.v.bytes(tok)
	if len(b) == 0 || !c.m.Accept(b) {
		return fmt.Errorf("%w: token %d (%q)", ErrRejected, tok, b)
	}
	return nil
}
