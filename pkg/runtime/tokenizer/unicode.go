package tokenizer

import (
	"sync"
	"unicode"
)

// Code point classes as llama.cpp's unicode.cpp sees them. Every code point
// below 0x110000 has exactly one category bit (unassigned ones get
// cpUndefined), so flags == 0 means "outside the text" or "not a code point",
// which the splitters rely on the way llama.cpp relies on as_uint() == 0.
type cpFlags uint16

const (
	cpUndefined  cpFlags = 1 << iota
	cpNumber             // \p{N}
	cpLetter             // \p{L}
	cpSeparator          // \p{Z}
	cpMark               // \p{M}
	cpPunct              // \p{P}
	cpSymbol             // \p{S}
	cpControl            // \p{C}
	cpWhitespace         // \s as llama.cpp defines it (see isWhitespace)

	cpCategories = cpUndefined | cpNumber | cpLetter | cpSeparator | cpMark | cpPunct | cpSymbol | cpControl
)

// maxCodepoint is one past the last Unicode code point. llama.cpp's lenient
// UTF-8 decoder can produce larger values from 4-byte sequences; those have
// no flags.
const maxCodepoint = 0x110000

// isWhitespace is llama.cpp's unicode_set_whitespace: the Unicode White_Space
// property.
func isWhitespace(c rune) bool {
	switch c {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0x85, 0xA0, 0x1680,
		0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
		return true
	}
	return c >= 0x2000 && c <= 0x200A
}

func computeFlags(c rune) cpFlags {
	if c < 0 || c >= maxCodepoint {
		return 0
	}
	var f cpFlags
	switch {
	case unicode15_1Letter(c):
		f = cpLetter
	case unicode15_1Symbol(c):
		f = cpSymbol
	case unicode.IsLetter(c):
		f = cpLetter
	case unicode.IsNumber(c):
		f = cpNumber
	case unicode.IsMark(c):
		f = cpMark
	case unicode.IsPunct(c):
		f = cpPunct
	case unicode.IsSymbol(c):
		f = cpSymbol
	case unicode.In(c, unicode.Zs, unicode.Zl, unicode.Zp):
		f = cpSeparator
	case unicode.In(c, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs):
		f = cpControl
	default:
		f = cpUndefined
	}
	if isWhitespace(c) {
		f |= cpWhitespace
	}
	return f
}

// Go's unicode tables are Unicode 15.0; llama.cpp's unicode-data.cpp is
// generated from 15.1, which added 627 code points: CJK Unified Ideographs
// Extension I (Lo) and five ideographic description characters (So).
func unicode15_1Letter(c rune) bool { return c >= 0x2EBF0 && c <= 0x2EE5D }
func unicode15_1Symbol(c rune) bool { return (c >= 0x2FFC && c <= 0x2FFF) || c == 0x31EF }

// bmpFlags caches the flags of the Basic Multilingual Plane; the rest are
// computed on demand (rare in real text).
var (
	bmpOnce  sync.Once
	bmpTable []cpFlags
)

func loadBMP() {
	bmpTable = make([]cpFlags, 0x10000)
	for c := range bmpTable {
		bmpTable[c] = computeFlags(rune(c))
	}
}

func flagsOf(c rune) cpFlags {
	if c >= 0 && c < 0x10000 {
		bmpOnce.Do(loadBMP)
		return bmpTable[c]
	}
	return computeFlags(c)
}

// decodeLlama decodes UTF-8 the way llama.cpp's unicode_cpts_from_utf8 does,
// which differs from Go's decoder: overlong forms and surrogates are accepted
// as the code point they spell, and each byte that starts no well-formed
// sequence becomes U+FFFD. Sequences that spell a value past U+10FFFF, on
// which llama.cpp throws, are treated as invalid bytes here.
func decodeLlama(s string, dst []rune) []rune {
	for i := 0; i < len(s); {
		b0 := s[i]
		if b0 < 0x80 {
			dst = append(dst, rune(b0))
			i++
			continue
		}
		c, n := rune(0xFFFD), 1
		switch {
		case b0&0x40 == 0: // stray continuation byte
		case b0&0x20 == 0:
			if i+1 < len(s) && s[i+1]&0xC0 == 0x80 {
				c, n = rune(b0&0x1F)<<6|rune(s[i+1]&0x3F), 2
			}
		case b0&0x10 == 0:
			if i+2 < len(s) && s[i+1]&0xC0 == 0x80 && s[i+2]&0xC0 == 0x80 {
				c, n = rune(b0&0x0F)<<12|rune(s[i+1]&0x3F)<<6|rune(s[i+2]&0x3F), 3
			}
		case b0&0x08 == 0:
			if i+3 < len(s) && s[i+1]&0xC0 == 0x80 && s[i+2]&0xC0 == 0x80 && s[i+3]&0xC0 == 0x80 {
				v := rune(b0&0x07)<<18 | rune(s[i+1]&0x3F)<<12 | rune(s[i+2]&0x3F)<<6 | rune(s[i+3]&0x3F)
				if v < maxCodepoint {
					c, n = v, 4
				}
			}
		}
		dst = append(dst, c)
		i += n
	}
	return dst
}

// appendCodepoint encodes c like llama.cpp's unicode_cpt_to_utf8: shortest
// form, surrogates included (Go's utf8.AppendRune would replace them).
func appendCodepoint(b []byte, c rune) []byte {
	switch {
	case c < 0x80:
		return append(b, byte(c))
	case c < 0x800:
		return append(b, 0xC0|byte(c>>6), 0x80|byte(c&0x3F))
	case c < 0x10000:
		return append(b, 0xE0|byte(c>>12), 0x80|byte(c>>6&0x3F), 0x80|byte(c&0x3F))
	default:
		return append(b, 0xF0|byte(c>>18), 0x80|byte(c>>12&0x3F), 0x80|byte(c>>6&0x3F), 0x80|byte(c&0x3F))
	}
}

// codepointLen is the length of appendCodepoint's encoding of c.
func codepointLen(c rune) int {
	switch {
	case c < 0x80:
		return 1
	case c < 0x800:
		return 2
	case c < 0x10000:
		return 3
	default:
		return 4
	}
}

// utf8SeqLen is llama.cpp's unicode_len_utf8: the length a sequence claims
// from its first byte alone (continuation bytes count as 1).
func utf8SeqLen(b byte) int {
	switch b >> 4 {
	case 0xC, 0xD:
		return 2
	case 0xE:
		return 3
	case 0xF:
		return 4
	}
	return 1
}
