package tokenizer

import "fmt"

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
