package chat

import (
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/ardanlabs/jinja"
)

// The jinja engine's tojson with indent= goes through Go maps: it sorts
// the members and escapes <, > and &, where transformers (Python's
// json.dumps) keeps the order and the characters. Llama-3.1's template
// writes every tool definition with tojson(indent=4), so the prompt would
// differ from the one the model was trained on. Compile rewrites those
// calls to this package's own filter, tojsonIndent, which the engine finds
// among the render's variables.

const tojsonIndent = "corelm_tojson_indent"

var indentCall = regexp.MustCompile(`\|\s*tojson\(\s*indent\s*=\s*(\d+)\s*\)`)

func rewriteTojson(src string) string {
	return indentCall.ReplaceAllString(src, "| "+tojsonIndent+"($1)")
}

func tojsonIndentFilter(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	if len(args) == 0 {
		return jinja.NewString(""), nil
	}
	indent := 4
	if len(args) > 1 && args[1].IsInt() {
		indent = int(args[1].AsInt())
	}
	var b strings.Builder
	writeIndented(&b, args[0], strings.Repeat(" ", indent), "")
	return jinja.NewString(b.String()), nil
}

// writeIndented writes v as json.dumps(v, indent=n, ensure_ascii=False)
// does.
func writeIndented(b *strings.Builder, v jinja.Value, unit, prefix string) {
	switch {
	case v.IsList():
		items := v.AsList().Items
		if len(items) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteString("[")
		for i, it := range items {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString("\n" + prefix + unit)
			writeIndented(b, it, unit, prefix+unit)
		}
		b.WriteString("\n" + prefix + "]")
	case v.IsDict():
		d := v.AsDict()
		if d.Len() == 0 {
			b.WriteString("{}")
			return
		}
		b.WriteString("{")
		for i, k := range d.OrderedKeys() {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString("\n" + prefix + unit)
			writeString(b, k)
			b.WriteString(": ")
			x, _ := d.Get(k)
			writeIndented(b, x, unit, prefix+unit)
		}
		b.WriteString("\n" + prefix + "}")
	case v.IsString():
		writeString(b, v.AsString())
	case v.IsBool():
		b.WriteString(strconv.FormatBool(v.AsBool()))
	case v.IsInt():
		b.WriteString(strconv.FormatInt(v.AsInt(), 10))
	case v.IsFloat():
		f := v.AsFloat()
		s := strconv.FormatFloat(f, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eEIN") && !math.IsInf(f, 0) {
			s += ".0" // Python writes floats with a point
		}
		b.WriteString(s)
	default:
		b.WriteString("null")
	}
}

// writeString quotes s as Python's json.dumps(ensure_ascii=False): only
// quotes, backslashes and control characters escaped.
func writeString(b *strings.Builder, s string) {
	var buf bytes.Buffer
	e := json.NewEncoder(&buf)
	e.SetEscapeHTML(false)
	_ = e.Encode(s)
	b.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}
