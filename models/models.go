// Package models embeds the default demo model, so `corelm generate` and the
// quickstart work on a fresh clone with no download.
package models

import _ "embed"

// Stories260K is karpathy's tinyllamas "stories260K" (llama2.c, MIT) in GGUF:
// a real trained 260K-parameter Llama with a 512-token SentencePiece
// vocabulary, all F32.
//
//go:embed stories260K.gguf
var Stories260K []byte

// DefaultName is the name under which the embedded model is known.
const DefaultName = "stories260K"
