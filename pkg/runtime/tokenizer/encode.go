package tokenizer

import (
	"fmt"
	"slices"
	"strings"
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
	// Literal lists byte ranges [lo, hi) of the text, sorted and disjoint,
	// in which control tokens are not recognised even with ParseSpecial: a
	// user's text inside a prompt whose own control tokens are parsed (a
	// chat message rendered into its template). A control token overlapping
	// a range is plain text; user-defined tokens are recognised as always.
	Literal [][2]int
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
	frags := t.partition(s, text, opts.ParseSpecial, opts.Literal)
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
//
// With parseSpecial, control tokens overlapping a literal range are not
// candidates, so that the text there is cut as it would be without
// parseSpecial.
func (t *Tokenizer) partition(s *session, text string, parseSpecial bool, literal [][2]int) []fragment {
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
			sp := t.specials[k].text
			if !strings.HasPrefix(text[i:], sp) {
				continue
			}
			if literal != nil && t.isControlSpecial(k) && overlaps(literal, i, i+len(sp)) {
				continue // a user's text: plain
			}
			occ = append(occ, occurrence{k, i})
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

// isControlSpecial reports whether specials[k] is recognised only with
// ParseSpecial (a control or unknown token, not a user-defined one).
func (t *Tokenizer) isControlSpecial(k int32) bool {
	return t.attrs[t.specials[k].id]&(attrControl|attrUnknown) != 0
}

// overlaps reports whether [lo, hi) overlaps one of the sorted, disjoint
// ranges.
func overlaps(ranges [][2]int, lo, hi int) bool {
	// The first range that ends after lo is the only candidate.
	i, _ := slices.BinarySearchFunc(ranges, lo, func(r [2]int, lo int) int {
		if r[1] <= lo {
			return -1
		}
		return 1
	})
	return i < len(ranges) && ranges[i][0] < hi
}

// ControlSpans returns the byte ranges of s that spell a control token (a
// token Encode recognises only with ParseSpecial), sorted, with overlapping
// and adjacent ones merged: the parts of a user's text to pass as
// EncodeOptions.Literal (through chat.Options.Literal for chat messages).
func (t *Tokenizer) ControlSpans(s string) [][2]int {
	var spans [][2]int
	for i := 0; i < len(s); i++ {
		for _, k := range t.byFirst[1][s[i]] {
			sp := t.specials[k].text
			if !t.isControlSpecial(k) || !strings.HasPrefix(s[i:], sp) {
				continue
			}
			if n := len(spans); n > 0 && spans[n-1][1] >= i {
				spans[n-1][1] = max(spans[n-1][1], i+len(sp))
			} else {
				spans = append(spans, [2]int{i, i + len(sp)})
			}
		}
	}
	return spans
}
