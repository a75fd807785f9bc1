package server

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/corelm/corelm/internal/leakcheck"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	inference "github.com/corelm/corelm/services/inference/server"
)

func decodeEmbeddings(t *testing.T, resp *http.Response) embeddingList {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var out struct {
		embeddingList
		Data []struct {
			Object    string          `json:"object"`
			Index     int             `json:"index"`
			Embedding json.RawMessage `json:"embedding"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	list := out.embeddingList
	for _, d := range out.Data {
		var v []float32
		if err := json.Unmarshal(d.Embedding, &v); err != nil {
			var s string
			if err := json.Unmarshal(d.Embedding, &s); err != nil {
				t.Fatalf("embedding %d is neither floats nor a string", d.Index)
			}
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil || len(b)%4 != 0 {
				t.Fatalf("embedding %d: bad base64 (%v)", d.Index, err)
			}
			for i := 0; i < len(b); i += 4 {
				v = append(v, math.Float32frombits(binary.LittleEndian.Uint32(b[i:])))
			}
		}
		list.Data = append(list.Data, embeddingObject{Object: d.Object, Index: d.Index, Embedding: v})
	}
	return list
}

// TestEmbeddings: /v1/embeddings in OpenAI's shape for each input form and
// both encodings, equal to the Embed RPC's vectors.
func TestEmbeddings(t *testing.T) {
	leakcheck.Check(t)
	st := startStack(t, Config{}, inference.Options{})
	texts := []string{"Once upon a time", "The cat sat on the mat."}
	direct, err := st.client.Embed(t.Context(), &corelmv1.EmbedRequest{ModelId: "stories", Inputs: []*corelmv1.EmbedInput{
		{Input: &corelmv1.EmbedInput_Text{Text: texts[0]}}, {Input: &corelmv1.EmbedInput_Text{Text: texts[1]}}}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := st.client.Tokenize(t.Context(), &corelmv1.TokenizeRequest{ModelId: "stories", Text: texts[1]})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		input any
		want  []int // indices into direct
	}{
		{"string", texts[0], []int{0}},
		{"strings", texts, []int{0, 1}},
		{"token ids", tok.GetIds(), []int{1}},
		{"lists of token ids", [][]int32{tok.GetIds(), tok.GetIds()}, []int{1, 1}},
	} {
		for _, enc := range []string{"", "float", "base64"} {
			list := decodeEmbeddings(t, post(t, st.url+"/v1/embeddings", map[string]any{"model": "stories", "input": c.input, "encoding_format": enc}))
			if list.Object != "list" || list.Model != "stories" || len(list.Data) != len(c.want) {
				t.Fatalf("%s/%s: object %q, model %q, %d vectors", c.name, enc, list.Object, list.Model, len(list.Data))
			}
			var tokens int32
			for i, d := range list.Data {
				want := direct.GetEmbeddings()[c.want[i]]
				if d.Object != "embedding" || d.Index != i || !slices.Equal(d.Embedding.([]float32), want.GetValues()) {
					t.Errorf("%s/%s: vector %d (index %d) differs from Embed's", c.name, enc, i, d.Index)
				}
				tokens += want.GetTokens()
			}
			if list.Usage.PromptTokens != tokens || list.Usage.TotalTokens != tokens {
				t.Errorf("%s/%s: usage %+v, want %d tokens", c.name, enc, list.Usage, tokens)
			}
		}
	}
}

func TestEmbeddingsErrors(t *testing.T) {
	leakcheck.Check(t)
	st := startStack(t, Config{}, inference.Options{Context: 32})
	long := strings.Repeat("The dog ran. ", 20)
	for _, c := range []struct {
		name string
		body map[string]any
		code int
		want string
	}{
		{"no input", map[string]any{"model": "stories"}, 400, "input"},
		{"bad input", map[string]any{"model": "stories", "input": map[string]int{"a": 1}}, 400, "input must be"},
		{"bad encoding", map[string]any{"model": "stories", "input": "x", "encoding_format": "hex"}, 400, "encoding_format"},
		{"dimensions", map[string]any{"model": "stories", "input": "x", "dimensions": 8}, 400, "dimensions"},
		{"unknown model", map[string]any{"model": "nope", "input": "x"}, 404, "nope"},
		{"too long", map[string]any{"model": "stories", "input": long}, 400, "more than the context of 32"},
		{"bad pooling", map[string]any{"model": "stories", "input": "x", "pooling": "max"}, 400, "pooling"},
	} {
		resp := post(t, st.url+"/v1/embeddings", c.body)
		var e apiError
		json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode != c.code || !strings.Contains(e.Error.Message, c.want) {
			t.Errorf("%s: %d %q, want %d naming %q", c.name, resp.StatusCode, e.Error.Message, c.code, c.want)
		}
	}
	list := decodeEmbeddings(t, post(t, st.url+"/v1/embeddings", map[string]any{"model": "stories", "input": long, "truncate": true, "dimensions": 64}))
	if list.Usage.PromptTokens != 32 || len(list.Data[0].Embedding.([]float32)) != 64 {
		t.Errorf("truncated: usage %+v, %d values", list.Usage, len(list.Data[0].Embedding.([]float32)))
	}
}
