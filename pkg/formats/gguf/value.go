package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Value is one metadata value. Its payload stays in the file's bytes until an
// accessor decodes it.
type Value struct {
	Type ValueType
	Elem ValueType // element type when Type == TypeArray
	Len  int       // element count when Type == TypeArray
	raw  []byte    // scalar bytes, string bytes, or the encoded array elements
}

// Scalar constructors, used by the writer and tests.

func U8(v uint8) Value { return Value{Type: TypeUint8, raw: []byte{v}} }
func I8(v int8) Value  { return Value{Type: TypeInt8, raw: []byte{byte(v)}} }
func U16(v uint16) Value {
	return Value{Type: TypeUint16, raw: binary.LittleEndian.AppendUint16(nil, v)}
}
func I16(v int16) Value {
	return Value{Type: TypeInt16, raw: binary.LittleEndian.AppendUint16(nil, uint16(v))}
}
func I64(v int64) Value {
	return Value{Type: TypeInt64, raw: binary.LittleEndian.AppendUint64(nil, uint64(v))}
}
func F64(v float64) Value {
	return Value{Type: TypeFloat64, raw: binary.LittleEndian.AppendUint64(nil, math.Float64bits(v))}
}
func U32(v uint32) Value {
	return Value{Type: TypeUint32, raw: binary.LittleEndian.AppendUint32(nil, v)}
}
func U64(v uint64) Value {
	return Value{Type: TypeUint64, raw: binary.LittleEndian.AppendUint64(nil, v)}
}
func I32(v int32) Value {
	return Value{Type: TypeInt32, raw: binary.LittleEndian.AppendUint32(nil, uint32(v))}
}
func F32(v float32) Value {
	return Value{Type: TypeFloat32, raw: binary.LittleEndian.AppendUint32(nil, math.Float32bits(v))}
}
func Bool(v bool) Value {
	b := byte(0)
	if v {
		b = 1
	}
	return Value{Type: TypeBool, raw: []byte{b}}
}
func Str(s string) Value { return Value{Type: TypeString, raw: []byte(s)} }

// Strs builds an array of strings.
func Strs(ss []string) Value {
	var raw []byte
	for _, s := range ss {
		raw = binary.LittleEndian.AppendUint64(raw, uint64(len(s)))
		raw = append(raw, s...)
	}
	return Value{Type: TypeArray, Elem: TypeString, Len: len(ss), raw: raw}
}

// F32s builds an array of f32.
func F32s(fs []float32) Value {
	raw := make([]byte, 0, 4*len(fs))
	for _, f := range fs {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
	}
	return Value{Type: TypeArray, Elem: TypeFloat32, Len: len(fs), raw: raw}
}

// I32s builds an array of i32.
func I32s(is []int32) Value {
	raw := make([]byte, 0, 4*len(is))
	for _, v := range is {
		raw = binary.LittleEndian.AppendUint32(raw, uint32(v))
	}
	return Value{Type: TypeArray, Elem: TypeInt32, Len: len(is), raw: raw}
}

// Arr builds an array of elements of type elem (which may itself be
// TypeArray: each element is then an array with its own element type). The
// element type is explicit so that empty arrays have one. It panics if an
// element has another type: that is a bug in the caller, not bad input.
func Arr(elem ValueType, elems ...Value) Value {
	var raw []byte
	for i, e := range elems {
		if e.Type != elem {
			panic(fmt.Sprintf("gguf.Arr: element %d is %s, want %s", i, e.Type, elem))
		}
		raw = appendPayload(raw, e)
	}
	return Value{Type: TypeArray, Elem: elem, Len: len(elems), raw: raw}
}

// appendPayload appends the encoding of v without its type tag: what
// follows the tag in a metadata entry, or an element inside an array.
func appendPayload(b []byte, v Value) []byte {
	switch v.Type {
	case TypeString:
		b = binary.LittleEndian.AppendUint64(b, uint64(len(v.raw)))
	case TypeArray:
		b = binary.LittleEndian.AppendUint32(b, uint32(v.Elem))
		b = binary.LittleEndian.AppendUint64(b, uint64(v.Len))
	}
	return append(b, v.raw...)
}

// payloadSize is len(appendPayload(nil, v)).
func payloadSize(v Value) int {
	switch v.Type {
	case TypeString:
		return 8 + len(v.raw)
	case TypeArray:
		return 12 + len(v.raw)
	}
	return len(v.raw)
}

// RawValue builds a value from its encoded payload; for the writer's tests of
// hostile inputs. The payload is not checked.
func RawValue(typ, elem ValueType, n int, payload []byte) Value {
	return Value{Type: typ, Elem: elem, Len: n, raw: payload}
}

// Payload returns the encoded bytes of the value (without type tags).
func (v Value) Payload() []byte { return v.raw }

func scalarInt(t ValueType, b []byte) (int64, uint64, bool, bool) {
	if len(b) != t.fixedSize() { // a zero Value or a bad RawValue
		return 0, 0, false, false
	}
	switch t {
	case TypeUint8:
		return int64(b[0]), uint64(b[0]), true, true
	case TypeInt8:
		x := int8(b[0])
		return int64(x), uint64(x), x >= 0, true
	case TypeUint16:
		x := binary.LittleEndian.Uint16(b)
		return int64(x), uint64(x), true, true
	case TypeInt16:
		x := int16(binary.LittleEndian.Uint16(b))
		return int64(x), uint64(x), x >= 0, true
	case TypeUint32:
		x := binary.LittleEndian.Uint32(b)
		return int64(x), uint64(x), true, true
	case TypeInt32:
		x := int32(binary.LittleEndian.Uint32(b))
		return int64(x), uint64(x), x >= 0, true
	case TypeUint64:
		x := binary.LittleEndian.Uint64(b)
		return int64(x), x, true, x <= math.MaxInt64
	case TypeInt64:
		x := int64(binary.LittleEndian.Uint64(b))
		return x, uint64(x), x >= 0, true
	}
	return 0, 0, false, false
}

// Uint returns a non-negative integer of any width.
func (v Value) Uint() (uint64, bool) {
	_, u, nonNeg, _ := scalarInt(v.Type, v.raw)
	return u, nonNeg
}

// Int returns an integer of any width that fits int64.
func (v Value) Int() (int64, bool) {
	i, _, _, fits := scalarInt(v.Type, v.raw)
	return i, fits
}

// Float returns a float, or an integer converted to float.
func (v Value) Float() (float64, bool) {
	if len(v.raw) != v.Type.fixedSize() {
		return 0, false
	}
	switch v.Type {
	case TypeFloat32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(v.raw))), true
	case TypeFloat64:
		return math.Float64frombits(binary.LittleEndian.Uint64(v.raw)), true
	}
	if i, ok := v.Int(); ok {
		return float64(i), true
	}
	return 0, false
}

// Bool returns a bool.
func (v Value) Bool() (bool, bool) {
	if v.Type != TypeBool || len(v.raw) != 1 {
		return false, false
	}
	return v.raw[0] == 1, true
}

// Str returns a string value.
func (v Value) Str() (string, bool) {
	if v.Type != TypeString {
		return "", false
	}
	return string(v.raw), true
}

// Strings returns an array of strings, copied.
func (v Value) Strings() ([]string, bool) {
	if v.Type != TypeArray || v.Elem != TypeString {
		return nil, false
	}
	// Every element takes at least its 8-byte length; a Len the payload
	// cannot hold only comes from RawValue.
	if v.Len < 0 || v.Len > len(v.raw)/8 {
		return nil, false
	}
	out := make([]string, v.Len)
	b := v.raw
	for i := range out {
		if len(b) < 8 {
			return nil, false
		}
		n := binary.LittleEndian.Uint64(b)
		if n > uint64(len(b)-8) {
			return nil, false
		}
		out[i] = string(b[8 : 8+n])
		b = b[8+n:]
	}
	return out, true
}

// fixedElems reports whether v is an array of size-byte elements whose
// payload holds exactly Len of them.
func (v Value) fixedElems(size int) bool {
	return v.Type == TypeArray && v.Len >= 0 && size > 0 && v.Len <= len(v.raw)/size && v.Len*size == len(v.raw)
}

// Float32s returns an array of f32 (or f64, converted).
func (v Value) Float32s() ([]float32, bool) {
	if v.Type != TypeArray || (v.Elem != TypeFloat32 && v.Elem != TypeFloat64) || !v.fixedElems(v.Elem.fixedSize()) {
		return nil, false
	}
	out := make([]float32, v.Len)
	switch v.Elem {
	case TypeFloat32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(v.raw[4*i:]))
		}
	case TypeFloat64:
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(v.raw[8*i:])))
		}
	default:
		return nil, false
	}
	return out, true
}

// Int32s returns an array of integers that all fit int32.
func (v Value) Int32s() ([]int32, bool) {
	if v.Type != TypeArray {
		return nil, false
	}
	size := v.Elem.fixedSize()
	if size == 0 || v.Elem == TypeFloat32 || v.Elem == TypeFloat64 || v.Elem == TypeBool || !v.fixedElems(size) {
		return nil, false
	}
	out := make([]int32, v.Len)
	for i := range out {
		x, ok := Value{Type: v.Elem, raw: v.raw[i*size : (i+1)*size]}.Int()
		if !ok || x < math.MinInt32 || x > math.MaxInt32 {
			return nil, false
		}
		out[i] = int32(x)
	}
	return out, true
}

// Values returns the elements of an array as Values (any element type,
// including nested arrays).
func (v Value) Values() ([]Value, bool) { return v.elements(-1) }

// elements decodes the first max elements of an array (all when max < 0).
func (v Value) elements(max int) ([]Value, bool) {
	// Every element takes at least one byte, so a larger Len (possible
	// only through RawValue) is not decodable.
	if v.Type != TypeArray || v.Len < 0 || v.Len > len(v.raw) {
		return nil, false
	}
	n := v.Len
	if max >= 0 && max < n {
		n = max
	}
	out := make([]Value, 0, n)
	r := &reader{buf: v.raw}
	for range n {
		// A nested array is encoded like a top-level one minus the type
		// tag, which is what value reads for TypeArray.
		e, err := r.value(v.Elem, "", 0)
		if err != nil {
			return nil, false
		}
		out = append(out, e)
	}
	return out, true
}

// String formats the value for humans (inspect); long arrays are abbreviated.
func (v Value) String() string {
	switch v.Type {
	case TypeString:
		s := string(v.raw)
		if len(s) > 120 {
			s = s[:120] + "…"
		}
		return strconv.Quote(s)
	case TypeBool:
		b, _ := v.Bool()
		return strconv.FormatBool(b)
	case TypeFloat32, TypeFloat64:
		f, _ := v.Float()
		return strconv.FormatFloat(f, 'g', -1, 64)
	case TypeArray:
		const show = 6
		// Decode only what is shown: a vocabulary has 150k entries.
		vals, ok := v.elements(show)
		if !ok {
			return fmt.Sprintf("[%d × %s]", v.Len, v.Elem)
		}
		parts := make([]string, 0, show)
		for i, e := range vals {
			if i == show {
				break
			}
			parts = append(parts, e.String())
		}
		s := "[" + strings.Join(parts, ", ")
		if v.Len > show {
			s += fmt.Sprintf(", … (%d × %s)", v.Len, v.Elem)
		}
		return s + "]"
	}
	if i, ok := v.Int(); ok {
		return strconv.FormatInt(i, 10)
	}
	if u, ok := v.Uint(); ok {
		return strconv.FormatUint(u, 10)
	}
	return "?"
}
