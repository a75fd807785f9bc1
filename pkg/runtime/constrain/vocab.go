// Package constrain turns a grammar into token masks: at each step of a
// generation it says which tokens of the vocabulary keep the output a
// prefix of the grammar's language, and allows end-of-generation only where
// the output is complete. The sampler applies the mask before top-k, top-p
// and temperature.
//
// Costs: a Vocab (the token trie) is built once per model; a Grammar is
// compiled once per distinct constraint (Cache); a Matcher per request
// walks the trie with the grammar's lazily built DFA, once per distinct
// parser state, and keeps the resulting masks, so a state seen before (the
// inside of a JSON string, the place after a comma) costs only applying
// the mask to the logits.
package constrain

import (
	"bytes"
	"slices"

	"github.com/corelm/corelm/pkg/runtime/tokenizer"
)

// Vocab is a vocabulary's tokens as byte strings, in a trie laid out in
// depth-first order so a walk is a loop over arrays with a skip pointer
// past a dead subtree. Immutable and safe to share.
type Vocab struct {
	size int
	// Trie nodes in depth-first order: the byte on the edge into node i,
	// its depth (1 for the root's children), the index just past its
	// subtree, and its tokens: toks[tokAt[i]:tokAt[i+1]].
	edge  []byte
	depth []uint16
	skip  []int32
	tokAt []int32
	toks  []int32
	// Every token's bytes: pieces[off[id]:off[id+1]].
	pieces []byte
	off    []int32
	eog    []int32 // end-of-generation tokens, allowed only when complete
	maxLen int
}

// TokenizerVocab is t's vocabulary: every token with bytes, except control
// tokens, which never appear in constrained output, and the
// end-of-generation tokens, which end it.
func TokenizerVocab(t *tokenizer.Tokenizer) *Vocab {
	n := t.VocabSize()
	pieces := make([][]byte, n)
	for id := range int32(n) {
		if !t.IsControl(id) && !t.IsEOG(id) {
			pieces[id] = t.TokenBytes(id)
		}
	}
	return NewVocab(pieces, t.EOGTokens())
}

// NewVocab builds a Vocab from each token's bytes (nil or empty: the token
// is never allowed) and the end-of-generation tokens.
func NewVocab(pieces [][]byte, eog []int32) *Vocab {
	v := &Vocab{size: len(pieces), eog: slices.Clone(eog), off: make([]int32, len(pieces)+1)}
	ids := make([]int32, 0, len(pieces))
	for id, p := range pieces {
		v.pieces = append(v.pieces, p...)
		v.off[id+1] = int32(len(v.pieces))
		if len(p) > 0 && !slices.Contains(eog, int32(id)) {
			ids = append(ids, int32(id))
			v.maxLen = max(v.maxLen, len(p))
		}
	}
	slices.SortFunc(ids, func(a, b int32) int {
		if c := bytes.Compare(pieces[a], pieces[b]); c != 0 {
			return c
		}
		return int(a - b)
	})
	var path []int32 // the open nodes, one per depth
	var prev []byte
	for _, id := range ids {
		p := pieces[id]
		common := 0
		for common < len(prev) && common < len(p) && prev[common] == p[common] {
			common++
		}
		for len(path) > common {
			v.skip[path[len(path)-1]] = int32(len(v.edge))
			path = path[:len(path)-1]
		}
		for _, b := range p[common:] {
			path = append(path, int32(len(v.edge)))
			v.edge = append(v.edge, b)
			v.depth = append(v.depth, uint16(len(path)))
			v.skip = append(v.skip, 0)
			v.tokAt = append(v.tokAt, int32(len(v.toks)))
		}
		v.toks = append(v.toks, id)
		prev = p
	}
	for _, n := range path {
		v.skip[n] = int32(len(v.edge))
	}
	v.tokAt = append(v.tokAt, int32(len(v.toks)))
	return v
}

// Size is the number of token ids.
func (v *Vocab) Size() int { return v.size }

// bytes is token id's bytes (shared).
func (v *Vocab) bytes(id int32) []byte { return v.pieces[v.off[id]:v.off[id+1]] }
