package grammar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// jvalue is a JSON value that keeps the order of object members: a schema's
// "properties" order is the order the model writes them in.
type jvalue struct {
	kind jkind
	str  string    // jString; jNumber: the literal
	b    bool      // jBool
	arr  []*jvalue // jArray
	obj  []jmember // jObject
}

type jmember struct {
	key string
	val *jvalue
}

type jkind uint8

const (
	jNull jkind = iota
	jBool
	jNumber
	jString
	jArray
	jObject
)

var jkindNames = [...]string{"null", "boolean", "number", "string", "array", "object"}

func (k jkind) String() string { return jkindNames[k] }

func (v *jvalue) get(key string) (*jvalue, bool) {
	if v.kind != jObject {
		return nil, false
	}
	for _, m := range v.obj {
		if m.key == key {
			return m.val, true
		}
	}
	return nil, false
}

// parseJSON reads one JSON document, refusing duplicate keys and trailing
// data.
func parseJSON(data []byte) (*jvalue, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	v, err := readJSON(d)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the JSON value")
	}
	return v, nil
}

func readJSON(d *json.Decoder) (*jvalue, error) {
	t, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch t := t.(type) {
	case nil:
		return &jvalue{kind: jNull}, nil
	case bool:
		return &jvalue{kind: jBool, b: t}, nil
	case json.Number:
		return &jvalue{kind: jNumber, str: t.String()}, nil
	case string:
		return &jvalue{kind: jString, str: t}, nil
	case json.Delim:
		switch t {
		case '[':
			v := &jvalue{kind: jArray}
			for d.More() {
				e, err := readJSON(d)
				if err != nil {
					return nil, err
				}
				v.arr = append(v.arr, e)
			}
			_, err := d.Token()
			return v, err
		case '{':
			v := &jvalue{kind: jObject}
			for d.More() {
				kt, err := d.Token()
				if err != nil {
					return nil, err
				}
				k := kt.(string)
				if _, dup := v.get(k); dup {
					return nil, fmt.Errorf("duplicate key %q", k)
				}
				e, err := readJSON(d)
				if err != nil {
					return nil, err
				}
				v.obj = append(v.obj, jmember{k, e})
			}
			_, err := d.Token()
			return v, err
		}
	}
	return nil, fmt.Errorf("unexpected JSON token %v", t)
}

// encode writes v as compact JSON (the form enum and const values are
// generated in).
func (v *jvalue) encode(b *strings.Builder) {
	switch v.kind {
	case jNull:
		b.WriteString("null")
	case jBool:
		fmt.Fprint(b, v.b)
	case jNumber:
		b.WriteString(v.str)
	case jString:
		writeJSONString(b, v.str)
	case jArray:
		b.WriteByte('[')
		for i, e := range v.arr {
			if i > 0 {
				b.WriteByte(',')
			}
			e.encode(b)
		}
		b.WriteByte(']')
	case jObject:
		b.WriteByte('{')
		for i, m := range v.obj {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(b, m.key)
			b.WriteByte(':')
			m.val.encode(b)
		}
		b.WriteByte('}')
	}
}

func writeJSONString(b *strings.Builder, s string) {
	var buf bytes.Buffer
	e := json.NewEncoder(&buf)
	e.SetEscapeHTML(false)
	_ = e.Encode(s) // a Go string always encodes
	b.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}
