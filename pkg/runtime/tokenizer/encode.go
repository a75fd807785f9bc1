package tokenizer

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// BOSMode says whether Encode adds the beginning-of-sequence token.
type BOSMode uint8

const (
	// BOSModel follows the model: BOS if tokenizer.ggml.add_bos_token (with
	// llama.cpp's defaults when the key is absent), EOS if
	// tokenizer.ggml.add_eos_token. This is llama.cpp's add_special = true.
	BOSModel BOSMode = iota
	// BOSNone adds neither BOS nor EOS (llama.cpp's add_special = false).
	BOSNone
	// BOSForce adds BOS whatever the model says (EOS as the model says).
	BOSForce
)

// EncodeOptions controls Encode. The zero value adds BOS as the model asks
// and treats every control token's text in the input as plain text.
type EncodeOptions struct {
	AddBOS BOSMode
	// ParseSpecial recognises control tokens (<|im_start|>, <|eot_id|>, <s>,
	// …) written in the text. Leave it off for text that comes from users:
	// then such strings are tokenized as the characters they are.
	// User-defined tokens are recognised either way, as in llama.cpp.
	ParseSpecial bool
}

// Encode tokenizes text. Its result equals llama.cpp's llama_tokenize with
// add_special = (opts.AddBOS != BOSNone) and parse_special = opts.ParseSpecial.
// Any byte string is accepted; invalid UTF-8 is handled as llama.cpp handles
// it (byte tokens for SPM, U+FFFD for byte-level BPE).
func (t *Tokenizer) Encode(text string, opts EncodeOptions) ([]int32, error) {
	addBOS := opts.AddBOS == BOSForce || (opts.AddBOS == BOSModel && t.addBOS)
	addEOS := opts.AddBOS != BOSNone && t.addEOS
	if addBOS && t.bos == none {
		return nil, ErrNoBOS
	}
	if addEOS && t.eos == none {
		return nil, fmt.Errorf("tokenizer: add_eos_token is set but the vocabulary has no EOS token")
	}
	s := t.scratch.Get().(*session)
	defer t.scratch.Put(s)

	out := make([]int32, 0, len(text)/3+2)
	if addBOS {
		out = append(out, t.bos)
	}
	frags := t.partition(s, text, opts.ParseSpecial)
	prevSpecial := true // SPM: a space is prefixed at the start and after each special token
	for _, f := range frags {
		if f.tok != none {
			out = append(out, f.tok)
			prevSpecial = true
			continue
		}
		switch t.kind {
		case SPM:
			out = t.encodeSPM(s, text[f.lo:f.hi], t.addSpacePrefix && prevSpecial, out)
		case BPE:
			out = t.encodeBPE(s, text[f.lo:f.hi], out)
		}
		prevSpecial = false
	}
	if addEOS {
		out = append(out, t.eos)
	}
	return out, nil
}

// session is per-call scratch space, pooled.
type session struct {
	frags []fragment
	occ   []occurrence
	mark  []int32

	buf  []byte
	syms []spmSymbol
	spmQ []spmBigram

	cpts  []rune
	ends  []int
	tmp   [2][]int
	word  []byte
	enc   []byte
	bsyms []bpeSymbol
	bpeQ  []bpePair
}

// fragment is a span of the input: text to tokenize, or one special token.
type fragment struct {
	tok    int32 // special token id, none for text
	lo, hi int
}

type occurrence struct {
	special int32 // index into specials
	pos     int
}

// isCSpace is C's isspace in the "C" locale, which llama.cpp uses to strip
// around tokens with lstrip/rstrip.
func isCSpace(b byte) bool {
	return b == ' ' || (b >= '\t' && b <= '\r')
}

// partition cuts the special tokens out of text with the result of
// llama.cpp's tokenizer_st_partition: each special token, longest first,
// claims its leftmost non-overlapping occurrences in the text not yet
// claimed. Rather than rescan the text once per special token, all candidate
// occurrences are found in one pass (indexed by first byte) and then granted
// in that same order.
func (t *Tokenizer) partition(s *session, text string, parseSpecial bool) []fragment {
	frags := s.frags[:0]
	defer func() { s.frags = frags }()
	if text == "" {
		return frags
	}
	index := &t.byFirst[0]
	if parseSpecial {
		index = &t.byFirst[1]
	}
	occ := s.occ[:0]
	for i := 0; i < len(text); i++ {
		for _, k := range index[text[i]] {
			if strings.HasPrefix(text[i:], t.specials[k].text) {
				occ = append(occ, occurrence{k, i})
			}
		}
	}
	s.occ = occ
	if len(occ) == 0 {
		frags = append(frags, fragment{none, 0, len(text)})
		return frags
	}
	slices.SortStableFunc(occ, func(a, b occurrence) int { return int(a.special - b.special) })

	// mark: 0 free text, 1 consumed (token body or stripped space), id+2 token start.
	mark := slices.Grow(s.mark[:0], len(text))[:len(text)]
	clear(mark)
	s.mark = mark
	for _, o := range occ {
		sp := &t.specials[o.special]
		end := o.pos + len(sp.text)
		if slices.ContainsFunc(mark[o.pos:end], func(m int32) bool { return m != 0 }) {
			continue
		}
		mark[o.pos] = sp.id + 2
		for j := o.pos + 1; j < end; j++ {
			mark[j] = 1
		}
		if sp.lstrip {
			for j := o.pos - 1; j >= 0 && mark[j] == 0 && isCSpace(text[j]); j-- {
				mark[j] = 1
			}
		}
		if sp.rstrip {
			for j := end; j < len(text) && mark[j] == 0 && isCSpace(text[j]); j++ {
				mark[j] = 1
			}
		}
	}
	for i := 0; i < len(text); {
		switch m := mark[i]; m {
		case 0:
			j := i + 1
			for j < len(text) && mark[j] == 0 {
				j++
			}
			frags = append(frags, fragment{none, i, j})
			i = j
		case 1:
			i++
		default:
			frags = append(frags, fragment{m - 2, i, i})
			i++
		}
	}
	return frags
}

// --- SentencePiece-style ---------------------------------------------------

type spmSymbol struct {
	start, n   int32 // bytes of the escaped text
	prev, next int32
}

type spmBigram struct {
	score       float32
	left, right int32
	size        int32
}

// before orders the queue: best score first, leftmost on ties.
func (a *spmBigram) before(b *spmBigram) bool {
	return a.score > b.score || (a.score == b.score && a.left < b.left)
}

func (t *Tokenizer) buildSPM() {
	for b := range t.spmBytes {
		id, ok := t.ids[fmt.Sprintf("<0x%02X>", b)]
		if !ok {
			id, ok = t.ids[string([]byte{byte(b)})]
		}
		if !ok {
			id = none
		}
		t.spmBytes[b] = id
	}
}

// encodeSPM is llama.cpp's llm_tokenizer_spm_session: spaces become "▁",
// the text is cut into UTF-8 characters and the adjacent pair whose
// concatenation is the best-scoring token is merged until none is left.
// Characters no token covers fall back to byte tokens.
func (t *Tokenizer) encodeSPM(s *session, text string, prefix bool, out []int32) []int32 {
	buf := s.buf[:0]
	if prefix {
		buf = append(buf, "▁"...)
	}
	for i := 0; i < len(text); i++ {
		if text[i] == ' ' {
			buf = append(buf, "▁"...)
		} else {
			buf = append(buf, text[i])
		}
	}
	s.buf = buf
	if len(buf) == 0 {
		return out
	}

	syms := s.syms[:0]
	for off := 0; off < len(buf); {
		n := min(utf8SeqLen(buf[off]), len(buf)-off)
		i := int32(len(syms))
		syms = append(syms, spmSymbol{start: int32(off), n: int32(n), prev: i - 1, next: i + 1})
		off += n
	}
	syms[len(syms)-1].next = -1
	s.syms = syms

	q := s.spmQ[:0]
	try := func(left, right int32) {
		if left < 0 || right < 0 {
			return
		}
		l, r := &syms[left], &syms[right]
		id, ok := t.ids[string(buf[l.start:l.start+l.n+r.n])]
		if !ok {
			return
		}
		q = heapPush(q, spmBigram{score: t.scores[id], left: left, right: right, size: l.n + r.n}, (*spmBigram).before)
	}
	for i := int32(1); i < int32(len(syms)); i++ {
		try(i-1, i)
	}
	for len(q) > 0 {
		var b spmBigram
		q, b = heapPop(q, (*spmBigram).before)
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue // one side already merged elsewhere
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		try(l.prev, b.left)
		try(b.left, l.next)
	}
	s.spmQ = q

	for i := int32(0); i != -1; i = syms[i].next {
		sym := syms[i]
		piece := buf[sym.start : sym.start+sym.n]
		if id, ok := t.ids[string(piece)]; ok {
			out = append(out, id)
			continue
		}
		for _, b := range piece {
			switch {
			case t.spmBytes[b] != none:
				out = append(out, t.spmBytes[b])
			case t.unk != none: // llama.cpp throws here; unknown is kinder
				out = append(out, t.unk)
			}
		}
	}
	return out
}

// --- byte-level BPE --------------------------------------------------------

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
		c := string(appendCodepoint(nil, byteToRune[b]))
		id, ok := t.ids[c]
		if !ok {
			id, ok = extra[c]
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

// heapPush and heapPop keep q a binary heap under before (the first element
// is the one that goes first). Hand-rolled to avoid container/heap's
// interface calls on the hot path.
func heapPush[T any](q []T, x T, before func(a, b *T) bool) []T {
	q = append(q, x)
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if !before(&q[i], &q[p]) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
	return q
}

func heapPop[T any](q []T, before func(a, b *T) bool) ([]T, T) {
	top := q[0]
	last := len(q) - 1
	q[0] = q[last]
	q = q[:last]
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(q) {
			break
		}
		m := l
		if r := l + 1; r < len(q) && before(&q[r], &q[l]) {
			m = r
		}
		if !before(&q[m], &q[i]) {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
	return q, top
}
