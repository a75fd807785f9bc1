package tokenizer

import (
	"fmt"
	"unicode/utf8"
)

// piece is id's decoded bytes, shared: callers must not modify it.
func (t *Tokenizer) piece(id int32) []byte {
	lo, hi := t.pieceOff[id], t.pieceOff[id+1]
	return t.pieces[lo:hi:hi]
}

// TokenBytes returns the raw bytes of token id (a fresh copy): the byte of a
// <0xNN> byte token, the bytes a byte-level BPE token spells, an SPM piece
// with "▁" turned back into spaces, the text of a control or user-defined
// token. Unused tokens, and ids outside the vocabulary, have none. These are
// llama.cpp's token_to_piece(special = true).
func (t *Tokenizer) TokenBytes(id int32) []byte {
	if id < 0 || int(id) >= len(t.texts) {
		return nil
	}
	return append([]byte(nil), t.piece(id)...)
}

// Decode returns the text of ids: their bytes joined, control tokens
// included, and for SentencePiece vocabularies without the one space that
// Encode put in front of the text (so Decode(Encode(s)) == s when the text
// has no BOS and the vocabulary can spell it). It equals llama.cpp's
// llama_detokenize(remove_special = false, unparse_special = true) except
// that it never rewrites spaces around punctuation (llama.cpp's
// clean_spaces for some BPE vocabularies), so that Decode of a sequence is
// always what streaming it would show.
//
// The result is exact bytes: byte tokens can spell invalid UTF-8. Use a
// StreamDecoder where text must be valid.
func (t *Tokenizer) Decode(ids []int32) (string, error) {
	n := 0
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.texts) {
			return "", fmt.Errorf("%w: %d (vocabulary has %d tokens)", ErrTokenID, id, len(t.texts))
		}
		n += int(t.pieceOff[id+1] - t.pieceOff[id])
	}
	out := make([]byte, 0, n)
	for i, id := range ids {
		p := t.piece(id)
		if i == 0 && t.addSpacePrefix && len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
		out = append(out, p...)
	}
	return string(out), nil
}

// StreamDecoder turns generated tokens into text one token at a time. The
// text it returns is always valid UTF-8: bytes of a character that is not
// complete yet are held back until the tokens that finish it arrive, and
// bytes that can never form a character become U+FFFD. Not safe for
// concurrent use; one per sequence.
type StreamDecoder struct {
	t       *Tokenizer
	pending []byte
	// RenderSpecial makes control tokens produce their text. By default they
	// produce none, like llama.cpp's token_to_piece(special = false); their
	// raw bytes are still returned by Push.
	RenderSpecial bool
}

// NewDecoder returns a StreamDecoder for t.
func (t *Tokenizer) NewDecoder() *StreamDecoder { return &StreamDecoder{t: t} }

// Push adds one token. text is the newly completed text (possibly empty);
// raw is the token's own bytes (TokenBytes), which may be part of a
// character. An id outside the vocabulary yields nothing.
func (d *StreamDecoder) Push(id int32) (text string, raw []byte) {
	t := d.t
	if id < 0 || int(id) >= len(t.texts) {
		return "", nil
	}
	raw = t.TokenBytes(id)
	if t.IsControl(id) && !d.RenderSpecial {
		return "", raw
	}
	d.pending = append(d.pending, raw...)
	return d.drain(false), raw
}

// Flush returns what is held back, an incomplete character becoming U+FFFD,
// and resets the decoder for a new sequence.
func (d *StreamDecoder) Flush() string {
	s := d.drain(true)
	d.pending = d.pending[:0]
	return s
}

// drain returns the longest complete prefix of pending as valid UTF-8 and
// keeps the rest; with final, nothing is kept.
func (d *StreamDecoder) drain(final bool) string {
	p := d.pending
	if utf8.Valid(p) {
		d.pending = p[:0]
		return string(p)
	}
	out := make([]byte, 0, len(p)+3)
	i := 0
	for i < len(p) {
		r, n := utf8.DecodeRune(p[i:])
		if r != utf8.RuneError || n > 1 {
			out = append(out, p[i:i+n]...)
			i += n
			continue
		}
		if !utf8.FullRune(p[i:]) { // a character cut short at the end
			if !final {
				break
			}
			out = append(out, "\uFFFD"...)
			i = len(p)
			break
		}
		out = append(out, "\uFFFD"...)
		i++
	}
	d.pending = append(d.pending[:0], p[i:]...)
	return string(out)
}
