package tokenizer

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// loadVocab reads tokens, scores and types, and the special token ids.
func (t *Tokenizer) loadVocab(md Metadata) error {
	texts, ok := md.Strings(keyTokens)
	if !ok || len(texts) == 0 {
		return fmt.Errorf("%w: missing or empty %s", ErrInvalid, keyTokens)
	}
	if len(texts) > 1<<30 {
		return fmt.Errorf("%w: %d tokens", ErrInvalid, len(texts))
	}
	n := len(texts)
	scores, ok := md.Float32s(keyScores)
	if ok && len(scores) < n {
		return fmt.Errorf("%w: %d scores for %d tokens", ErrInvalid, len(scores), n)
	}
	if !ok {
		scores = make([]float32, n)
	}
	types, ok := md.Int32s(keyTokenType)
	if ok && len(types) < n {
		return fmt.Errorf("%w: %d token types for %d tokens", ErrInvalid, len(types), n)
	}

	t.texts = make([]string, n)
	t.attrs = make([]attr, n)
	t.scores = append([]float32(nil), scores[:n]...) // ours: the caller's slice may be shared
	t.ids = make(map[string]int32, n)
	for i, s := range texts {
		if s == "" {
			s = "[EMPTY_" + strconv.Itoa(i) + "]" // as llama.cpp names them
		}
		t.texts[i] = s
		t.ids[s] = int32(i) // a repeated text maps to its last id, as in llama.cpp
		t.attrs[i] = attrNormal
		if types != nil {
			t.attrs[i] = attrOfType(types[i])
		}
	}

	for _, k := range []struct {
		key string
		id  *int32
	}{
		{"tokenizer.ggml.bos_token_id", &t.bos},
		{"tokenizer.ggml.eos_token_id", &t.eos},
		{"tokenizer.ggml.eot_token_id", &t.eot},
		{"tokenizer.ggml.eom_token_id", &t.eom},
		{"tokenizer.ggml.unknown_token_id", &t.unk},
		{"tokenizer.ggml.padding_token_id", &t.pad},
	} {
		// An id past the vocabulary keeps the default, as in llama.cpp.
		if v, ok := md.Uint(k.key); ok && v < uint64(n) {
			*k.id = int32(v)
		}
	}
	for _, id := range []*int32{&t.bos, &t.eos, &t.unk} {
		if *id >= int32(n) { // a default that does not fit a tiny vocabulary
			*id = none
		}
	}
	return nil
}

// Texts by which llama.cpp recognises end-of-turn, end-of-message and
// fill-in-the-middle tokens when the metadata does not name them, and the
// wider set of texts that end generation (llama-vocab.cpp, load()).
var (
	eotTexts = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
		"<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"}
	eomTexts    = []string{"<|eom_id|>"}
	fimPadTexts = []string{"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}
	fimRepTexts = []string{"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}
	fimSepTexts = []string{"<|file_sep|>"}
	fimPreTexts = []string{"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"}
	fimSufTexts = []string{"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"}
	fimMidTexts = []string{"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"}
	eogTexts    = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
		"<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
		"<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~["}
)

// detectSpecials completes the special ids and attributes the way llama.cpp
// does at load: tokens that look like turn/FIM markers become control tokens,
// control tokens named "unused" are unused, and the end-of-generation set is
// built from ids and texts.
func (t *Tokenizer) detectSpecials(md Metadata) {
	markControl := func(id int32) { t.attrs[id] |= attrControl }
	// first returns the first of texts in the vocabulary (llama.cpp walks a
	// hash map, so its choice among several is arbitrary; list order is ours).
	first := func(texts []string) int32 {
		for _, s := range texts {
			if id, ok := t.ids[s]; ok {
				return id
			}
		}
		return none
	}
	// idOf returns the id a metadata key names, or else the first of texts
	// in the vocabulary, marked as a control token.
	idOf := func(id int32, keys []string, texts []string) int32 {
		for _, k := range keys {
			if v, ok := md.Uint(k); ok && v < uint64(len(t.texts)) {
				id = int32(v)
			}
		}
		if id == none {
			if id = first(texts); id != none {
				markControl(id)
			}
		}
		return id
	}
	t.eot = idOf(t.eot, nil, eotTexts)
	t.eom = idOf(t.eom, nil, eomTexts)
	idOf(none, []string{"tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"}, fimPreTexts)
	idOf(none, []string{"tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"}, fimSufTexts)
	idOf(none, []string{"tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"}, fimMidTexts)
	fimPad := idOf(none, []string{"tokenizer.ggml.fim_pad_token_id"}, fimPadTexts)
	fimRep := idOf(none, []string{"tokenizer.ggml.fim_rep_token_id"}, fimRepTexts)
	fimSep := idOf(none, []string{"tokenizer.ggml.fim_sep_token_id"}, fimSepTexts)
	for i, s := range t.texts {
		if t.attrs[i]&attrControl != 0 && strings.Contains(s, "unused") {
			t.attrs[i] |= attrUnused
		}
	}

	t.eog = make([]uint64, (len(t.texts)+63)/64)
	set := func(id int32) {
		if id != none {
			t.eog[id>>6] |= 1 << (id & 63)
		}
	}
	unset := func(id int32) { t.eog[id>>6] &^= 1 << (id & 63) }
	set(fimPad)
	set(fimRep)
	set(fimSep)
	for _, s := range eogTexts {
		if id, ok := t.ids[s]; ok {
			set(id)
			markControl(id)
		}
	}
	// gpt-oss channel markers are always rendered.
	for _, s := range []string{"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"} {
		if id, ok := t.ids[s]; ok {
			t.attrs[id] = attrUserDefined
		}
	}
	set(t.eos)
	set(t.eot)
	set(t.eom)
	// With <|return|>+<|call|> (o200k_harmony) or <|calls|>+<|flush|>
	// (solar-open), <|end|> separates messages instead of ending generation.
	isEOG := func(s string) bool { id, ok := t.ids[s]; return ok && t.IsEOG(id) }
	if end, ok := t.ids["<|end|>"]; ok && t.IsEOG(end) {
		hasCall := isEOG("<|call|>") || isEOG("<|calls|>")
		if (isEOG("<|return|>") && hasCall) || (hasCall && isEOG("<|flush|>")) {
			unset(end)
			t.attrs[end] = attrUserDefined
		}
	}
	// Gemma-4 and PaddleOCR: </s> is not an end of generation there.
	if s, ok := t.ids["</s>"]; ok && t.IsEOG(s) && isEOG("<|tool_response>") {
		unset(s)
		t.attrs[s] = attrNormal
	}

	// Per-model strip attributes (llama.cpp keys them on names).
	name, _ := md.String(keyGeneralName)
	name = strings.ToLower(name)
	pre, _ := md.String(keyPre)
	arch, _ := md.String(keyGeneralArch)
	setAttr := func(text string, a attr, on bool) {
		if id, ok := t.ids[text]; ok {
			if on {
				t.attrs[id] |= a
			} else {
				t.attrs[id] &^= a
			}
		}
	}
	switch {
	case strings.Contains(pre, "jina-v2-de") || strings.Contains(pre, "jina-v2-es") || strings.Contains(pre, "jina-v2-code") ||
		strings.Contains(arch, "nomic-bert-moe") || strings.Contains(arch, "jina-bert-v3"):
		setAttr("<mask>", attrLStrip, true)
	case strings.Contains(name, "phi-3") || strings.Contains(name, "phi3"):
		for i := range t.attrs {
			if t.attrs[i]&attrSpecial != 0 {
				t.attrs[i] |= attrRStrip
			}
		}
		setAttr("</s>", attrRStrip, true)
		for _, s := range []string{"<unk>", "<s>", "<|endoftext|>"} {
			setAttr(s, attrRStrip, false)
		}
	case strings.Contains(name, "modern-bert"):
		setAttr("[MASK]", attrLStrip, true)
	}
}

// buildPieces computes every token's bytes once (llama.cpp's
// cache_token_to_piece).
func (t *Tokenizer) buildPieces() {
	t.pieceOff = make([]uint32, len(t.texts)+1)
	total := 0
	for _, s := range t.texts {
		total += len(s)
	}
	t.pieces = make([]byte, 0, total)
	for i, s := range t.texts {
		t.pieces = t.appendPiece(t.pieces, int32(i), s)
		t.pieceOff[i+1] = uint32(len(t.pieces))
	}
}

func (t *Tokenizer) appendPiece(dst []byte, id int32, s string) []byte {
	a := t.attrs[id]
	switch {
	case a&attrSpecial != 0:
		return append(dst, s...)
	case a&attrNormal != 0:
		if t.kind == SPM {
			return append(dst, strings.ReplaceAll(s, "▁", " ")...)
		}
		return append(dst, byteDecode(s)...)
	case a&attrByte != 0:
		if b, ok := parseByteToken(s); ok {
			return append(dst, b)
		}
		// llama.cpp would read garbage here; a byte token it cannot parse
		// decodes to nothing.
		return dst
	}
	return dst // unused and undefined tokens decode to nothing
}

// parseByteToken parses "<0xNN>".
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(s[3:5], 16, 8)
	return byte(v), err == nil
}

// buildSpecialIndex orders the special tokens for matching: longest text
// first (ties by id, where llama.cpp's unstable sort leaves the order open).
func (t *Tokenizer) buildSpecialIndex() {
	for i, a := range t.attrs {
		if a&attrSpecial != 0 {
			t.specials = append(t.specials, special{
				text:   t.texts[i],
				id:     int32(i),
				lstrip: a&attrLStrip != 0,
				rstrip: a&attrRStrip != 0,
			})
		}
	}
	sort.SliceStable(t.specials, func(i, j int) bool { return len(t.specials[i].text) > len(t.specials[j].text) })
	for i, sp := range t.specials {
		b := sp.text[0]
		t.byFirst[1][b] = append(t.byFirst[1][b], int32(i))
		if t.attrs[sp.id]&(attrControl|attrUnknown) == 0 {
			t.byFirst[0][b] = append(t.byFirst[0][b], int32(i))
		}
	}
}
