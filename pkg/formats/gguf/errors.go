package gguf

import (
	"errors"
	"fmt"
)

// Sentinel errors; every error the reader returns wraps exactly one of them
// in a *FormatError that says where the problem is.
var (
	ErrBadMagic        = errors.New("not a GGUF file (bad magic)")
	ErrVersion         = errors.New("unsupported GGUF version")
	ErrTruncated       = errors.New("file truncated")
	ErrTooLarge        = errors.New("count or length larger than the file can hold")
	ErrValueType       = errors.New("unknown metadata value type")
	ErrBadValue        = errors.New("invalid metadata value")
	ErrNesting         = errors.New("metadata arrays nested too deeply")
	ErrDuplicateKey    = errors.New("duplicate metadata key")
	ErrEmptyName       = errors.New("empty key or tensor name")
	ErrBadUTF8         = errors.New("string is not valid UTF-8")
	ErrAlignment       = errors.New("invalid general.alignment")
	ErrDuplicateTensor = errors.New("duplicate tensor name")
	ErrTensorType      = errors.New("unknown tensor type")
	ErrDims            = errors.New("invalid tensor dimensions")
	ErrShape           = errors.New("tensor shape inconsistent with its type")
	ErrMisaligned      = errors.New("tensor data offset misaligned")
	ErrOverlap         = errors.New("tensor data overlap")
	ErrOutOfBounds     = errors.New("tensor data past the end of the file")
	ErrMetadataType    = errors.New("metadata key has the wrong type")
)

// FormatError reports a problem in a GGUF file: what, and where.
type FormatError struct {
	Offset int64  // byte offset in the file, -1 if not applicable
	Where  string // e.g. `metadata key "general.alignment"`, `tensor 3 "blk.0.attn_q.weight"`
	Err    error  // one of the sentinel errors
	Detail string // extra facts, e.g. "needs 4096 bytes, 100 remain"
}

func (e *FormatError) Error() string {
	s := "gguf: "
	if e.Where != "" {
		s += e.Where + ": "
	}
	s += e.Err.Error()
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	if e.Offset >= 0 {
		s += fmt.Sprintf(" at byte %d", e.Offset)
	}
	return s
}

func (e *FormatError) Unwrap() error { return e.Err }
