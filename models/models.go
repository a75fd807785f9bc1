// Package models embeds the default demo model, so `corelm generate` and the
// quickstart work on a fresh clone with no download.
package models

import _ "embed"

// Name is the one name of the embedded model: what a --model or
// --model-file flag says to use it, and its model id when served.
const Name = "stories"

// Stories is karpathy's tinyllamas "stories260K" checkpoint (llama2.c, MIT)
// in GGUF: a real trained 260K-parameter Llama with a 512-token
// SentencePiece vocabulary, all F32.
//
//go:embed stories.gguf
var Stories []byte

// alias is the checkpoint's own name, which earlier versions used.
const alias = "stories260K"

// IsName reports whether name means the embedded model: Name, or
// "stories260K", the name of the checkpoint, accepted as an alias.
func IsName(name string) bool { return name == Name || name == alias }
