// Package tokenizer turns text into token ids and back for the vocabularies
// that GGUF files carry in their tokenizer.ggml.* metadata, with results equal
// to llama.cpp's, id for id.
//
// Two families are supported:
//
//   - tokenizer.ggml.model = "llama": SentencePiece-style. Spaces become "▁",
//     a space is prefixed to the text (tokenizer.ggml.add_space_prefix,
//     default on), adjacent pieces are merged best score first, and code
//     points that no piece covers fall back to <0xNN> byte tokens.
//     Llama-2, Phi-3.x, Gemma-2, TinyLlama/stories.
//   - tokenizer.ggml.model = "gpt2": byte-level BPE. The text is cut into
//     words by the pre-tokenizer that tokenizer.ggml.pre names (see
//     PreTokenizers), each word is spelled in GPT-2's byte alphabet and merged
//     by rank (tokenizer.ggml.merges). Llama-3.x, Qwen2.x, GPT-2.
//
// Anything else is refused by New with an error wrapping ErrUnsupported.
//
// Control, user-defined and unknown tokens ("special" tokens) are cut out of
// the text before either algorithm runs, longest first, as llama.cpp does.
// User-defined tokens are always recognised; control tokens only when
// EncodeOptions.ParseSpecial is set, so that text from a user cannot inject
// <|im_start|> or <|eot_id|> unless the caller allows it.
//
// A Tokenizer is immutable after New and safe for concurrent use.
package tokenizer

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Metadata is the part of a model file's metadata a tokenizer is built from.
// *gguf.File satisfies it, and so can any other container of GGUF keys.
type Metadata interface {
	String(key string) (string, bool)
	Uint(key string) (uint64, bool) // any integer type, non-negative
	Bool(key string) (bool, bool)
	Strings(key string) ([]string, bool)   // array of string
	Float32s(key string) ([]float32, bool) // array of f32 (scores)
	Int32s(key string) ([]int32, bool)     // array of i32 (token_type)
}

// Errors returned by New, Encode and Decode wrap one of these.
var (
	// ErrUnsupported: the metadata names a tokenizer model or pre-tokenizer
	// this package does not implement.
	ErrUnsupported = errors.New("tokenizer: unsupported")
	// ErrInvalid: the metadata is missing a required key or is inconsistent.
	ErrInvalid = errors.New("tokenizer: invalid metadata")
	// ErrTokenID: a token id outside the vocabulary.
	ErrTokenID = errors.New("tokenizer: token id out of range")
	// ErrNoBOS: a BOS token was asked for but the vocabulary has none.
	ErrNoBOS = errors.New("tokenizer: vocabulary has no BOS token")
)

// Metadata keys read by New.
const (
	keyModel          = "tokenizer.ggml.model"
	keyPre            = "tokenizer.ggml.pre"
	keyTokens         = "tokenizer.ggml.tokens"
	keyScores         = "tokenizer.ggml.scores"
	keyTokenType      = "tokenizer.ggml.token_type"
	keyMerges         = "tokenizer.ggml.merges"
	keyAddBOS         = "tokenizer.ggml.add_bos_token"
	keyAddEOS         = "tokenizer.ggml.add_eos_token"
	keyAddSpacePrefix = "tokenizer.ggml.add_space_prefix"
	keyGeneralName    = "general.name"
	keyGeneralArch    = "general.architecture"
)

// Kind is the tokenization algorithm.
type Kind uint8

const (
	// SPM is SentencePiece-style score-based merging (tokenizer.ggml.model "llama").
	SPM Kind = iota + 1
	// BPE is byte-level rank-based BPE (tokenizer.ggml.model "gpt2").
	BPE
)

func (k Kind) String() string {
	switch k {
	case SPM:
		return "spm"
	case BPE:
		return "bpe"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Token types of tokenizer.ggml.token_type (llama.cpp's LLAMA_TOKEN_TYPE_*).
const (
	typeUndefined   = 0
	typeNormal      = 1
	typeUnknown     = 2
	typeControl     = 3
	typeUserDefined = 4
	typeUnused      = 5
	typeByte        = 6
)

// attr is llama.cpp's llama_token_attr: a token's type plus the flags that
// llama.cpp derives at load time.
type attr uint16

const (
	attrUnknown attr = 1 << iota
	attrUnused
	attrNormal
	attrControl
	attrUserDefined
	attrByte
	attrNormalized
	attrLStrip
	attrRStrip
	attrSingleWord

	attrSpecial = attrControl | attrUserDefined | attrUnknown
)

func attrOfType(t int32) attr {
	switch t {
	case typeUnknown:
		return attrUnknown
	case typeUnused:
		return attrUnused
	case typeNormal:
		return attrNormal
	case typeControl:
		return attrControl
	case typeUserDefined:
		return attrUserDefined
	case typeByte:
		return attrByte
	}
	return 0 // undefined
}

// none marks an absent special token id.
const none int32 = -1

// Tokenizer encodes and decodes text for one vocabulary.
type Tokenizer struct {
	kind Kind
	pre  string // pre-tokenizer name (BPE only)
	sp   preTokenizer

	texts  []string         // token id → vocabulary text
	attrs  []attr           // token id → attributes
	scores []float32        // token id → score (SPM)
	ids    map[string]int32 // vocabulary text → token id

	// pieces holds every token's decoded bytes (llama.cpp token_to_piece with
	// special = true), token i at pieces[pieceOff[i]:pieceOff[i+1]].
	pieces   []byte
	pieceOff []uint32

	bos, eos, eot, eom, unk, pad int32
	addBOS, addEOS               bool
	addSpacePrefix               bool
	eog                          []uint64 // bitset over token ids

	// Special tokens in matching order (longest text first), and for each
	// first byte the indices into specials that start with it: [0] holds the
	// tokens matched when ParseSpecial is off (user-defined), [1] all of them.
	specials []special
	byFirst  [2][256][]int32

	spmBytes [256]int32 // SPM: token of each byte (<0xNN>, or the byte itself), none if neither

	// BPE: merge ranks keyed by the pair of symbol ids. Symbol ids are token
	// ids, extended past the vocabulary for merge parts and results that are
	// not tokens themselves, so that merging on ids is merging on text.
	merges    map[uint64]merge
	bpeSingle [256]int32 // symbol id of each byte's one-character spelling, none if it takes part in nothing

	scratch sync.Pool // *session
}

type special struct {
	text           string
	id             int32
	lstrip, rstrip bool
}

type merge struct {
	rank   int32
	result int32 // symbol id of the merged text
}

// Kind reports the tokenization algorithm.
func (t *Tokenizer) Kind() Kind { return t.kind }

// PreTokenizer is the tokenizer.ggml.pre in use ("" for SPM vocabularies).
func (t *Tokenizer) PreTokenizer() string { return t.pre }

// VocabSize is the number of tokens.
func (t *Tokenizer) VocabSize() int { return len(t.texts) }

// BOS is the beginning-of-sequence token, -1 if there is none.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS is the end-of-sequence token, -1 if there is none.
func (t *Tokenizer) EOS() int32 { return t.eos }

// EOT is the end-of-turn token (<|eot_id|>, <|im_end|>, <end_of_turn>, …),
// -1 if there is none.
func (t *Tokenizer) EOT() int32 { return t.eot }

// AddBOS reports whether Encode adds BOS by default
// (tokenizer.ggml.add_bos_token, with llama.cpp's defaults when absent).
func (t *Tokenizer) AddBOS() bool { return t.addBOS }

// AddEOS reports whether Encode appends EOS by default.
func (t *Tokenizer) AddEOS() bool { return t.addEOS }

// IsEOG reports whether id ends generation: EOS, EOT, EOM, and the tokens
// llama.cpp recognises by text (<|eot_id|>, <|im_end|>, <|end|>,
// <end_of_turn>, <|endoftext|>, …) or as FIM pad/repo/separator.
func (t *Tokenizer) IsEOG(id int32) bool {
	return id >= 0 && int(id) < len(t.texts) && t.eog[id>>6]&(1<<(id&63)) != 0
}

// EOGTokens lists the end-of-generation tokens in id order.
func (t *Tokenizer) EOGTokens() []int32 {
	var out []int32
	for id := range t.texts {
		if t.IsEOG(int32(id)) {
			out = append(out, int32(id))
		}
	}
	return out
}

// TokenText is the vocabulary text of id ("" if out of range): byte-level
// spelling for BPE, "▁" for spaces in SPM.
func (t *Tokenizer) TokenText(id int32) string {
	if id < 0 || int(id) >= len(t.texts) {
		return ""
	}
	return t.texts[id]
}

// TokenID looks a vocabulary text up.
func (t *Tokenizer) TokenID(text string) (int32, bool) {
	id, ok := t.ids[text]
	return id, ok
}

// IsControl reports whether id is a control or unknown token: one that
// Encode produces from text only with ParseSpecial and that a StreamDecoder
// does not render by default.
func (t *Tokenizer) IsControl(id int32) bool {
	return id >= 0 && int(id) < len(t.texts) && t.attrs[id]&(attrControl|attrUnknown) != 0
}

// preTokenizer describes one tokenizer.ggml.pre value.
type preTokenizer struct {
	split        func(c []rune, lo, hi int, ends []int, tmp *[2][]int) []int
	ignoreMerges bool // a word that is a whole token is emitted as is
	addBOS       bool // llama.cpp's add_bos default for this pre-tokenizer
}

func llama3Split(c []rune, lo, hi int, ends []int, _ *[2][]int) []int {
	return splitLlama3(c, lo, hi, ends, 3)
}

func qwen2Split(c []rune, lo, hi int, ends []int, _ *[2][]int) []int {
	return splitLlama3(c, lo, hi, ends, 1)
}

func gpt2Split(c []rune, lo, hi int, ends []int, _ *[2][]int) []int {
	return splitGPT2(c, lo, hi, ends)
}

// preTokenizers maps tokenizer.ggml.pre to its behaviour. Names are grouped
// as llama.cpp's llama-vocab.cpp groups them; a name missing here is refused
// rather than approximated.
var preTokenizers = map[string]preTokenizer{
	"default": {split: splitDefault},

	// Llama-3 expression with merges skipped for whole-token words.
	"llama3":       {split: llama3Split, ignoreMerges: true, addBOS: true},
	"llama-v3":     {split: llama3Split, ignoreMerges: true, addBOS: true},
	"llama-bpe":    {split: llama3Split, ignoreMerges: true, addBOS: true},
	"falcon3":      {split: llama3Split, ignoreMerges: true, addBOS: true},
	"falcon-h1":    {split: llama3Split, ignoreMerges: true, addBOS: true},
	"pixtral":      {split: llama3Split, ignoreMerges: true, addBOS: true},
	"midm-2.0":     {split: llama3Split, ignoreMerges: true, addBOS: true},
	"lfm2":         {split: llama3Split, ignoreMerges: true, addBOS: true},
	"jina-v5-nano": {split: llama3Split, ignoreMerges: true, addBOS: true},
	"dbrx":         {split: llama3Split},
	"smaug-bpe":    {split: llama3Split},

	// Qwen2 expression: like Llama-3's but one digit per word.
	"qwen2":            {split: qwen2Split},
	"deepseek-r1-qwen": {split: qwen2Split},
	"kormo":            {split: qwen2Split},
	"f2llmv2":          {split: qwen2Split},
	"megrez":           {split: qwen2Split},
	"stablelm2":        {split: qwen2Split},
	"hunyuan":          {split: qwen2Split},
	"solar-open":       {split: qwen2Split},
	"grok-2":           {split: qwen2Split},

	// GPT-2 expression.
	"gpt-2":           {split: gpt2Split},
	"phi-2":           {split: gpt2Split},
	"jina-es":         {split: gpt2Split},
	"jina-de":         {split: gpt2Split},
	"jina-v2-es":      {split: gpt2Split},
	"jina-v2-de":      {split: gpt2Split},
	"gigachat":        {split: gpt2Split},
	"a.x-4.0":         {split: gpt2Split},
	"mellum":          {split: gpt2Split},
	"modern-bert":     {split: gpt2Split},
	"mpt":             {split: gpt2Split},
	"olmo":            {split: gpt2Split},
	"jais":            {split: gpt2Split},
	"trillion":        {split: gpt2Split},
	"granite-docling": {split: gpt2Split},
	"exaone4":         {split: gpt2Split},
}

// PreTokenizers lists the supported tokenizer.ggml.pre values.
func PreTokenizers() []string { return slices.Sorted(maps.Keys(preTokenizers)) }

// New builds a tokenizer from tokenizer.ggml.* metadata. Everything Encode
// and Decode need is computed here, once.
func New(md Metadata) (*Tokenizer, error) {
	model, ok := md.String(keyModel)
	if !ok {
		return nil, fmt.Errorf("%w: missing %s", ErrInvalid, keyModel)
	}
	t := &Tokenizer{bos: none, eos: none, eot: none, eom: none, unk: none, pad: none}
	switch model {
	case "llama":
		t.kind = SPM
		t.bos, t.eos, t.unk = 1, 2, 0
		t.addSpacePrefix, t.addBOS = true, true
	case "gpt2":
		t.kind = BPE
		// llama.cpp's defaults for BPE vocabularies, odd as they look.
		t.bos, t.eos = 11, 11
		pre, _ := md.String(keyPre)
		if pre == "" {
			pre = "default" // what llama.cpp does, with a loud warning
		}
		sp, ok := preTokenizers[pre]
		if !ok {
			return nil, fmt.Errorf("%w: pre-tokenizer %s = %q (supported: %s)",
				ErrUnsupported, keyPre, pre, strings.Join(PreTokenizers(), ", "))
		}
		t.pre, t.sp = pre, sp
		t.addBOS = sp.addBOS
	default:
		return nil, fmt.Errorf("%w: tokenizer model %s = %q (supported: llama, gpt2)", ErrUnsupported, keyModel, model)
	}
	if v, ok := md.Bool(keyAddSpacePrefix); ok {
		t.addSpacePrefix = v
	}
	if t.kind == BPE {
		// llama.cpp's BPE path never prefixes a space; keep Decode symmetric.
		t.addSpacePrefix = false
	}

	if err := t.loadVocab(md); err != nil {
		return nil, err
	}
	if v, ok := md.Bool(keyAddBOS); ok {
		t.addBOS = v
	}
	if v, ok := md.Bool(keyAddEOS); ok {
		t.addEOS = v
	}
	t.detectSpecials(md)
	t.buildPieces()
	t.buildSpecialIndex()

	switch t.kind {
	case SPM:
		t.buildSPM()
	case BPE:
		if err := t.buildBPE(md); err != nil {
			return nil, err
		}
	}
	t.scratch.New = func() any { return new(session) }
	return t, nil
}
