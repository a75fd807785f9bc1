package tokenizer

// Pre-tokenizers of byte-level BPE vocabularies. Each one cuts a text (as
// code points) into words that BPE then encodes one at a time. They are
// hand-written ports of the splitters in llama.cpp's unicode.cpp, because the
// regular expressions they implement need look-ahead (`\s+(?!\S)`), which Go's
// regexp lacks, and because llama.cpp's own behaviour — not the regex engine's
// — is the reference.
//
// A splitter appends to ends the exclusive end index (in code points) of each
// word of c[lo:hi] and returns it. Outside [lo, hi) a position has no flags
// and no code point, exactly like llama.cpp's OUT_OF_RANGE.

// outOfRange marks a position outside the span being split.
const outOfRange rune = -1

type span struct {
	c      []rune
	lo, hi int
}

func (s *span) cpt(p int) rune {
	if p >= s.lo && p < s.hi {
		return s.c[p]
	}
	return outOfRange
}

func (s *span) flags(p int) cpFlags {
	if p >= s.lo && p < s.hi {
		return flagsOf(s.c[p])
	}
	return 0
}

const notWordClass = cpWhitespace | cpLetter | cpNumber

// asciiLower lowers A-Z; llama.cpp's unicode_tolower maps no other code
// point onto the letters that the contraction rules test for.
func asciiLower(c rune) rune {
	if c >= 'A' && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// contraction reports the length of 's|'t|'re|'ve|'m|'ll|'d at p (0 if none).
func (s *span) contraction(p int, fold bool) int {
	if s.cpt(p) != '\'' || p+1 >= s.hi {
		return 0
	}
	n1 := s.cpt(p + 1)
	if fold {
		n1 = asciiLower(n1)
	}
	switch n1 {
	case 's', 't', 'm', 'd':
		return 2
	}
	if p+2 < s.hi {
		n2 := s.cpt(p + 2)
		if fold {
			n2 = asciiLower(n2)
		}
		if (n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l') {
			return 3
		}
	}
	return 0
}

// splitGPT2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
func splitGPT2(c []rune, lo, hi int, ends []int) []int {
	s := span{c, lo, hi}
	for pos := lo; pos < hi; {
		if n := s.contraction(pos, false); n > 0 {
			pos += n
			ends = append(ends, pos)
			continue
		}
		cpt := s.cpt(pos)
		f2 := s.flags(pos)
		if cpt == ' ' {
			f2 = s.flags(pos + 1)
		}
		// <space>?\p{L}+, <space>?\p{N}+, <space>?[^\s\p{L}\p{N}]+
		var class func(cpFlags) bool
		switch {
		case f2&cpLetter != 0:
			class = func(f cpFlags) bool { return f&cpLetter != 0 }
		case f2&cpNumber != 0:
			class = func(f cpFlags) bool { return f&cpNumber != 0 }
		case f2&notWordClass == 0 && f2 != 0:
			class = func(f cpFlags) bool { return f&notWordClass == 0 && f != 0 }
		}
		if class != nil {
			if cpt == ' ' {
				pos++
			}
			for class(f2) {
				pos++
				f2 = s.flags(pos)
			}
			ends = append(ends, pos)
			continue
		}
		pos = s.whitespace(pos, false)
		ends = append(ends, pos)
	}
	return ends
}

// whitespace handles the trailing alternatives shared by every splitter:
// (\s*[\r\n]+ when newlines)|\s+(?!\S)|\s+ and, failing all, a single code
// point. It returns the end of the word starting at pos.
func (s *span) whitespace(pos int, newlines bool) int {
	n, lastNL := 0, 0
	for s.flags(pos+n)&cpWhitespace != 0 {
		if c := s.cpt(pos + n); newlines && (c == '\r' || c == '\n') {
			lastNL = pos + n + 1
		}
		n++
	}
	switch {
	case lastNL > 0: // \s*[\r\n]+
		return lastNL
	case n > 1 && s.cpt(pos+n) != outOfRange: // \s+(?!\S)
		return pos + n - 1
	case n > 0: // \s+
		return pos + n
	}
	return pos + 1
}

// splitLlama3 is llama.cpp's splitter for the Llama-3 expression
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// and, with digits == 1, for Qwen2's, which differs only in \p{N}.
func splitLlama3(c []rune, lo, hi int, ends []int, digits int) []int {
	s := span{c, lo, hi}
	for pos := lo; pos < hi; {
		if n := s.contraction(pos, true); n > 0 {
			pos += n
			ends = append(ends, pos)
			continue
		}
		cpt := s.cpt(pos)
		f := s.flags(pos)

		// [^\r\n\p{L}\p{N}]?\p{L}+
		if !(cpt == '\r' || cpt == '\n' || f&cpNumber != 0) {
			if f&cpLetter != 0 || s.flags(pos+1)&cpLetter != 0 {
				pos++
				for s.flags(pos)&cpLetter != 0 {
					pos++
				}
				ends = append(ends, pos)
				continue
			}
		}

		// \p{N}{1,digits}
		if f&cpNumber != 0 {
			ini := pos
			for s.flags(pos)&cpNumber != 0 {
				pos++
				if pos-ini >= digits {
					ends = append(ends, pos)
					ini = pos
				}
			}
			if pos > ini {
				ends = append(ends, pos)
			}
			continue
		}

		// <space>?[^\s\p{L}\p{N}]+[\r\n]*
		f2 := f
		if cpt == ' ' {
			f2 = s.flags(pos + 1)
		}
		if f2&notWordClass == 0 && f != 0 {
			if cpt == ' ' {
				pos++
			}
			for f2&notWordClass == 0 && f2 != 0 {
				pos++
				f2 = s.flags(pos)
			}
			for c2 := s.cpt(pos); c2 == '\r' || c2 == '\n'; c2 = s.cpt(pos) {
				pos++
			}
			ends = append(ends, pos)
			continue
		}

		pos = s.whitespace(pos, true)
		ends = append(ends, pos)
	}
	return ends
}

// The "default" pre-tokenizer of llama.cpp (tokenizer.ggml.pre = "default")
// applies four expressions in turn, each cutting the words of the previous:
//
//	[\p{P}\$\+<=>\^~\|]+
//	the GPT-2 expression
//	\p{N}+
//	[0-9][0-9][0-9]
//
// Matches and the text between them both become words. llama.cpp runs the
// first, third and fourth through std::regex over a "collapsed" text in which
// every non-ASCII code point stands for its category, so \p{P} and \p{N} mean
// ASCII punctuation/digits plus non-ASCII code points of that category.

// defaultPunct reports membership in [\p{P}\$\+<=>\^~\|] as llama.cpp's
// collapsed expression sees it: every ASCII punctuation or symbol but '`',
// and non-ASCII punctuation.
func defaultPunct(c rune) bool {
	if c < 0x80 {
		return c >= '!' && c <= '~' && c != '`' && !(c >= '0' && c <= '9') &&
			!(c >= 'A' && c <= 'Z') && !(c >= 'a' && c <= 'z')
	}
	f := flagsOf(c)
	return f&cpWhitespace == 0 && f&cpCategories == cpPunct
}

// defaultNumber reports membership in \p{N} over the collapsed text.
func defaultNumber(c rune) bool {
	if c < 0x80 {
		return c >= '0' && c <= '9'
	}
	f := flagsOf(c)
	return f&cpWhitespace == 0 && f&cpCategories == cpNumber
}

// splitRuns cuts c[lo:hi] at the boundaries of maximal runs of in.
func splitRuns(c []rune, lo, hi int, ends []int, in func(rune) bool) []int {
	for pos := lo; pos < hi; {
		want := in(c[pos])
		for pos < hi && in(c[pos]) == want {
			pos++
		}
		ends = append(ends, pos)
	}
	return ends
}

// splitDigits3 cuts out each successive [0-9][0-9][0-9] of c[lo:hi].
func splitDigits3(c []rune, lo, hi int, ends []int) []int {
	isDigit := func(p int) bool { return p < hi && c[p] >= '0' && c[p] <= '9' }
	prev := lo
	for pos := lo; pos+3 <= hi; {
		if isDigit(pos) && isDigit(pos+1) && isDigit(pos+2) {
			if pos > prev {
				ends = append(ends, pos)
			}
			pos += 3
			ends = append(ends, pos)
			prev = pos
			continue
		}
		pos++
	}
	if prev < hi {
		ends = append(ends, hi)
	}
	return ends
}

// splitDefault applies the four stages; tmp is scratch space.
func splitDefault(c []rune, lo, hi int, ends []int, tmp *[2][]int) []int {
	a := splitRuns(c, lo, hi, tmp[0][:0], defaultPunct)
	b := tmp[1][:0]
	start := lo
	for _, e := range a {
		b = splitGPT2(c, start, e, b)
		start = e
	}
	a = a[:0]
	start = lo
	for _, e := range b {
		a = splitRuns(c, start, e, a, defaultNumber)
		start = e
	}
	start = lo
	for _, e := range a {
		ends = splitDigits3(c, start, e, ends)
		start = e
	}
	tmp[0], tmp[1] = a, b
	return ends
}
