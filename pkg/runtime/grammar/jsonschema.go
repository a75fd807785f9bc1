package grammar

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// jsonRules are the JSON building blocks every schema grammar shares.
// Whitespace is bounded (one space, or a newline and up to 20 blanks of
// indentation) so a model cannot pad forever; numbers have at most 16
// integer digits, 16 fraction digits and a two-digit exponent, which keeps
// every generated number exact in a float64-based validator; \u escapes
// never name a surrogate, so every string decodes to what it spells.
const jsonRules = `ws ::= "" | " " | "\n" [ \t]{0,20}
json-char ::= [^"\\\x00-\x1f] | "\\" (["\\/bfnrt] | "u" ([0-9a-cA-C] json-hex{3} | [dD] [0-7] json-hex{2} | [eEfF] json-hex{3}))
json-hex ::= [0-9a-fA-F]
json-string ::= "\"" json-char* "\""
json-integer ::= "-"? ("0" | [1-9] [0-9]{0,15})
json-number ::= json-integer ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,2})?
json-boolean ::= "true" | "false"
json-null ::= "null"
json-value ::= json-object | json-array | json-string | json-number | json-boolean | json-null
json-object ::= "{" ws (json-string ws ":" ws json-value ws ("," ws json-string ws ":" ws json-value ws)*)? "}"
json-array ::= "[" ws (json-value ws ("," ws json-value ws)*)? "]"
`

// JSONObjectGBNF is the grammar of any JSON object (OpenAI's json_object
// response format).
const JSONObjectGBNF = "root ::= json-object\n" + jsonRules

// JSONObject returns the compiled JSONObjectGBNF.
func JSONObject() *Grammar { return MustParse(JSONObjectGBNF) }

// FromJSONSchema compiles a JSON Schema document (see JSONSchemaGBNF).
func FromJSONSchema(schema []byte) (*Grammar, error) {
	src, err := JSONSchemaGBNF(schema)
	if err != nil {
		return nil, err
	}
	return Parse(src)
}

// JSONSchemaGBNF translates a JSON Schema into GBNF whose sentences are
// JSON documents valid under the schema. Every keyword that constrains
// values is either enforced or refused with an error wrapping
// ErrUnsupported that names it and where it is (a JSON pointer); only
// annotations (title, description, examples, ...) are passed over.
//
// The language is a subset of the schema's where the schema leaves room:
// properties are written in the schema's order; an object schema with
// properties allows no other members unless additionalProperties says so
// (as llama.cpp does); whitespace and number lengths are bounded (see
// jsonRules). Every sentence validates; not every valid document is a
// sentence.
func JSONSchemaGBNF(schema []byte) (string, error) {
	root, err := parseJSON(schema)
	if err != nil {
		return "", fmt.Errorf("%w: the JSON Schema is not valid JSON: %v", ErrSyntax, err)
	}
	c := &schemaConv{root: root, refs: map[string]string{}}
	body, err := c.visit(root, "#")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("root ::= " + body + "\n")
	for _, r := range c.rules {
		b.WriteString(r + "\n")
	}
	b.WriteString(jsonRules)
	return b.String(), nil
}

type schemaConv struct {
	root  *jvalue
	rules []string
	refs  map[string]string // $ref → its rule
	n     int
}

// Keywords that only annotate: they never make a document invalid.
var annotations = map[string]bool{
	"title": true, "description": true, "examples": true, "default": true, "$schema": true,
	"$id": true, "$comment": true, "deprecated": true, "readOnly": true, "writeOnly": true,
}

// The keywords this translation enforces, by the type they apply to ("" for
// any type).
var keywordType = map[string]string{
	"type": "", "enum": "", "const": "", "anyOf": "", "oneOf": "", "allOf": "", "$ref": "",
	"$defs": "", "definitions": "",
	"properties": "object", "required": "object", "additionalProperties": "object",
	"items": "array", "prefixItems": "array", "minItems": "array", "maxItems": "array",
	"minLength": "string", "maxLength": "string", "pattern": "string", "format": "string",
	"minimum": "number", "maximum": "number", "exclusiveMinimum": "number", "exclusiveMaximum": "number",
}

func unsupported(path, format string, a ...any) error {
	return fmt.Errorf("%w: JSON Schema %s at %s", ErrUnsupported, fmt.Sprintf(format, a...), path)
}

func invalid(path, format string, a ...any) error {
	return fmt.Errorf("%w: JSON Schema %s at %s", ErrSyntax, fmt.Sprintf(format, a...), path)
}

func (c *schemaConv) rule(hint, body string) string {
	name := c.name(hint)
	c.rules = append(c.rules, name+" ::= "+body)
	return name
}

func (c *schemaConv) name(hint string) string {
	c.n++
	var b strings.Builder
	for _, r := range hint {
		if r < 128 && isWordChar(byte(r)) {
			b.WriteRune(r)
		}
		if b.Len() >= 24 {
			break
		}
	}
	return fmt.Sprintf("s%d-%s", c.n, b.String())
}

func ptr(path, key string) string {
	return path + "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(key)
}

// visit returns a GBNF expression for the values valid under s.
func (c *schemaConv) visit(s *jvalue, path string) (string, error) {
	switch s.kind {
	case jBool:
		if s.b {
			return "json-value", nil
		}
		return "", unsupported(path, "false (no value is valid)")
	case jObject:
	default:
		return "", invalid(path, "must be an object or a boolean, not %v", s.kind)
	}
	var validation []string // keywords besides annotations and $defs
	for _, m := range s.obj {
		if annotations[m.key] || m.key == "$defs" || m.key == "definitions" {
			continue
		}
		if _, ok := keywordType[m.key]; !ok {
			return "", unsupported(path, "keyword %q", m.key)
		}
		validation = append(validation, m.key)
	}
	alone := func(kw string) error {
		for _, k := range validation {
			if k != kw {
				return unsupported(path, "keyword %q next to %q", k, kw)
			}
		}
		return nil
	}
	if ref, ok := s.get("$ref"); ok {
		if err := alone("$ref"); err != nil {
			return "", err
		}
		return c.ref(ref, ptr(path, "$ref"))
	}
	if all, ok := s.get("allOf"); ok {
		if err := alone("allOf"); err != nil {
			return "", err
		}
		if all.kind != jArray || len(all.arr) != 1 {
			return "", unsupported(ptr(path, "allOf"), "allOf with other than one subschema")
		}
		return c.visit(all.arr[0], ptr(path, "allOf")+"/0")
	}
	for _, kw := range []string{"anyOf", "oneOf"} {
		alts, ok := s.get(kw)
		if !ok {
			continue
		}
		if err := alone(kw); err != nil {
			return "", err
		}
		p := ptr(path, kw)
		if alts.kind != jArray || len(alts.arr) == 0 {
			return "", invalid(p, "%s must be a non-empty array", kw)
		}
		if kw == "oneOf" {
			if err := c.disjoint(alts.arr, p); err != nil {
				return "", err
			}
		}
		var parts []string
		for i, a := range alts.arr {
			e, err := c.visit(a, p+"/"+strconv.Itoa(i))
			if err != nil {
				return "", err
			}
			parts = append(parts, e)
		}
		return c.rule(kw, strings.Join(parts, " | ")), nil
	}
	types, err := c.types(s, path)
	if err != nil {
		return "", err
	}
	for _, kw := range []string{"const", "enum"} {
		v, ok := s.get(kw)
		if !ok {
			continue
		}
		for _, k := range validation {
			if k != kw && k != "type" {
				return "", unsupported(path, "keyword %q next to %q", k, kw)
			}
		}
		values := []*jvalue{v}
		if kw == "enum" {
			if v.kind != jArray || len(v.arr) == 0 {
				return "", invalid(ptr(path, kw), "enum must be a non-empty array")
			}
			values = v.arr
		}
		var parts []string
		for _, x := range values {
			if types[kindType(x)] || x.kind == jNumber && types["number"] {
				var b strings.Builder
				x.encode(&b)
				parts = append(parts, gbnfLiteral(b.String()))
			}
		}
		if len(parts) == 0 {
			return "", unsupported(path, "%s with no value of the allowed types", kw)
		}
		return c.rule(kw, strings.Join(parts, " | ")), nil
	}
	// Keywords of a type the schema does not allow would never apply: say
	// so rather than let the schema look stricter than it is.
	for _, k := range validation {
		if t := keywordType[k]; t != "" && !types[t] && !(t == "number" && types["integer"]) {
			return "", unsupported(path, "keyword %q, which applies to %ss, for a schema of type %s", k, t, typeList(types))
		}
	}
	var parts []string
	for _, t := range []string{"object", "array", "string", "number", "integer", "boolean", "null"} {
		if !types[t] || t == "integer" && types["number"] {
			continue
		}
		var e string
		var err error
		switch t {
		case "object":
			e, err = c.object(s, path)
		case "array":
			e, err = c.array(s, path)
		case "string":
			e, err = c.str(s, path)
		case "number", "integer":
			e, err = c.number(s, path, t)
		case "boolean":
			e = "json-boolean"
		case "null":
			e = "json-null"
		}
		if err != nil {
			return "", err
		}
		parts = append(parts, e)
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	return "(" + strings.Join(parts, " | ") + ")", nil
}

func kindType(v *jvalue) string {
	if v.kind == jNumber {
		if !strings.ContainsAny(v.str, ".eE") {
			return "integer"
		}
		return "number"
	}
	return v.kind.String()
}

func typeList(types map[string]bool) string {
	var out []string
	for t := range types {
		out = append(out, t)
	}
	slices.Sort(out)
	return strings.Join(out, "|")
}

// types is the set of JSON types s allows: its "type", or, without one,
// the types its type-specific keywords name (as llama.cpp infers them), or
// every type.
func (c *schemaConv) types(s *jvalue, path string) (map[string]bool, error) {
	types := map[string]bool{}
	valid := map[string]bool{"object": true, "array": true, "string": true, "number": true, "integer": true, "boolean": true, "null": true}
	if t, ok := s.get("type"); ok {
		list := []*jvalue{t}
		if t.kind == jArray {
			list = t.arr
		}
		for _, x := range list {
			if x.kind != jString || !valid[x.str] {
				return nil, invalid(ptr(path, "type"), "type must be a type name or a list of them")
			}
			types[x.str] = true
		}
		if len(types) == 0 {
			return nil, invalid(ptr(path, "type"), "empty type list")
		}
		return types, nil
	}
	for _, m := range s.obj {
		if t := keywordType[m.key]; t != "" {
			types[t] = true
		}
	}
	if len(types) == 0 {
		for t := range valid {
			types[t] = true
		}
	}
	return types, nil
}

// ref resolves a local reference ("#", "#/$defs/name", any JSON pointer
// into the document) to a rule, so recursive schemas become recursive rules.
func (c *schemaConv) ref(ref *jvalue, path string) (string, error) {
	if ref.kind != jString {
		return "", invalid(path, "$ref must be a string")
	}
	if name, ok := c.refs[ref.str]; ok {
		return name, nil
	}
	if ref.str != "#" && !strings.HasPrefix(ref.str, "#/") {
		return "", unsupported(path, "$ref %q (only references inside the document, #/...)", ref.str)
	}
	target := c.root
	if ref.str != "#" {
		for _, part := range strings.Split(ref.str[2:], "/") {
			part = strings.NewReplacer("~1", "/", "~0", "~").Replace(part)
			next, ok := target.get(part)
			if !ok && target.kind == jArray {
				if i, err := strconv.Atoi(part); err == nil && i >= 0 && i < len(target.arr) {
					next, ok = target.arr[i], true
				}
			}
			if !ok {
				return "", invalid(path, "$ref %q points at nothing", ref.str)
			}
			target = next
		}
	}
	name := c.name("ref-" + ref.str[strings.LastIndexByte(ref.str, '/')+1:])
	c.refs[ref.str] = name
	body, err := c.visit(target, ref.str)
	if err != nil {
		return "", err
	}
	c.rules = append(c.rules, name+" ::= "+body)
	return name, nil
}

// disjoint accepts a oneOf only when no value can match two branches, which
// it checks by the types the branches allow (or their const/enum values):
// a oneOf translated as anyOf would otherwise produce documents the schema
// rejects.
func (c *schemaConv) disjoint(branches []*jvalue, path string) error {
	type sig struct {
		types  map[string]bool
		values map[string]bool // nil: any value of the types
	}
	var sigs []sig
	for _, b := range branches {
		seen := map[*jvalue]bool{}
		for b.kind == jObject && !seen[b] {
			seen[b] = true
			ref, ok := b.get("$ref")
			if !ok || ref.kind != jString || !strings.HasPrefix(ref.str, "#") {
				break
			}
			target := c.root
			if ref.str != "#" {
				for _, part := range strings.Split(strings.TrimPrefix(ref.str, "#/"), "/") {
					if t, ok := target.get(part); ok {
						target = t
					}
				}
			}
			b = target
		}
		if b.kind != jObject {
			return unsupported(path, "oneOf with a boolean branch")
		}
		var sg sig
		ts, err := c.types(b, path)
		if err != nil {
			return err
		}
		if ts["integer"] {
			ts["number"] = true
		}
		sg.types = ts
		if v, ok := b.get("const"); ok {
			sg.values = map[string]bool{}
			var sb strings.Builder
			v.encode(&sb)
			sg.values[sb.String()] = true
		} else if v, ok := b.get("enum"); ok && v.kind == jArray {
			sg.values = map[string]bool{}
			for _, x := range v.arr {
				var sb strings.Builder
				x.encode(&sb)
				sg.values[sb.String()] = true
			}
		}
		sigs = append(sigs, sg)
	}
	for i := range sigs {
		for j := range i {
			a, b := sigs[i], sigs[j]
			if a.values != nil && b.values != nil {
				for v := range a.values {
					if b.values[v] {
						return unsupported(path, "oneOf whose branches %d and %d share the value %s (use anyOf)", j, i, v)
					}
				}
				continue
			}
			for t := range a.types {
				if b.types[t] {
					return unsupported(path, "oneOf whose branches %d and %d may both match a %s (use anyOf, or branches of distinct types)", j, i, t)
				}
			}
		}
	}
	return nil
}

func (c *schemaConv) count(s *jvalue, kw, path string) (n int, set bool, err error) {
	v, ok := s.get(kw)
	if !ok {
		return 0, false, nil
	}
	n, err = strconv.Atoi(v.str)
	if v.kind != jNumber || err != nil || n < 0 {
		return 0, false, invalid(ptr(path, kw), "%s must be a non-negative integer", kw)
	}
	if n > maxRepeat {
		return 0, false, unsupported(ptr(path, kw), "%s above %d", kw, maxRepeat)
	}
	return n, true, nil
}

func (c *schemaConv) str(s *jvalue, path string) (string, error) {
	minL, _, err := c.count(s, "minLength", path)
	if err != nil {
		return "", err
	}
	maxL, hasMax, err := c.count(s, "maxLength", path)
	if err != nil {
		return "", err
	}
	if hasMax && maxL < minL {
		return "", unsupported(path, "maxLength below minLength (no string is valid)")
	}
	if f, ok := s.get("format"); ok {
		_, lenSet := s.get("minLength")
		if _, pat := s.get("pattern"); pat || lenSet || hasMax {
			return "", unsupported(path, "format together with pattern, minLength or maxLength")
		}
		re, known := formats[f.str]
		if f.kind != jString || !known {
			return "", unsupported(ptr(path, "format"), "format %s (supported: date, time, date-time, uuid, ipv4, email)", f.str)
		}
		return c.pattern("^"+re+"$", ptr(path, "format"))
	}
	if p, ok := s.get("pattern"); ok {
		if _, lenSet := s.get("minLength"); lenSet || hasMax {
			return "", unsupported(path, "pattern together with minLength or maxLength")
		}
		if p.kind != jString {
			return "", invalid(ptr(path, "pattern"), "pattern must be a string")
		}
		return c.pattern(p.str, ptr(path, "pattern"))
	}
	switch {
	case !hasMax && minL == 0:
		return "json-string", nil
	case !hasMax:
		return fmt.Sprintf(`"\"" json-char{%d,} "\""`, minL), nil
	}
	return fmt.Sprintf(`"\"" json-char{%d,%d} "\""`, minL, maxL), nil
}

// formats are the supported "format" values as regexes of a subset of the
// strings each format accepts, so that a validator asserting formats
// accepts every one: dates never name a day a month lacks (February stops
// at 28), times and date-times have no leap second, emails a plain
// lowercase dot-atom local part and domain within the RFC's lengths.
var formats = func() map[string]string {
	date := `[0-9]{4}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))`
	time := `([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])`
	octet := `(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])`
	return map[string]string{
		"date":      date,
		"time":      time,
		"date-time": date + "T" + time,
		"uuid":      `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`,
		"ipv4":      `(` + octet + `\.){3}` + octet,
		// Local part at most 50 characters, labels at most 41, four labels
		// at most: inside RFC 5321's 64, 63 and 253.
		"email": `[a-z0-9]{1,16}([._+-][a-z0-9]{1,16}){0,2}@[a-z0-9]{1,20}(-[a-z0-9]{1,20})?(\.[a-z0-9]{1,20}(-[a-z0-9]{1,20})?){0,2}\.[a-z]{2,24}`,
	}
}()

// pattern is a JSON string whose value matches the regex p. JSON Schema
// patterns are not anchored: an end without ^ or $ may have any text.
func (c *schemaConv) pattern(p, path string) (string, error) {
	r, err := parseRegex(p)
	if err != nil {
		return "", fmt.Errorf("%w (at %s)", err, path)
	}
	r, start, end := stripAnchors(r)
	rc := &regexConv{jsonString: true}
	body, err := rc.expr(r)
	if err != nil {
		return "", fmt.Errorf("%w (at %s)", err, path)
	}
	if !start {
		body = "json-char* " + body
	}
	if !end {
		body += " json-char*"
	}
	return c.rule("pattern", `"\"" `+body+` "\""`), nil
}

func (c *schemaConv) number(s *jvalue, path, t string) (string, error) {
	for _, kw := range []string{"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"} {
		if _, ok := s.get(kw); ok {
			return c.bounded(s, path, t)
		}
	}
	return "json-" + t, nil
}

func (c *schemaConv) array(s *jvalue, path string) (string, error) {
	minN, _, err := c.count(s, "minItems", path)
	if err != nil {
		return "", err
	}
	maxN, hasMax, err := c.count(s, "maxItems", path)
	if err != nil {
		return "", err
	}
	if !hasMax {
		maxN = -1
	} else if maxN < minN {
		return "", unsupported(path, "maxItems below minItems (no array is valid)")
	}
	var prefix []string
	if p, ok := s.get("prefixItems"); ok {
		if p.kind != jArray {
			return "", invalid(ptr(path, "prefixItems"), "prefixItems must be an array")
		}
		for i, x := range p.arr {
			e, err := c.visit(x, ptr(path, "prefixItems")+"/"+strconv.Itoa(i))
			if err != nil {
				return "", err
			}
			prefix = append(prefix, e)
		}
	}
	item := "json-value"
	if it, ok := s.get("items"); ok {
		if it.kind == jBool && !it.b {
			item = ""
			if maxN < 0 || maxN > len(prefix) {
				maxN = len(prefix)
			}
			if minN > maxN {
				return "", unsupported(path, "minItems above the prefixItems allowed by items: false")
			}
		} else if item, err = c.visit(it, ptr(path, "items")); err != nil {
			return "", err
		}
	}
	// elems(i) is the grammar of the elements from index i on.
	var elems func(i int) string
	elems = func(i int) string {
		if maxN >= 0 && i >= maxN {
			return `""`
		}
		sep := `"," ws `
		if i == 0 {
			sep = ""
		}
		if i < len(prefix) {
			e := sep + prefix[i] + " ws " + elems(i+1)
			if i < minN {
				return e
			}
			return "(" + e + ")?"
		}
		lo := max(minN-i, 0)
		hi := -1
		if maxN >= 0 {
			hi = maxN - i
		}
		if item == "" || hi == 0 {
			return `""`
		}
		rep := func(lo, hi int) string {
			if hi < 0 {
				return fmt.Sprintf("{%d,}", lo)
			}
			return fmt.Sprintf("{%d,%d}", lo, hi)
		}
		if i > 0 {
			return "(" + sep + item + " ws)" + rep(lo, hi)
		}
		first := item + " ws"
		restHi := -1
		if hi > 0 {
			restHi = hi - 1
		}
		e := first + ` ("," ws ` + item + " ws)" + rep(max(lo-1, 0), restHi)
		if lo == 0 {
			return "(" + e + ")?"
		}
		return e
	}
	return c.rule("array", `"[" ws `+elems(0)+` "]"`), nil
}

func (c *schemaConv) object(s *jvalue, path string) (string, error) {
	props, hasProps := s.get("properties")
	if hasProps && props.kind != jObject {
		return "", invalid(ptr(path, "properties"), "properties must be an object")
	}
	required := map[string]bool{}
	if r, ok := s.get("required"); ok {
		if r.kind != jArray {
			return "", invalid(ptr(path, "required"), "required must be an array of names")
		}
		for _, x := range r.arr {
			if x.kind != jString {
				return "", invalid(ptr(path, "required"), "required must be an array of names")
			}
			if !hasProps {
				return "", unsupported(ptr(path, "required"), "required property %q without properties", x.str)
			}
			if _, ok := props.get(x.str); !ok {
				return "", unsupported(ptr(path, "required"), "required property %q that is not in properties", x.str)
			}
			required[x.str] = true
		}
	}
	// extra is the grammar of a member outside properties ("" = none).
	extra := ""
	addl, hasAddl := s.get("additionalProperties")
	switch {
	case hasAddl && addl.kind == jBool && !addl.b:
	case !hasAddl && hasProps:
		// As llama.cpp: members the schema names, and no others.
	default:
		value := "json-value"
		if hasAddl && addl.kind != jBool {
			var err error
			if value, err = c.visit(addl, ptr(path, "additionalProperties")); err != nil {
				return "", err
			}
		}
		key := "json-string"
		if hasProps && len(props.obj) > 0 {
			key = c.otherKey(props)
		}
		extra = key + ` ws ":" ws ` + value + " ws"
	}
	var names, values []string
	if hasProps {
		for _, m := range props.obj {
			e, err := c.visit(m.val, ptr(ptr(path, "properties"), m.key))
			if err != nil {
				return "", err
			}
			var b strings.Builder
			writeJSONString(&b, m.key)
			names = append(names, m.key)
			values = append(values, gbnfLiteral(b.String())+` ws ":" ws `+e+" ws")
		}
	}
	// rest[i][first] is the grammar of the members from property i on,
	// first telling whether none has been written yet (no comma before the
	// next one). Optional properties may be left out; the order is the
	// schema's.
	n := len(names)
	rest := make([][2]string, n+1)
	sep := [2]string{`"," ws `, ""}
	for f := range 2 {
		if extra == "" {
			rest[n][f] = `""`
			continue
		}
		rest[n][f] = "(" + sep[f] + extra + ` ("," ws ` + extra + ")*)?"
	}
	for i := n - 1; i >= 0; i-- {
		for f := range 2 {
			with := sep[f] + values[i] + " " + rest[i+1][0]
			body := with
			if !required[names[i]] {
				body = with + " | " + rest[i+1][f]
			}
			rest[i][f] = c.rule("obj", body)
		}
	}
	return c.rule("object", `"{" ws `+rest[0][1]+` "}"`), nil
}

// otherKey is a JSON string that is none of props' names: a trie of the
// names, where each node may end (unless a name ends there) or leave the
// trie with any other character. Escapes are not used in such keys, so a
// key's text is its value.
func (c *schemaConv) otherKey(props *jvalue) string {
	type node struct {
		next map[rune]*node
		end  bool
	}
	root := &node{next: map[rune]*node{}}
	for _, m := range props.obj {
		n := root
		for _, r := range m.key {
			if n.next[r] == nil {
				n.next[r] = &node{next: map[rune]*node{}}
			}
			n = n.next[r]
		}
		n.end = true
	}
	free := "[^\"\\\\\\x00-\\x1f]*"
	var walk func(n *node) string
	walk = func(n *node) string {
		var alts []string
		if !n.end {
			alts = append(alts, `""`)
		}
		cut := []rng{{0, 0x1f}, {'"', '"'}, {'\\', '\\'}}
		var keys []rune
		for r := range n.next {
			keys = append(keys, r)
			cut = append(cut, rng{r, r})
		}
		slices.Sort(keys)
		others := negate(normalize(cut))
		alts = append(alts, gbnfClass(withoutSurrogates(others))+" "+free)
		for _, r := range keys {
			if r < 0x20 || r == '"' || r == '\\' {
				continue // names with these need escapes, which keys here never use
			}
			alts = append(alts, gbnfLiteral(string(r))+" "+walk(n.next[r]))
		}
		return c.rule("key", strings.Join(alts, " | "))
	}
	return `"\"" ` + walk(root) + ` "\""`
}
