package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/corelm/corelm/internal/fixtures"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	inference "github.com/corelm/corelm/services/inference/server"
)

// toolStack is a gateway in front of a synthetic model with Llama-3's
// vocabulary and the real chat template of the named model, served as id.
func toolStack(t *testing.T, template, id string) (string, corelmv1.InferenceServiceClient) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a 128k-vocabulary model")
	}
	return serveStack(t, Config{}, inference.Config{Options: inference.Options{Threads: 1},
		ModelFile: fixtures.WriteVocabModel(t, "llama-bpe", template, 2048), ModelID: id})
}

var weatherTool = map[string]any{"type": "function", "function": map[string]any{
	"name": "get_weather", "description": "Weather in a city.",
	"parameters": map[string]any{"type": "object", "properties": map[string]any{
		"city": map[string]any{"type": "string", "maxLength": 12}, "unit": map[string]any{"enum": []string{"C", "F"}}},
		"required": []string{"city"}}}}

// chatAnswer is the part of a chat completion the tool tests read.
type chatAnswer struct {
	Choices []struct {
		Message struct {
			Content   json.RawMessage `json:"content"`
			ToolCalls []wireCall      `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
}

type wireCall struct {
	Index    *int   `json:"index"`
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// TestToolCalls: tool_choice "required" through the gateway answers with
// message.tool_calls (content null) and finish_reason "tool_calls"; the
// same request streamed sends the calls as delta.tool_calls that add up
// to the same calls; the follow-up turn with the calls and tool messages
// is the prompt inference makes of them directly. Llama-3.1's format
// makes one call, Qwen2.5's up to four.
func TestToolCalls(t *testing.T) {
	for id, template := range map[string]string{"llama31": "meta-llama-Llama-3.1-8B-Instruct", "qwen25": "Qwen-Qwen2.5-7B-Instruct"} {
		t.Run(id, func(t *testing.T) { testToolCalls(t, template, id) })
	}
}

func testToolCalls(t *testing.T, template, model string) {
	url, client := toolStack(t, template, model)
	messages := []map[string]any{{"role": "user", "content": "Weather in Paris?"}}
	body := func(seed int, stream bool) map[string]any {
		return map[string]any{"model": model, "messages": messages, "tools": []any{weatherTool},
			"tool_choice": "required", "temperature": 1, "top_k": 40, "seed": seed, "max_tokens": 200, "stream": stream}
	}
	// Qwen2.5's format may write several calls: look for a seed that
	// does, to see the deltas' indexes (the seeds are deterministic).
	wantCalls := 1
	if model == "qwen25" {
		wantCalls = 2
	}
	var calls []wireCall
	for seed := range 12 {
		resp := post(t, url+"/v1/chat/completions", body(seed, false))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		whole := decode[chatAnswer](t, resp)
		ch := whole.Choices[0]
		if ch.FinishReason == "length" {
			continue
		}
		if ch.FinishReason != "tool_calls" || len(ch.Message.ToolCalls) == 0 || string(ch.Message.Content) != "null" {
			t.Fatalf("seed %d: %+v", seed, ch)
		}
		if len(ch.Message.ToolCalls) < wantCalls {
			continue
		}
		calls = ch.Message.ToolCalls
		for _, call := range calls {
			var args struct{ City *string }
			if call.Type != "function" || call.Function.Name != "get_weather" || !strings.HasPrefix(call.ID, "call_") ||
				json.Unmarshal([]byte(call.Function.Arguments), &args) != nil || args.City == nil {
				t.Fatalf("seed %d: call %+v", seed, call)
			}
		}

		// Streamed: the same call, in deltas, and no content.
		resp = post(t, url+"/v1/chat/completions", body(seed, true))
		var streamed []wireCall
		var content, finish string
		for _, e := range events(t, resp.Body) {
			if e == "[DONE]" {
				continue
			}
			var chunk struct {
				Choices []struct {
					Delta struct {
						Content   *string    `json:"content"`
						ToolCalls []wireCall `json:"tool_calls"`
					} `json:"delta"`
					FinishReason *string `json:"finish_reason"`
				} `json:"choices"`
			}
			if err := json.Unmarshal([]byte(e), &chunk); err != nil {
				t.Fatalf("%v in %s", err, e)
			}
			for _, c := range chunk.Choices {
				if c.Delta.Content != nil {
					content += *c.Delta.Content
				}
				for _, d := range c.Delta.ToolCalls {
					if d.Index == nil {
						t.Fatalf("delta without index: %s", e)
					}
					for len(streamed) <= *d.Index {
						streamed = append(streamed, wireCall{})
					}
					s := &streamed[*d.Index]
					if d.ID != "" {
						s.ID, s.Type = d.ID, d.Type
					}
					s.Function.Name += d.Function.Name
					s.Function.Arguments += d.Function.Arguments
				}
				if c.FinishReason != nil {
					finish = *c.FinishReason
				}
			}
		}
		ok := finish == "tool_calls" && content == "" && len(streamed) == len(calls)
		for i := range streamed {
			ok = ok && streamed[i].Function == calls[i].Function && streamed[i].Type == "function" && strings.HasPrefix(streamed[i].ID, "call_")
		}
		if !ok {
			t.Fatalf("seed %d: streamed %+v, content %q, finish %q; whole %+v", seed, streamed, content, finish, calls)
		}
		t.Logf("seed %d: %d calls %+v", seed, len(calls), calls)
		break
	}
	if len(calls) == 0 {
		t.Fatal("no generation completed a call")
	}

	// The follow-up turn: the assistant's calls (arguments as JSON
	// strings, content null) and the tool's results.
	follow := map[string]any{"model": model, "tools": []any{weatherTool}, "temperature": 0, "max_tokens": 6}
	direct := []*corelmv1.ChatMessage{{Role: "user", Content: "Weather in Paris?"}, {Role: "assistant"}}
	var wireCalls []any
	for _, c := range calls {
		wireCalls = append(wireCalls, map[string]any{"id": c.ID, "type": "function",
			"function": map[string]any{"name": c.Function.Name, "arguments": c.Function.Arguments}})
		direct[1].ToolCalls = append(direct[1].ToolCalls, &corelmv1.ToolCall{Id: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
	}
	msgs := append([]map[string]any{}, messages...)
	msgs = append(msgs, map[string]any{"role": "assistant", "content": nil, "tool_calls": wireCalls})
	for i, c := range calls {
		result := fmt.Sprintf(`{"temp": %d}`, 20+i)
		msgs = append(msgs, map[string]any{"role": "tool", "tool_call_id": c.ID, "content": result})
		direct = append(direct, &corelmv1.ChatMessage{Role: "tool", Content: result, ToolCallId: c.ID, Name: "get_weather"})
	}
	follow["messages"] = msgs
	resp := post(t, url+"/v1/chat/completions", follow)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("follow-up: status %d", resp.StatusCode)
	}
	got := decode[struct {
		Usage struct {
			PromptTokens int32 `json:"prompt_tokens"`
		} `json:"usage"`
	}](t, resp)
	params, _ := json.Marshal(weatherTool["function"].(map[string]any)["parameters"])
	zero := float32(0)
	_, final := greedyStream(t, client, &corelmv1.GenerateStart{ModelId: model, MaxTokens: 6,
		Sampling: &corelmv1.SamplingParams{Temperature: &zero},
		Prompt: &corelmv1.GenerateStart_Chat{Chat: &corelmv1.ChatPrompt{AddGenerationPrompt: true,
			Tools:    []*corelmv1.Tool{{Name: "get_weather", Description: "Weather in a city.", Parameters: string(params)}},
			Messages: direct}}})
	if got.Usage.PromptTokens != final.GetUsage().GetPromptTokens() {
		t.Errorf("follow-up prompt of %d tokens, directly %d", got.Usage.PromptTokens, final.GetUsage().GetPromptTokens())
	}
}

// TestToolErrors: malformed tools, choices and tool messages are 400s
// naming the parameter; a forced call whose schema cannot be enforced is
// a 400 naming the tool and the keyword.
func TestToolErrors(t *testing.T) {
	url, _ := toolStack(t, "meta-llama-Llama-3.1-8B-Instruct", "llama31")
	chat := func(extra map[string]any) map[string]any {
		m := map[string]any{"model": "llama31", "messages": []map[string]any{{"role": "user", "content": "hi"}}, "max_tokens": 4,
			"tools": []any{weatherTool}}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name  string
		body  map[string]any
		param string
		want  string
	}{
		{"bad choice", chat(map[string]any{"tool_choice": "always"}), "tool_choice", "always"},
		{"bad named choice", chat(map[string]any{"tool_choice": map[string]any{"type": "function"}}), "tool_choice", "function"},
		{"unknown function", chat(map[string]any{"tool_choice": map[string]any{"type": "function", "function": map[string]any{"name": "nope"}}}), "", `"nope"`},
		{"not a function", chat(map[string]any{"tools": []any{map[string]any{"type": "retrieval"}}}), "tools[0]", "function"},
		{"tool message without id", chat(map[string]any{"messages": []map[string]any{{"role": "tool", "content": "21"}}}), "messages[0].tool_call_id", "tool_call_id"},
		{"calls on a user message", chat(map[string]any{"messages": []map[string]any{{"role": "user", "content": "x",
			"tool_calls": []any{map[string]any{"id": "1", "type": "function", "function": map[string]any{"name": "f", "arguments": "{}"}}}}}}),
			"messages[0].tool_calls", "assistant"},
		{"unenforceable schema", chat(map[string]any{"tool_choice": "required", "tools": []any{map[string]any{"type": "function",
			"function": map[string]any{"name": "f", "parameters": map[string]any{"type": "object", "properties": map[string]any{
				"x": map[string]any{"type": "string", "format": "hostname"}}}}}}}), "", `tool "f" parameters`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, url+"/v1/chat/completions", tt.body)
			e := decode[apiError](t, resp)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(e.Error.Message, tt.want) ||
				(tt.param != "" && (e.Error.Param == nil || *e.Error.Param != tt.param)) {
				t.Errorf("%d %+v, want 400 on %q with %q", resp.StatusCode, e.Error, tt.param, tt.want)
			}
		})
	}
}
