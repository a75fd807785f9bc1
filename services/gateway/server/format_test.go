package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/corelm/corelm/internal/leakcheck"
	inference "github.com/corelm/corelm/services/inference/server"
)

// TestResponseFormat: OpenAI's response_format (json_object, json_schema)
// and llama.cpp's grammar reach inference as the output constraint; the
// content that comes back parses, and what inference refuses is a 400
// that names it.
func TestResponseFormat(t *testing.T) {
	leakcheck.Check(t)
	st := startStack(t, Config{}, inference.Options{})
	chat := func(extra map[string]any) map[string]any {
		m := map[string]any{"model": "stories", "messages": []map[string]any{{"role": "user", "content": "Tell me about a cat."}},
			"max_tokens": 120, "temperature": 1, "seed": 3}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	schema := map[string]any{"type": "object", "properties": map[string]any{
		"name": map[string]any{"type": "string", "maxLength": 8}, "legs": map[string]any{"type": "integer", "minimum": 0, "maximum": 4}},
		"required": []string{"name", "legs"}}
	ok := []struct {
		name  string
		extra map[string]any
		check func(string) bool
	}{
		{"json_schema", map[string]any{"response_format": map[string]any{"type": "json_schema",
			"json_schema": map[string]any{"name": "cat", "schema": schema, "strict": true}}}, func(s string) bool {
			var v struct {
				Name *string
				Legs *int
			}
			return json.Unmarshal([]byte(s), &v) == nil && v.Name != nil && v.Legs != nil && *v.Legs <= 4
		}},
		{"json_object", map[string]any{"response_format": map[string]any{"type": "json_object"}}, func(s string) bool {
			var v map[string]any
			return json.Unmarshal([]byte(s), &v) == nil
		}},
		{"grammar", map[string]any{"grammar": `root ::= ("yes" | "no") "."`}, func(s string) bool { return s == "yes." || s == "no." }},
	}
	for _, tt := range ok {
		resp := post(t, st.url+"/v1/chat/completions", chat(tt.extra))
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", tt.name, resp.StatusCode)
		}
		got := decode[chatCompletion](t, resp)
		content := *got.Choices[0].Message.Content
		finish := *got.Choices[0].FinishReason
		if finish == "length" && tt.name == "json_object" && strings.HasPrefix(content, "{") {
			continue // free-form strings may outrun the budget: reported as length, not stop
		}
		if finish != "stop" || !tt.check(content) {
			t.Errorf("%s: %q (finish %s)", tt.name, content, *got.Choices[0].FinishReason)
		}
	}

	refused := []struct {
		name, param, says string
		extra             map[string]any
	}{
		{"unsupported keyword", "", `format hostname`, map[string]any{"response_format": map[string]any{"type": "json_schema",
			"json_schema": map[string]any{"name": "x", "schema": map[string]any{"type": "string", "format": "hostname"}}}}},
		{"no schema", "response_format.json_schema.schema", "schema", map[string]any{"response_format": map[string]any{"type": "json_schema"}}},
		{"unknown type", "response_format.type", "xml", map[string]any{"response_format": map[string]any{"type": "xml"}}},
		{"two constraints", "grammar", "only one", map[string]any{"response_format": map[string]any{"type": "json_object"}, "grammar": `root ::= "a"`}},
	}
	for _, tt := range refused {
		resp := post(t, st.url+"/v1/chat/completions", chat(tt.extra))
		e := decode[apiError](t, resp)
		if resp.StatusCode != 400 || !strings.Contains(e.Error.Message, tt.says) {
			t.Errorf("%s: status %d %+v, want 400 saying %s", tt.name, resp.StatusCode, e.Error, tt.says)
		}
		if tt.param != "" && (e.Error.Param == nil || *e.Error.Param != tt.param) {
			t.Errorf("%s: param %v, want %s", tt.name, e.Error.Param, tt.param)
		}
	}
}
