package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// The OpenAI wire types the gateway reads and writes: only the fields it
// maps. Unknown request fields are ignored, as OpenAI-compatible servers
// (llama.cpp, vLLM) ignore them; fields it cannot honour (n > 1, several
// prompts, non-text content parts) are refused with 400.

// generateRequest is the body of POST /v1/chat/completions and of
// POST /v1/completions (Messages for one, Prompt for the other).
type generateRequest struct {
	Model    string          `json:"model"`
	Messages []chatMessage   `json:"messages"`
	Prompt   json.RawMessage `json:"prompt"` // a string, [string], [int] or [[int]]

	MaxTokens           *int32             `json:"max_tokens"`
	MaxCompletionTokens *int32             `json:"max_completion_tokens"`
	Temperature         *float32           `json:"temperature"`
	TopP                *float32           `json:"top_p"`
	Seed                *int64             `json:"seed"`
	Stop                json.RawMessage    `json:"stop"` // a string or [string]
	PresencePenalty     *float32           `json:"presence_penalty"`
	FrequencyPenalty    *float32           `json:"frequency_penalty"`
	LogitBias           map[string]float32 `json:"logit_bias"`
	// Chat: a bool, with TopLogprobs alternatives; completions: the number
	// of alternatives (0–20), any number meaning logprobs on.
	Logprobs    json.RawMessage `json:"logprobs"`
	TopLogprobs *int32          `json:"top_logprobs"`
	N           *int            `json:"n"`
	User        string          `json:"user"`
	Echo        bool            `json:"echo"`
	Suffix      *string         `json:"suffix"`

	Stream        bool `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`

	// Extras, named as llama.cpp's server names them (repetition_penalty
	// as vLLM does).
	TopK              *int32   `json:"top_k"`
	MinP              *float32 `json:"min_p"`
	TypicalP          *float32 `json:"typical_p"`
	RepeatPenalty     *float32 `json:"repeat_penalty"`
	RepetitionPenalty *float32 `json:"repetition_penalty"`
	RepeatLastN       *int32   `json:"repeat_last_n"`

	// Structured output: OpenAI's response_format, and llama.cpp's
	// server's grammar (GBNF) and json_schema fields.
	ResponseFormat *responseFormat `json:"response_format"`
	Grammar        *string         `json:"grammar"`
	JSONSchema     json.RawMessage `json:"json_schema"`

	// Tool calling (chat): the functions the model may call, and
	// "none", "auto", "required" or {"type":"function","function":
	// {"name":...}}. parallel_tool_calls is read and not enforced: a
	// format that writes several calls may write several.
	Tools             []toolDef       `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
}

// toolDef is one of a request's tools: {"type":"function","function":
// {"name":...,"description":...,"parameters":{...},"strict":...}}.
type toolDef struct {
	Type     string `json:"type"`
	Function *struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      *bool           `json:"strict"`
	} `json:"function"`
}

// toolCall is a call of an assistant message, in a request or a response;
// in a streamed delta it also has its index.
type toolCall struct {
	Index    *int         `json:"index,omitempty"`
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function toolFunction `json:"function"`
}

type toolFunction struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"` // a JSON object, as text
}

// responseFormat is OpenAI's response_format: {"type":"text"},
// {"type":"json_object"} or {"type":"json_schema","json_schema":{"name":
// ...,"schema":{...},"strict":...}}. llama.cpp's server also reads a
// "schema" next to "type":"json_object"; so does the gateway.
type responseFormat struct {
	Type       string          `json:"type"`
	Schema     json.RawMessage `json:"schema"`
	JSONSchema *struct {
		Name   string          `json:"name"`
		Schema json.RawMessage `json:"schema"`
		Strict *bool           `json:"strict"`
	} `json:"json_schema"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"` // a string or [{"type":"text","text":...}]
	Name    string          `json:"name,omitempty"`
	// An assistant turn's calls; the call a tool turn answers.
	ToolCalls  []toolCall `json:"tool_calls"`
	ToolCallID string     `json:"tool_call_id"`
}

// text is the message's content: a string, or its text parts joined.
func (m *chatMessage) text() (string, error) {
	raw := bytes.TrimSpace(m.Content)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("content must be a string or an array of text parts")
	}
	var b bytes.Buffer
	for _, p := range parts {
		if p.Type != "text" {
			return "", fmt.Errorf("content part type %q is not supported (text only)", p.Type)
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// stringOrList reads a field that is a string or an array of strings.
func stringOrList(raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
	var l []string
	err := json.Unmarshal(raw, &l)
	return l, err
}

// logprobsField reads "logprobs": a bool (chat) or a number of
// alternatives (completions).
func logprobsField(raw json.RawMessage) (on bool, top int32, err error) {
	raw = bytes.TrimSpace(raw)
	switch string(raw) {
	case "", "null", "false":
		return false, 0, nil
	case "true":
		return true, 0, nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 32)
	if err != nil || n < 0 {
		return false, 0, fmt.Errorf("logprobs must be a boolean or a non-negative integer")
	}
	return true, int32(n), nil
}

type usage struct {
	PromptTokens        int32 `json:"prompt_tokens"`
	CompletionTokens    int32 `json:"completion_tokens"`
	TotalTokens         int32 `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int32 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

// chatCompletion is a chat.completion or a chat.completion.chunk.
type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	// A *usage, or null in the chunks before the usage chunk when
	// stream_options.include_usage asks for it; absent otherwise.
	Usage any `json:"usage,omitempty"`
}

type chatChoice struct {
	Index        int           `json:"index"`
	Message      *messageOut   `json:"message,omitempty"`
	Delta        *chatOut      `json:"delta,omitempty"`
	Logprobs     *chatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

// chatOut is a streamed delta.
type chatOut struct {
	Role      string     `json:"role,omitempty"`
	Content   *string    `json:"content,omitempty"`
	ToolCalls []toolCall `json:"tool_calls,omitempty"`
}

// messageOut is a whole answer's message: content null when the reply is
// only tool calls, as OpenAI's.
type messageOut struct {
	Role      string     `json:"role"`
	Content   *string    `json:"content"`
	ToolCalls []toolCall `json:"tool_calls,omitempty"`
}

type chatLogprobs struct {
	Content []tokenLogprob `json:"content"`
}

type tokenLogprob struct {
	Token       string         `json:"token"`
	Logprob     float32        `json:"logprob"`
	Bytes       []int          `json:"bytes"`
	TopLogprobs []tokenLogprob `json:"top_logprobs,omitempty"`
}

// textCompletion is a text_completion, streamed or not.
type textCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []textChoice `json:"choices"`
	Usage   any          `json:"usage,omitempty"`
}

type textChoice struct {
	Text         string        `json:"text"`
	Index        int           `json:"index"`
	Logprobs     *textLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

type textLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// corelm's own: the context a request may fill.
	MaxModelLen int32 `json:"max_model_len,omitempty"`
}

type modelList struct {
	Object string        `json:"object"`
	Data   []modelObject `json:"data"`
}

// apiError is OpenAI's error body.
type apiError struct {
	Error errorBody `json:"error"`
}

type errorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}
