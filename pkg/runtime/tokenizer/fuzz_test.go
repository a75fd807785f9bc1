package tokenizer

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

var fuzzVocabs = []string{"llama-spm", "phi-3", "gpt-2", "llama-bpe", "qwen2", "gemma2"}

// FuzzEncode: any bytes, with or without special-token parsing, tokenize
// without panicking into in-range ids; valid UTF-8 comes back unchanged
// where the tokenizer is lossless; streaming never emits invalid UTF-8 and
// adds up to Decode's text.
func FuzzEncode(f *testing.F) {
	for _, c := range loadVectors(f, "ggml-vocab-llama-spm.out") {
		f.Add([]byte(c.text), false)
	}
	for _, s := range []string{
		"\xff\xfe\x80", "\xe4\xb8", "a\xed\xa0\x80b", "\xc0\x80", "\xf7\xbf\xbf\xbf", "\xf4\x90\x80\x80",
		"<|im_start|>user\n<|eot_id|></s><s>", "<|user|>\n  x<|end|>\n", "<start_of_turn>model\n\n\n  <b>x</b>",
		"   \t\t\n\r\n ", "'S'T'Re 1234567 ½ ⅷ",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	toks := make([]*Tokenizer, len(fuzzVocabs))
	for i, v := range fuzzVocabs {
		toks[i] = loadVocab(f, v)
	}
	f.Fuzz(func(t *testing.T, data []byte, parseSpecial bool) {
		text := string(data)
		for i, tok := range toks {
			ids, err := tok.Encode(text, EncodeOptions{AddBOS: BOSNone, ParseSpecial: parseSpecial})
			if err != nil {
				t.Fatalf("%s: %v", fuzzVocabs[i], err)
			}
			for _, id := range ids {
				if id < 0 || int(id) >= tok.VocabSize() {
					t.Fatalf("%s: id %d out of range", fuzzVocabs[i], id)
				}
			}
			dec, err := tok.Decode(ids)
			if err != nil {
				t.Fatalf("%s: %v", fuzzVocabs[i], err)
			}
			if lossless(tok, text, parseSpecial) && dec != text {
				t.Fatalf("%s: Decode(Encode(%q)) = %q", fuzzVocabs[i], text, dec)
			}

			d := tok.NewDecoder()
			d.RenderSpecial = true
			var streamed strings.Builder
			var raw []byte
			for _, id := range ids {
				s, r := d.Push(id)
				if !utf8.ValidString(s) {
					t.Fatalf("%s: streamed invalid UTF-8 %q", fuzzVocabs[i], s)
				}
				streamed.WriteString(s)
				raw = append(raw, r...)
			}
			tail := d.Flush()
			if !utf8.ValidString(tail) {
				t.Fatalf("%s: flushed invalid UTF-8 %q", fuzzVocabs[i], tail)
			}
			streamed.WriteString(tail)
			if utf8.Valid(raw) && streamed.String() != string(raw) {
				t.Fatalf("%s: streamed %q, raw %q", fuzzVocabs[i], streamed.String(), raw)
			}
			if tok.addSpacePrefix && len(raw) > 0 && raw[0] == ' ' {
				raw = raw[1:]
			}
			if !bytes.Equal(raw, []byte(dec)) {
				t.Fatalf("%s: raw bytes %q differ from Decode %q", fuzzVocabs[i], raw, dec)
			}
		}
	})
}

// lossless reports whether tok must reproduce text exactly. Both kinds do
// for valid UTF-8 only: byte-level BPE turns invalid bytes into U+FFFD and
// SentencePiece cuts characters by their first byte, so a truncated sequence
// swallows bytes of the "▁" that follows (both as in llama.cpp). SentencePiece
// also needs the text free of special tokens, which make Encode prefix a
// space or strip whitespace.
func lossless(tok *Tokenizer, text string, parseSpecial bool) bool {
	if !utf8.ValidString(text) {
		return false
	}
	if tok.kind == BPE {
		return true
	}
	if !tok.addSpacePrefix {
		// Gemma: no prefix space; nothing strips (no rstrip tokens).
		return true
	}
	idx := &tok.byFirst[0]
	if parseSpecial {
		idx = &tok.byFirst[1]
	}
	for i := 0; i < len(text); i++ {
		for _, k := range idx[text[i]] {
			if strings.HasPrefix(text[i:], tok.specials[k].text) {
				return false
			}
		}
	}
	return true
}
