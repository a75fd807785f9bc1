package grammar

import (
	"slices"
	"unicode/utf8"
)

// Character classes are sets of code points; the matcher reads bytes. A
// class is compiled into alternatives of byte-range sequences that spell
// exactly the UTF-8 encodings of its code points (the construction regex
// engines use for byte automata), so the matcher and the token trie never
// see a partial character as a special case.

// normalize sorts and merges ranges.
func normalize(rs []rng) []rng {
	if len(rs) == 0 {
		return nil
	}
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b rng) int { return int(a.lo - b.lo) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.lo <= last.hi+1 {
			last.hi = max(last.hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// negate returns the code points (surrogates excluded) not in rs, which must
// be normalized.
func negate(rs []rng) []rng {
	var out []rng
	next := rune(0)
	for _, r := range rs {
		if r.lo > next {
			out = append(out, rng{next, r.lo - 1})
		}
		next = r.hi + 1
	}
	if next <= utf8.MaxRune {
		out = append(out, rng{next, utf8.MaxRune})
	}
	return out
}

// withoutSurrogates removes U+D800..U+DFFF, which UTF-8 cannot encode.
func withoutSurrogates(rs []rng) []rng {
	var out []rng
	for _, r := range rs {
		if r.hi < 0xD800 || r.lo > 0xDFFF {
			out = append(out, r)
			continue
		}
		if r.lo < 0xD800 {
			out = append(out, rng{r.lo, 0xD7FF})
		}
		if r.hi > 0xDFFF {
			out = append(out, rng{0xE000, r.hi})
		}
	}
	return out
}

// byteRange is one position of a UTF-8 sequence pattern.
type byteRange struct{ lo, hi byte }

// utf8Sequences appends to dst the byte-range sequences whose products are
// exactly the encodings of lo..hi (no surrogates inside).
func utf8Sequences(dst [][]byteRange, lo, hi rune) [][]byteRange {
	// Split where the encoded length changes.
	for _, limit := range [...]rune{0x7F, 0x7FF, 0xFFFF} {
		if lo <= limit && hi > limit {
			dst = utf8Sequences(dst, lo, limit)
			return utf8Sequences(dst, limit+1, hi)
		}
	}
	n := utf8.RuneLen(lo)
	if n == 1 {
		return append(dst, []byteRange{{byte(lo), byte(hi)}})
	}
	// Split until every continuation position spans a full or aligned
	// range, so the sequence is a product of independent byte ranges.
	for i := 1; i < n; i++ {
		m := rune(1)<<(6*i) - 1
		if lo&^m != hi&^m {
			if lo&m != 0 {
				dst = utf8Sequences(dst, lo, lo|m)
				return utf8Sequences(dst, (lo|m)+1, hi)
			}
			if hi&m != m {
				dst = utf8Sequences(dst, lo, (hi&^m)-1)
				return utf8Sequences(dst, hi&^m, hi)
			}
		}
	}
	var a, b [4]byte
	utf8.EncodeRune(a[:], lo)
	utf8.EncodeRune(b[:], hi)
	s := make([]byteRange, n)
	for i := range s {
		s[i] = byteRange{a[i], b[i]}
	}
	return append(dst, s)
}
