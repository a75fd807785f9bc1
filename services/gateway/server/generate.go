package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// defaultCompletionTokens is max_tokens of a completion that gives none:
// OpenAI's 16. A chat completion without it runs to the end of the turn
// (or of the context), as OpenAI's does.
const defaultCompletionTokens = 16

// kind is which endpoint a generation came in on.
type kind int

const (
	kindChat kind = iota
	kindCompletion
)

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	s.generate(w, r, kindChat)
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	s.generate(w, r, kindCompletion)
}

// generate answers a chat completion or a completion with one
// GenerateStream call: cancelled when the client goes away (the request's
// context), so its sequence stops within a decode step.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, k kind) {
	// The whole body is read before the call: only then does net/http
	// watch the connection and cancel the context when the client closes.
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, err)
		return
	}
	var req generateRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, badParam("", "the body is not a valid request: %v", err))
		return
	}
	start, err := toStart(&req, k)
	if err != nil {
		writeError(w, err)
		return
	}
	start.RequestId = newID(k)
	if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
		span.SetAttributes(attribute.String("gen_ai.request.model", req.Model), attribute.String("corelm.request_id", start.RequestId))
		if req.User != "" {
			span.SetAttributes(attribute.String("enduser.id", req.User))
		}
	}
	stream, err := s.client.GenerateStream(s.outgoing(r), start)
	if err != nil {
		writeError(w, err)
		return
	}
	// Errors before the first token (unknown model, bad parameters,
	// overload) are the call's status, seen on the first receive: answer
	// them with their HTTP status before any stream begins.
	first, err := stream.Recv()
	if err != nil {
		if err == io.EOF {
			err = errors.New("inference ended the generation without a final frame")
		}
		writeError(w, err)
		return
	}
	out := &output{kind: k, id: start.RequestId, model: req.Model, created: time.Now().Unix(),
		logprobs: start.GetLogprobs(), includeUsage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage}
	recv := func() (*corelmv1.GenerateResponse, error) {
		if first != nil {
			m := first
			first = nil
			return m, nil
		}
		return stream.Recv()
	}
	if req.Stream {
		s.stream(w, r, out, recv)
		return
	}
	for {
		m, err := recv()
		if err != nil {
			if err == io.EOF {
				err = errors.New("inference ended the generation without a final frame")
			}
			writeError(w, err)
			return
		}
		if f := m.GetFinal(); f != nil {
			if err := finalError(f); err != nil {
				writeError(w, err)
				return
			}
			out.add(m)
			writeJSON(w, http.StatusOK, out.whole())
			return
		}
		out.add(m)
	}
}

// stream writes the generation as server-sent events, ending with
// "data: [DONE]". Once the first event is out the status is 200 for good:
// a later error is an event with OpenAI's error body.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, out *output, recv func() (*corelmv1.GenerateResponse, error)) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(v any) bool {
		b, err := json.Marshal(v)
		if err == nil {
			_, err = fmt.Fprintf(w, "data: %s\n\n", b)
		}
		if err == nil {
			err = rc.Flush()
		}
		return err == nil
	}
	if c := out.roleChunk(); c != nil && !send(c) {
		return
	}
	for {
		m, err := recv()
		if err != nil {
			// A client that went away reads nothing more; a timeout is
			// told to the client, which is still there.
			if !errors.Is(r.Context().Err(), context.Canceled) {
				send(toHTTP(err).body)
				fmt.Fprint(w, "data: [DONE]\n\n")
				rc.Flush()
			}
			return
		}
		switch fr := m.GetFrame().(type) {
		case *corelmv1.GenerateResponse_Progress:
			// A comment: keeps idle-timeout proxies from closing the
			// stream during a long prefill; SSE clients skip it.
			fmt.Fprintf(w, ": prompt %d/%d\n\n", fr.Progress.GetProcessedTokens(), fr.Progress.GetTotalTokens())
			if rc.Flush() != nil {
				return
			}
		case *corelmv1.GenerateResponse_Token:
			if c := out.tokenChunk(fr.Token); c != nil && !send(c) {
				return
			}
		case *corelmv1.GenerateResponse_Final:
			if err := finalError(fr.Final); err != nil {
				send(toHTTP(err).body)
			} else {
				for _, c := range out.finalChunks(fr.Final) {
					if !send(c) {
						return
					}
				}
			}
			fmt.Fprint(w, "data: [DONE]\n\n")
			rc.Flush()
			return
		}
	}
}

// finalError is the error a final frame reports, nil when it ended well.
func finalError(f *corelmv1.GenerateFinal) error {
	if f.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_ERROR {
		return nil
	}
	return statusOf(f.GetErrorCode(), f.GetErrorMessage())
}

// toStart maps an OpenAI request to corelm's GenerateStart.
func toStart(req *generateRequest, k kind) (*corelmv1.GenerateStart, error) {
	if req.Model == "" {
		return nil, badParam("model", "model is required")
	}
	if req.N != nil && *req.N != 1 {
		return nil, badParam("n", "n=%d is not supported: corelm generates one choice per request (n=1)", *req.N)
	}
	start := &corelmv1.GenerateStart{ModelId: req.Model}
	switch k {
	case kindChat:
		if len(req.Messages) == 0 {
			return nil, badParam("messages", "messages is required")
		}
		chat := &corelmv1.ChatPrompt{AddGenerationPrompt: true}
		called := map[string]string{} // call id → function name
		for i, m := range req.Messages {
			role := m.Role
			switch role {
			case "system", "user", "assistant", "tool":
			case "developer": // OpenAI's newer name for system
				role = "system"
			default:
				return nil, badParam(fmt.Sprintf("messages[%d].role", i), "role %q is not supported (system, developer, user, assistant, tool)", m.Role)
			}
			text, err := m.text()
			if err != nil {
				return nil, badParam(fmt.Sprintf("messages[%d].content", i), "%v", err)
			}
			msg := &corelmv1.ChatMessage{Role: role, Content: text}
			if len(m.ToolCalls) > 0 && role != "assistant" {
				return nil, badParam(fmt.Sprintf("messages[%d].tool_calls", i), "only assistant messages have tool_calls")
			}
			for j, c := range m.ToolCalls {
				if c.Type != "" && c.Type != "function" {
					return nil, badParam(fmt.Sprintf("messages[%d].tool_calls[%d].type", i, j), "tool call type %q is not supported (function)", c.Type)
				}
				msg.ToolCalls = append(msg.ToolCalls, &corelmv1.ToolCall{Id: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
				called[c.ID] = c.Function.Name
			}
			if role == "tool" {
				if m.ToolCallID == "" {
					return nil, badParam(fmt.Sprintf("messages[%d].tool_call_id", i), "a tool message needs the tool_call_id it answers")
				}
				msg.ToolCallId, msg.Name = m.ToolCallID, m.Name
				if msg.Name == "" {
					msg.Name = called[m.ToolCallID] // templates that write the tool's name find it
				}
			}
			chat.Messages = append(chat.Messages, msg)
		}
		if err := chatTools(req, chat); err != nil {
			return nil, err
		}
		start.Prompt = &corelmv1.GenerateStart_Chat{Chat: chat}
	case kindCompletion:
		if req.Echo {
			return nil, badParam("echo", "echo is not supported")
		}
		if req.Suffix != nil && *req.Suffix != "" {
			return nil, badParam("suffix", "suffix is not supported")
		}
		p, err := completionPrompt(req.Prompt)
		if err != nil {
			return nil, err
		}
		start.Prompt = p
	}

	switch {
	case req.MaxCompletionTokens != nil:
		start.MaxTokens = *req.MaxCompletionTokens
	case req.MaxTokens != nil:
		start.MaxTokens = *req.MaxTokens
	case k == kindCompletion:
		start.MaxTokens = defaultCompletionTokens
	}
	if start.MaxTokens < 0 {
		return nil, badParam("max_tokens", "max_tokens must not be negative")
	}
	stop, err := stringOrList(req.Stop)
	if err != nil {
		return nil, badParam("stop", "stop must be a string or an array of strings")
	}
	start.Stop = stop

	on, top, err := logprobsField(req.Logprobs)
	if err != nil {
		return nil, badParam("logprobs", "%v", err)
	}
	if req.TopLogprobs != nil {
		if k == kindChat && !on && *req.TopLogprobs > 0 {
			return nil, badParam("top_logprobs", "top_logprobs needs logprobs: true")
		}
		top = *req.TopLogprobs
	}
	if top < 0 || top > 20 {
		return nil, badParam("top_logprobs", "top_logprobs must be between 0 and 20")
	}
	start.Logprobs, start.TopLogprobs = on, top

	sp := &corelmv1.SamplingParams{
		Temperature: req.Temperature, TopP: req.TopP, TopK: req.TopK, MinP: req.MinP, TypicalP: req.TypicalP,
		RepeatLastN: req.RepeatLastN, PresencePenalty: req.PresencePenalty, FrequencyPenalty: req.FrequencyPenalty,
		RepetitionPenalty: req.RepeatPenalty,
	}
	if req.RepetitionPenalty != nil {
		sp.RepetitionPenalty = req.RepetitionPenalty
	}
	if req.Seed != nil {
		seed := uint64(*req.Seed)
		sp.Seed = &seed
	}
	for key, bias := range req.LogitBias {
		id, err := strconv.ParseInt(key, 10, 32)
		if err != nil {
			return nil, badParam("logit_bias", "logit_bias keys are token ids, not %q", key)
		}
		if sp.LogitBias == nil {
			sp.LogitBias = map[int32]float32{}
		}
		sp.LogitBias[int32(id)] = bias
	}
	start.Sampling = sp
	c, err := outputConstraint(req)
	if err != nil {
		return nil, err
	}
	start.Constraint = c
	return start, nil
}

// chatTools maps OpenAI's tools and tool_choice onto the chat prompt.
// Inference checks the tools against the model's template and the
// schemas of a forced call against what it enforces.
func chatTools(req *generateRequest, chat *corelmv1.ChatPrompt) error {
	for i, t := range req.Tools {
		if t.Type != "function" || t.Function == nil {
			return badParam(fmt.Sprintf("tools[%d]", i), "a tool must be {\"type\": \"function\", \"function\": {...}}")
		}
		tool := &corelmv1.Tool{Name: t.Function.Name, Description: t.Function.Description}
		if !isNull(t.Function.Parameters) {
			tool.Parameters = string(t.Function.Parameters)
		}
		chat.Tools = append(chat.Tools, tool)
	}
	raw := bytes.TrimSpace(req.ToolChoice)
	if isNull(raw) {
		return nil
	}
	var mode string
	if json.Unmarshal(raw, &mode) == nil {
		m, ok := map[string]corelmv1.ToolChoice_Mode{"auto": corelmv1.ToolChoice_MODE_AUTO, "none": corelmv1.ToolChoice_MODE_NONE,
			"required": corelmv1.ToolChoice_MODE_REQUIRED}[mode]
		if !ok {
			return badParam("tool_choice", "tool_choice %q is not supported (none, auto, required, or a function)", mode)
		}
		chat.ToolChoice = &corelmv1.ToolChoice{Mode: m}
		return nil
	}
	var named struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if json.Unmarshal(raw, &named) != nil || named.Type != "function" || named.Function.Name == "" {
		return badParam("tool_choice", `tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}`)
	}
	chat.ToolChoice = &corelmv1.ToolChoice{Mode: corelmv1.ToolChoice_MODE_FUNCTION, Function: named.Function.Name}
	return nil
}

// outputConstraint maps response_format (and llama.cpp's grammar and
// json_schema fields) onto the request's output constraint. Inference
// compiles it and refuses what it does not support, naming it.
func outputConstraint(req *generateRequest) (*corelmv1.OutputConstraint, error) {
	var cs []*corelmv1.OutputConstraint
	var params []string
	schema := func(raw json.RawMessage) *corelmv1.OutputConstraint {
		return &corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_JsonSchema{JsonSchema: string(raw)}}
	}
	if rf := req.ResponseFormat; rf != nil {
		switch rf.Type {
		case "", "text":
		case "json_object":
			c := &corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_JsonObject{JsonObject: true}}
			if !isNull(rf.Schema) {
				c = schema(rf.Schema)
			}
			cs, params = append(cs, c), append(params, "response_format")
		case "json_schema":
			if rf.JSONSchema == nil || isNull(rf.JSONSchema.Schema) {
				return nil, badParam("response_format.json_schema.schema", "a json_schema response format needs json_schema.schema")
			}
			cs, params = append(cs, schema(rf.JSONSchema.Schema)), append(params, "response_format")
		default:
			return nil, badParam("response_format.type", "response_format type %q is not supported (text, json_object, json_schema)", rf.Type)
		}
	}
	if req.Grammar != nil && *req.Grammar != "" {
		cs = append(cs, &corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_Grammar{Grammar: *req.Grammar}})
		params = append(params, "grammar")
	}
	if !isNull(req.JSONSchema) {
		cs, params = append(cs, schema(req.JSONSchema)), append(params, "json_schema")
	}
	switch len(cs) {
	case 0:
		return nil, nil
	case 1:
		return cs[0], nil
	}
	return nil, badParam(params[1], "only one of response_format, grammar and json_schema may constrain the output (got %s)", strings.Join(params, ", "))
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// completionPrompt reads a completion's prompt: a string, or one prompt
// in an array (of a string or of token ids), or token ids.
func completionPrompt(raw json.RawMessage) (*corelmv1.GenerateStart_Text, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, badParam("prompt", "prompt is required")
	}
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return &corelmv1.GenerateStart_Text{Text: text}, nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		if len(list) != 1 {
			return nil, badParam("prompt", "%d prompts: corelm completes one prompt per request", len(list))
		}
		return &corelmv1.GenerateStart_Text{Text: list[0]}, nil
	}
	return nil, badParam("prompt", "prompt must be a string (token-id prompts are not supported)")
}

// newID is a response id in OpenAI's shape, also the request_id of the
// inference call (in its logs and spans).
func newID(k kind) string {
	var b [12]byte
	rand.Read(b[:])
	if k == kindChat {
		return "chatcmpl-" + hex.EncodeToString(b[:])
	}
	return "cmpl-" + hex.EncodeToString(b[:])
}
