package tokenizer

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
)

// The GGUF reader's File is a Metadata.
var _ Metadata = (*gguf.File)(nil)

// readGz reads a gzipped file from testdata.
func readGz(tb testing.TB, name string) []byte {
	tb.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

var (
	vocabMu    sync.Mutex
	vocabCache = map[string]*Tokenizer{}
)

// loadVocab builds (once per test binary) the tokenizer of a testdata vocab:
// a gzipped vocab-only GGUF, or "gemma2", built from tokenizer.json.
func loadVocab(tb testing.TB, name string) *Tokenizer {
	tb.Helper()
	vocabMu.Lock()
	defer vocabMu.Unlock()
	if tok, ok := vocabCache[name]; ok {
		return tok
	}
	var md Metadata
	if name == "gemma2" {
		md = gemma2Metadata(tb)
	} else {
		f, err := gguf.Parse(readGz(tb, "ggml-vocab-"+name+".gguf.gz"))
		if err != nil {
			tb.Fatalf("%s: %v", name, err)
		}
		md = f
	}
	tok, err := New(md)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	vocabCache[name] = tok
	return tok
}

// mapMD is a Metadata over a Go map, for synthetic vocabularies.
type mapMD map[string]any

func (m mapMD) String(k string) (string, bool) { v, ok := m[k].(string); return v, ok }
func (m mapMD) Bool(k string) (bool, bool)     { v, ok := m[k].(bool); return v, ok }
func (m mapMD) Uint(k string) (uint64, bool) {
	switch v := m[k].(type) {
	case int:
		return uint64(v), v >= 0
	case uint32:
		return uint64(v), true
	}
	return 0, false
}
func (m mapMD) Strings(k string) ([]string, bool)   { v, ok := m[k].([]string); return v, ok }
func (m mapMD) Float32s(k string) ([]float32, bool) { v, ok := m[k].([]float32); return v, ok }
func (m mapMD) Int32s(k string) ([]int32, bool)     { v, ok := m[k].([]int32); return v, ok }

// gemma2Metadata builds the SentencePiece metadata that llama.cpp's
// convert_hf_to_gguf.py writes for Gemma-2, from its tokenizer.json: tokens
// by id, scores from the piece order (SentencePiece BPE scores fall with the
// id), types from the added-token flags, user-defined "▁" pre-normalised to
// spaces, no space prefix.
func gemma2Metadata(tb testing.TB) Metadata {
	tb.Helper()
	var tj struct {
		AddedTokens []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
		Model struct {
			Vocab map[string]int `json:"vocab"`
		} `json:"model"`
	}
	if err := json.Unmarshal(readGz(tb, "gemma2-tokenizer.json.gz"), &tj); err != nil {
		tb.Fatal(err)
	}
	n := len(tj.Model.Vocab)
	tokens := make([]string, n)
	scores := make([]float32, n)
	types := make([]int32, n)
	for text, id := range tj.Model.Vocab {
		tokens[id] = text
		scores[id] = -float32(id)
		types[id] = typeNormal
		if _, ok := parseByteToken(text); ok {
			types[id], scores[id] = typeByte, 0
		}
	}
	// SentencePiece's own control/unknown pieces (all four are also added
	// tokens below, which makes them control tokens, as in the converter).
	types[0], types[1], types[2], types[3] = typeControl, typeControl, typeControl, typeUnknown
	looksSpecial := func(s string) bool {
		switch s {
		case "<pad>", "<mask>", "<2mass>", "[@BOS@]":
			return true
		}
		return (strings.HasPrefix(s, "<|") && strings.HasSuffix(s, "|>")) ||
			(strings.HasPrefix(s, "<unused") && strings.HasSuffix(s, ">"))
	}
	for _, at := range tj.AddedTokens {
		text := at.Content
		if at.Special || looksSpecial(text) {
			types[at.ID] = typeControl
		} else {
			text = strings.ReplaceAll(text, "▁", " ")
			types[at.ID] = typeUserDefined
		}
		scores[at.ID] = -1000
		tokens[at.ID] = text
	}
	return mapMD{
		"general.architecture":            "gemma2",
		"general.name":                    "gemma-2-2b-it",
		keyModel:                          "llama",
		keyPre:                            "default",
		keyTokens:                         tokens,
		keyScores:                         scores,
		keyTokenType:                      types,
		"tokenizer.ggml.bos_token_id":     2,
		"tokenizer.ggml.eos_token_id":     1,
		"tokenizer.ggml.unknown_token_id": 3,
		"tokenizer.ggml.padding_token_id": 0,
		keyAddBOS:                         true,
		keyAddEOS:                         false,
		keyAddSpacePrefix:                 false,
	}
}

// vectorCase is one llama.cpp tokenizer test case.
type vectorCase struct {
	text string
	ids  []int32
}

func loadVectors(tb testing.TB, outName string) []vectorCase {
	tb.Helper()
	inp, err := os.ReadFile(filepath.Join("testdata", "vectors.inp"))
	if err != nil {
		tb.Fatal(err)
	}
	out, err := os.ReadFile(filepath.Join("testdata", outName))
	if err != nil {
		tb.Fatal(err)
	}
	texts := strings.Split(string(inp), "\n__ggml_vocab_test__\n")
	texts = texts[:len(texts)-1] // the file ends with a separator
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(texts) != len(lines) {
		tb.Fatalf("%s: %d inputs, %d outputs", outName, len(texts), len(lines))
	}
	cases := make([]vectorCase, len(texts))
	for i, line := range lines {
		cases[i].text = texts[i]
		for _, f := range strings.Fields(line) {
			id, err := strconv.Atoi(f)
			if err != nil {
				tb.Fatalf("%s line %d: %v", outName, i+1, err)
			}
			cases[i].ids = append(cases[i].ids, int32(id))
		}
	}
	return cases
}

var vectorSets = []struct{ vocab, out string }{
	{"llama-spm", "ggml-vocab-llama-spm.out"},
	{"phi-3", "ggml-vocab-phi-3.out"},
	{"gpt-2", "ggml-vocab-gpt-2.out"},
	{"llama-bpe", "ggml-vocab-llama-bpe.out"},
	{"qwen2", "ggml-vocab-qwen2.out"},
	{"gemma2", "gemma2.out"},
}

// TestVectors checks Encode against llama.cpp's (and for Gemma-2,
// transformers.js's) expected ids, case by case.
func TestVectors(t *testing.T) {
	for _, set := range vectorSets {
		t.Run(set.vocab, func(t *testing.T) {
			tok := loadVocab(t, set.vocab)
			cases := loadVectors(t, set.out)
			pass := 0
			for i, c := range cases {
				got, err := tok.Encode(c.text, EncodeOptions{AddBOS: BOSNone})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, c.ids) {
					t.Errorf("case %d %q:\n got %v\nwant %v", i, c.text, got, c.ids)
					continue
				}
				pass++
			}
			t.Logf("%s: %d/%d cases pass", set.vocab, pass, len(cases))
		})
	}
}

// TestRoundTrip checks Decode(Encode(s)) == s wherever the vocabulary can
// spell s: always for byte-fallback SPM and byte-level BPE, except where
// byte-level BPE replaced invalid UTF-8 (none of the vectors) or an SPM
// vocabulary's normalisation (none here) changes the text.
func TestRoundTrip(t *testing.T) {
	for _, set := range vectorSets {
		t.Run(set.vocab, func(t *testing.T) {
			tok := loadVocab(t, set.vocab)
			for i, c := range loadVectors(t, set.out) {
				ids, err := tok.Encode(c.text, EncodeOptions{AddBOS: BOSNone})
				if err != nil {
					t.Fatal(err)
				}
				got, err := tok.Decode(ids)
				if err != nil {
					t.Fatal(err)
				}
				if got != c.text {
					t.Errorf("case %d: Decode(Encode(%q)) = %q", i, c.text, got)
				}
				// Streaming yields the same text (the SPM prefix space aside).
				d := tok.NewDecoder()
				var sb strings.Builder
				for _, id := range ids {
					s, _ := d.Push(id)
					sb.WriteString(s)
				}
				sb.WriteString(d.Flush())
				want := c.text
				if tok.addSpacePrefix && len(ids) > 0 {
					want = " " + want
				}
				if sb.String() != want {
					t.Errorf("case %d: streamed %q, want %q", i, sb.String(), want)
				}
			}
		})
	}
}

// TestStories decodes the embedded demo model's reference generation
// (a 512-piece SentencePiece vocabulary) token by token.
func TestStories(t *testing.T) {
	f, err := gguf.Parse(models.Stories)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := New(f)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Kind() != SPM || tok.VocabSize() != 512 || tok.BOS() != 1 || !tok.IsEOG(2) {
		t.Fatalf("stories: kind %v, %d tokens, BOS %d", tok.Kind(), tok.VocabSize(), tok.BOS())
	}
	b, err := os.ReadFile(filepath.Join("testdata", "stories-greedy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		IDs  []int32 `json:"generated_ids"`
		Text string  `json:"decoded_text"`
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	d := tok.NewDecoder()
	var sb strings.Builder
	for _, id := range ref.IDs {
		s, _ := d.Push(id)
		sb.WriteString(s)
	}
	sb.WriteString(d.Flush())
	if sb.String() != ref.Text {
		t.Errorf("streamed:\n%q\nwant\n%q", sb.String(), ref.Text)
	}
	if got, _ := tok.Decode(ref.IDs); got != strings.TrimPrefix(ref.Text, " ") {
		t.Errorf("Decode = %q", got)
	}
	if got := encode(t, tok, "Once upon a time", EncodeOptions{}); !slices.Equal(got, append([]int32{1}, ref.IDs[:4]...)) {
		t.Errorf("Encode(Once upon a time) = %v, want BOS + %v", got, ref.IDs[:4])
	}
}
