package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

type bpeSymbol struct {
	id         int32 // symbol id (token id, or past the vocabulary), none if it can take part in nothing
	lo, hi     int32 // bytes of the word
	prev, next int32
}

type bpePair struct {
	rank        int32
	left, right int32
	lid, rid    int32 // symbol ids when queued, to detect stale pairs
	result      int32
}

// before orders the queue: lowest rank first, leftmost on ties.
func (a *bpePair) before(b *bpePair) bool {
	return a.rank < b.rank || (a.rank == b.rank && a.left < b.left)
}

func pairKey(l, r int32) uint64 { return uint64(uint32(l))<<32 | uint64(uint32(r)) }

func (t *Tokenizer) buildBPE(md Metadata) error {
	merges, ok := md.Strings(keyMerges)
	if !ok {
		return fmt.Errorf("%w: missing %s", ErrInvalid, keyMerges)
	}
	n := int32(len(t.texts))
	extra := map[string]int32{}
	symbol := func(s string) int32 {
		if id, ok := t.ids[s]; ok {
			return id
		}
		if id, ok := extra[s]; ok {
			return id
		}
		id := n + int32(len(extra))
		extra[s] = id
		return id
	}
	t.merges = make(map[uint64]merge, len(merges))
	for rank, m := range merges {
		// "left right", split at the first space after the first byte.
		if len(m) < 2 {
			continue
		}
		sp := strings.IndexByte(m[1:], ' ')
		if sp < 0 {
			continue
		}
		left, right := m[:sp+1], m[sp+2:]
		key := pairKey(symbol(left), symbol(right))
		if _, dup := t.merges[key]; dup {
			continue // the first rank wins, as with llama.cpp's emplace
		}
		t.merges[key] = merge{rank: int32(rank), result: symbol(left + right)}
	}
	for b := range t.bpeSingle {
		c := appendCodepoint(nil, byteToRune[b])
		id, ok := t.ids[string(c)]
		if !ok {
			id, ok = extra[string(c)]
		}
		if !ok {
			id = none
		}
		t.bpeSingle[b] = id
	}
	return nil
}

// encodeBPE is llama.cpp's llm_tokenizer_bpe_session for one text fragment:
// pre-tokenize into words, then merge each word's bytes by rank.
func (t *Tokenizer) encodeBPE(s *session, text string, out []int32) []int32 {
	cpts := decodeLlama(text, s.cpts[:0])
	ends := t.sp.split(cpts, 0, len(cpts), s.ends[:0], &s.tmp)
	s.cpts, s.ends = cpts, ends
	if utf8.ValidString(text) {
		// llama.cpp's decode-then-encode round trip is the identity here.
		start, pos := 0, 0
		for _, e := range ends {
			n := 0
			for _, c := range cpts[start:e] {
				n += codepointLen(c)
			}
			out = t.bpeWord(s, text[pos:pos+n], out)
			start, pos = e, pos+n
		}
		return out
	}
	start := 0
	for _, e := range ends {
		w := s.word[:0]
		for _, c := range cpts[start:e] {
			w = appendCodepoint(w, c)
		}
		s.word = w
		out = t.bpeWord(s, string(w), out)
		start = e
	}
	return out
}

func (t *Tokenizer) bpeWord(s *session, w string, out []int32) []int32 {
	if len(w) == 0 {
		return out
	}
	if t.sp.ignoreMerges {
		s.enc = appendByteEncoded(s.enc[:0], w)
		if id, ok := t.ids[string(s.enc)]; ok {
			return append(out, id)
		}
	}
	syms := s.bsyms[:0]
	for i := 0; i < len(w); i++ {
		syms = append(syms, bpeSymbol{id: t.bpeSingle[w[i]], lo: int32(i), hi: int32(i + 1), prev: int32(i - 1), next: int32(i + 1)})
	}
	syms[len(syms)-1].next = -1
	s.bsyms = syms

	q := s.bpeQ[:0]
	try := func(left, right int32) {
		if left < 0 || right < 0 {
			return
		}
		lid, rid := syms[left].id, syms[right].id
		if lid == none || rid == none {
			return
		}
		m, ok := t.merges[pairKey(lid, rid)]
		if !ok {
			return
		}
		q = heapPush(q, bpePair{rank: m.rank, left: left, right: right, lid: lid, rid: rid, result: m.result}, (*bpePair).before)
	}
	for i := int32(1); i < int32(len(syms)); i++ {
		try(i-1, i)
	}
	for len(q) > 0 {
		var p bpePair
		q, p = heapPop(q, (*bpePair).before)
		l, r := &syms[p.left], &syms[p.right]
		if l.hi == l.lo || r.hi == r.lo || l.id != p.lid || r.id != p.rid {
			continue // stale: one side changed since the pair was queued
		}
		l.id = p.result
		l.hi = r.hi
		r.hi = r.lo
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = p.left
		}
		try(l.prev, p.left)
		try(p.left, l.next)
	}
	s.bpeQ = q

	n := int32(len(t.texts))
	for i := int32(0); i != -1; i = syms[i].next {
		sym := syms[i]
		if sym.id >= 0 && sym.id < n {
			out = append(out, sym.id)
			continue
		}
		// Not a token: llama.cpp looks each byte of the spelled-out text up
		// as a one-byte token and drops those that are not.
		s.enc = appendByteEncoded(s.enc[:0], w[sym.lo:sym.hi])
		for _, b := range s.enc {
			if id, ok := t.ids[string([]byte{b})]; ok {
				out = append(out, id)
			}
		}
	}
	return out
}
