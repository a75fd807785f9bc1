package grammar

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Number ranges. json-integer has at most 16 digits, so every bound is
// brought into ±(10^16 − 1) and computed exactly in int64.
const maxInt16 = 9999999999999999

// bounded is the grammar of numbers within s's minimum, maximum,
// exclusiveMinimum and exclusiveMaximum (draft 6+ numeric forms).
//
// Integers get an exact range grammar. For type number the language is a
// sound subset: the integers of the range, and decimals x.ddd whose
// integer part x ≥ 0 has x+1 within the range; no exponents. Every such
// number lies in the range; not every number of the range is produced.
func (c *schemaConv) bounded(s *jvalue, path, t string) (string, error) {
	lo, hi := int64(-maxInt16), int64(maxInt16)
	fracHi := hi // the largest x for which every x.ddd is in range
	for _, kw := range []string{"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"} {
		v, ok := s.get(kw)
		if !ok {
			continue
		}
		if v.kind != jNumber {
			return "", invalid(ptr(path, kw), "%s must be a number", kw)
		}
		f, err := strconv.ParseFloat(v.str, 64)
		if err != nil || math.Abs(f) > maxInt16 {
			return "", unsupported(ptr(path, kw), "%s %s beyond ±%d", kw, v.str, int64(maxInt16))
		}
		switch kw {
		case "minimum":
			lo = max(lo, int64(math.Ceil(f)))
		case "exclusiveMinimum":
			lo = max(lo, int64(math.Floor(f))+1)
		case "maximum":
			hi = min(hi, int64(math.Floor(f)))
			fracHi = min(fracHi, int64(math.Floor(f))-1)
		case "exclusiveMaximum":
			hi = min(hi, int64(math.Ceil(f))-1)
			fracHi = min(fracHi, int64(math.Floor(f))-1)
		}
	}
	if lo > hi {
		return "", unsupported(path, "range that holds no integer (%d > %d once the bounds are rounded inwards; numbers between integers are not produced)", lo, hi)
	}
	alts := intRange(lo, hi)
	if t == "number" {
		if fl := max(lo, 0); fl <= fracHi {
			frac := intRange(fl, fracHi)
			alts = append(alts, "("+strings.Join(frac, " | ")+`) "." [0-9]{1,16}`)
		}
	}
	return c.rule(t+"-range", strings.Join(alts, " | ")), nil
}

// intRange returns alternatives spelling exactly the integers lo..hi in
// JSON form (no leading zeros, no "-0").
func intRange(lo, hi int64) []string {
	var out []string
	if lo < 0 {
		nhi := min(hi, -1)
		for _, a := range natRange(-nhi, -lo) {
			out = append(out, `"-" `+a)
		}
		lo = 0
	}
	if lo <= hi {
		out = append(out, natRange(lo, hi)...)
	}
	return out
}

// natRange spells the naturals a..b, split by digit count.
func natRange(a, b int64) []string {
	var out []string
	for a <= b {
		n := len(strconv.FormatInt(a, 10))
		top := int64(math.Pow10(n)) - 1
		end := min(b, top)
		out = append(out, digitRange(strconv.FormatInt(a, 10), strconv.FormatInt(end, 10))...)
		a = end + 1
	}
	return out
}

// digitRange spells the fixed-length digit strings lo..hi.
func digitRange(lo, hi string) []string {
	if lo == hi {
		return []string{gbnfLiteral(lo)}
	}
	n := len(lo)
	if strings.Trim(lo, "0") == "" && strings.Trim(hi, "9") == "" {
		return []string{fmt.Sprintf("[0-9]{%d}", n)}
	}
	if lo[0] == hi[0] {
		var out []string
		for _, r := range digitRange(lo[1:], hi[1:]) {
			out = append(out, gbnfLiteral(lo[:1])+" "+r)
		}
		return out
	}
	if n == 1 {
		return []string{fmt.Sprintf("[%c-%c]", lo[0], hi[0])}
	}
	var out []string
	nines, zeros := strings.Repeat("9", n-1), strings.Repeat("0", n-1)
	for _, r := range digitRange(lo[1:], nines) {
		out = append(out, gbnfLiteral(lo[:1])+" "+r)
	}
	if lo[0]+1 <= hi[0]-1 {
		out = append(out, fmt.Sprintf("[%c-%c] [0-9]{%d}", lo[0]+1, hi[0]-1, n-1))
	}
	for _, r := range digitRange(zeros, hi[1:]) {
		out = append(out, gbnfLiteral(hi[:1])+" "+r)
	}
	return out
}
