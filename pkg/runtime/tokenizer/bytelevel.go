package tokenizer

// GPT-2's byte-level alphabet: every byte is spelled by one printable code
// point so that vocabularies can be stored as text. Printable Latin-1 bytes
// stand for themselves; the other 68 map to U+0100.. in byte order.
var byteToRune = func() (t [256]rune) {
	n := rune(0)
	for b := range t {
		if (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			t[b] = rune(b)
		} else {
			t[b] = 0x100 + n
			n++
		}
	}
	return t
}()

// runeToByte inverts byteToRune; -1 marks code points outside the alphabet.
var runeToByte = func() (t [0x144]int16) {
	for i := range t {
		t[i] = -1
	}
	for b, r := range byteToRune {
		t[r] = int16(b)
	}
	return t
}()

// appendByteEncoded appends the byte-level spelling of raw.
func appendByteEncoded(dst []byte, raw string) []byte {
	for i := 0; i < len(raw); i++ {
		dst = appendCodepoint(dst, byteToRune[raw[i]])
	}
	return dst
}

// byteDecode is llama.cpp's llama_decode_text: the raw bytes a byte-level
// token text spells. A code point outside the alphabet (a broken vocabulary)
// is written the way llama.cpp writes it, as "[UNK_BYTE_0x..<text>]".
func byteDecode(text string) []byte {
	out := make([]byte, 0, len(text))
	for _, c := range decodeLlama(text, nil) {
		if c >= 0 && int(c) < len(runeToByte) && runeToByte[c] >= 0 {
			out = append(out, byte(runeToByte[c]))
			continue
		}
		out = append(out, "[UNK_BYTE_0x"...)
		for _, u := range appendCodepoint(nil, c) {
			out = append(out, "0123456789abcdef"[u>>4], "0123456789abcdef"[u&15])
		}
		out = append(out, text...)
		out = append(out, ']')
	}
	return out
}
