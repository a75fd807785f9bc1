// Package grammar compiles the languages a generation's output can be held
// to — GBNF grammars (llama.cpp's format), JSON Schemas, JSON objects and
// regular expressions — into one byte-level context-free grammar, and
// recognises prefixes of it byte by byte (Matcher).
//
// Everything is fail-closed: a construct or schema keyword that is not
// supported is refused with an error wrapping ErrUnsupported that names it,
// never ignored; malformed input wraps ErrSyntax. The translations produce
// a subset of a schema's valid documents where the schema leaves a choice
// (property order, whitespace and number lengths), so that every sentence
// validates. docs/structured-output.md has the coverage table.
package grammar
