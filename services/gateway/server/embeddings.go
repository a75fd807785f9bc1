package server

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net/http"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// embeddingRequest is the body of POST /v1/embeddings.
type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`           // a string, [string], [int] or [[int]]
	EncodingFormat string          `json:"encoding_format"` // "float" (default) or "base64"
	Dimensions     *int            `json:"dimensions"`
	User           string          `json:"user"`
	// Extras: the pooling (llama.cpp's server takes it at start-up only)
	// and truncation of inputs longer than the context (refused otherwise).
	Pooling  string `json:"pooling"`
	Truncate bool   `json:"truncate"`
}

type embeddingList struct {
	Object string            `json:"object"`
	Data   []embeddingObject `json:"data"`
	Model  string            `json:"model"`
	Usage  embeddingUsage    `json:"usage"`
}

type embeddingObject struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string of little-endian float32s
}

type embeddingUsage struct {
	PromptTokens int32 `json:"prompt_tokens"`
	TotalTokens  int32 `json:"total_tokens"`
}

// embeddings is POST /v1/embeddings: one Embed call, vectors of unit
// length as OpenAI's are.
func (s *Server) embeddings(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, err)
		return
	}
	var req embeddingRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, badParam("", "the body is not a valid request: %v", err))
		return
	}
	inputs, err := embeddingInputs(req.Input)
	if err != nil {
		writeError(w, err)
		return
	}
	if req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64" {
		writeError(w, badParam("encoding_format", "encoding_format %q: want float or base64", req.EncodingFormat))
		return
	}
	pooling, ok := map[string]corelmv1.Pooling{"": corelmv1.Pooling_POOLING_UNSPECIFIED, "mean": corelmv1.Pooling_POOLING_MEAN,
		"last": corelmv1.Pooling_POOLING_LAST, "cls": corelmv1.Pooling_POOLING_CLS}[req.Pooling]
	if !ok {
		writeError(w, badParam("pooling", "pooling %q: want mean, last or cls", req.Pooling))
		return
	}
	resp, err := s.client.Embed(s.outgoing(r), &corelmv1.EmbedRequest{ModelId: req.Model, Inputs: inputs, Pooling: pooling, Truncate: req.Truncate})
	if err != nil {
		writeError(w, err)
		return
	}
	out := embeddingList{Object: "list", Model: req.Model, Data: make([]embeddingObject, len(resp.GetEmbeddings())),
		Usage: embeddingUsage{PromptTokens: resp.GetPromptTokens(), TotalTokens: resp.GetPromptTokens()}}
	for i, e := range resp.GetEmbeddings() {
		v := e.GetValues()
		if req.Dimensions != nil && *req.Dimensions != len(v) {
			writeError(w, badParam("dimensions", "dimensions %d: this model's embeddings have %d (they cannot be shortened)", *req.Dimensions, len(v)))
			return
		}
		out.Data[i] = embeddingObject{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			out.Data[i].Embedding = floatsBase64(v)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// embeddingInputs reads "input": a string, an array of strings, an array
// of token ids, or an array of arrays of token ids.
func embeddingInputs(raw json.RawMessage) ([]*corelmv1.EmbedInput, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, badParam("input", "input is required")
	}
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return []*corelmv1.EmbedInput{{Input: &corelmv1.EmbedInput_Text{Text: text}}}, nil
	}
	var texts []string
	if json.Unmarshal(raw, &texts) == nil {
		in := make([]*corelmv1.EmbedInput, len(texts))
		for i, t := range texts {
			in[i] = &corelmv1.EmbedInput{Input: &corelmv1.EmbedInput_Text{Text: t}}
		}
		return in, nil
	}
	var ids []int32
	if json.Unmarshal(raw, &ids) == nil {
		return []*corelmv1.EmbedInput{{Input: &corelmv1.EmbedInput_TokenIds{TokenIds: &corelmv1.TokenIds{Ids: ids}}}}, nil
	}
	var lists [][]int32
	if json.Unmarshal(raw, &lists) == nil {
		in := make([]*corelmv1.EmbedInput, len(lists))
		for i, l := range lists {
			in[i] = &corelmv1.EmbedInput{Input: &corelmv1.EmbedInput_TokenIds{TokenIds: &corelmv1.TokenIds{Ids: l}}}
		}
		return in, nil
	}
	return nil, badParam("input", "input must be a string, an array of strings, an array of token ids or an array of such arrays")
}

// floatsBase64 is OpenAI's base64 encoding of a vector: its float32
// values, little-endian, base64 (what the openai client libraries ask for
// by default and decode).
func floatsBase64(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return base64.StdEncoding.EncodeToString(b)
}
