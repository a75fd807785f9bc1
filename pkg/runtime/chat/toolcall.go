package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/corelm/corelm/pkg/runtime/grammar"
)

// ToolFormat is how a model family writes a tool call in its reply.
type ToolFormat uint8

const (
	// NoTools: the template takes no tools (or is the ChatML fallback).
	NoTools ToolFormat = iota
	// Llama3Tools: Llama-3.1/3.2's JSON tool calls, one per reply:
	// {"name": "f", "parameters": {...}}, optionally after <|python_tag|>.
	Llama3Tools
	// HermesTools: Qwen2.5's (and Hermes') calls, one or more:
	// <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>.
	HermesTools
)

var toolFormatNames = [...]string{NoTools: "none", Llama3Tools: "llama3", HermesTools: "hermes"}

func (f ToolFormat) String() string {
	if int(f) < len(toolFormatNames) {
		return toolFormatNames[f]
	}
	return fmt.Sprintf("ToolFormat(%d)", int(f))
}

// ToolFormat says how the model whose template this is writes tool calls,
// from the template's own text (what it tells the model and how it renders
// past calls).
func (t *Template) ToolFormat() ToolFormat {
	switch {
	case t.IsChatML():
		return NoTools
	case strings.Contains(t.src, "<tool_call>"):
		return HermesTools
	case strings.Contains(t.src, `"parameters": `) && strings.Contains(t.src, "tool_call.arguments"):
		return Llama3Tools
	}
	return NoTools
}

// ErrToolFormat is wrapped by errors about tools the format cannot serve.
var ErrToolFormat = errors.New("chat: tool calls")

// argsKey is the member holding a call's arguments in f's JSON.
func (f ToolFormat) argsKey() string {
	if f == Llama3Tools {
		return "parameters"
	}
	return "arguments"
}

// maxParallelCalls bounds the calls of one forced reply (Hermes format).
const maxParallelCalls = 4

// CallGrammar returns GBNF for a reply that is a call of one of tools (all
// of them when only is "", else the one named only), the arguments valid
// under the tool's parameter schema: what a reply must be when the
// request's tool choice is "required" or names a tool. A parameter schema
// with unsupported keywords is refused (grammar.ErrUnsupported), naming
// the tool.
func (f ToolFormat) CallGrammar(tools []Tool, only string) (string, error) {
	if f == NoTools {
		return "", fmt.Errorf("%w: this model's chat template takes no tools", ErrToolFormat)
	}
	var branches []string
	for _, t := range tools {
		if only != "" && t.Name != only {
			continue
		}
		params := strings.TrimSpace(t.Parameters)
		if params == "" {
			params = `{"type":"object"}`
		}
		name, _ := json.Marshal(t.Name)
		branches = append(branches, fmt.Sprintf(
			`{"type":"object","properties":{"name":{"const":%s},%q:%s},"required":["name",%q],"additionalProperties":false}`,
			name, f.argsKey(), params, f.argsKey()))
		// Each tool's schema is checked on its own, so the error names it.
		if _, err := grammar.JSONSchemaGBNF([]byte(branches[len(branches)-1])); err != nil {
			return "", fmt.Errorf("tool %q parameters: %w", t.Name, err)
		}
	}
	if len(branches) == 0 {
		if only != "" {
			return "", fmt.Errorf("%w: tool_choice names %q, which is not among the tools", ErrToolFormat, only)
		}
		return "", fmt.Errorf("%w: tool_choice requires a call but no tools are given", ErrToolFormat)
	}
	schema := branches[0]
	if len(branches) > 1 {
		schema = `{"anyOf":[` + strings.Join(branches, ",") + `]}`
	}
	src, err := grammar.JSONSchemaGBNF([]byte(schema))
	if err != nil {
		return "", err
	}
	if f == Llama3Tools {
		return src, nil
	}
	// The schema's start rule becomes one call; root is a few of them.
	src = strings.Replace(src, "root ::= ", "tool-call-json ::= ", 1)
	return fmt.Sprintf("root ::= tool-call (\"\\n\" tool-call){0,%d}\ntool-call ::= \"<tool_call>\\n\" tool-call-json \"\\n</tool_call>\"\n",
		maxParallelCalls-1) + src, nil
}

var hermesCall = regexp.MustCompile(`(?s)<tool_call>\s*(.*?)\s*</tool_call>`)

// ParseCalls finds the tool calls in a reply. content is the text that is
// not a call (trimmed); calls is empty when the reply calls nothing. A
// block that looks like a call but does not parse is left in content.
func (f ToolFormat) ParseCalls(reply string) (content string, calls []ToolCall) {
	switch f {
	case Llama3Tools:
		text := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(reply), "<|python_tag|>"))
		if c, ok := f.parseCall(text); ok {
			return "", []ToolCall{c}
		}
		return reply, nil
	case HermesTools:
		var rest strings.Builder
		last := 0
		for _, m := range hermesCall.FindAllStringSubmatchIndex(reply, -1) {
			c, ok := f.parseCall(reply[m[2]:m[3]])
			if !ok {
				continue
			}
			rest.WriteString(reply[last:m[0]])
			last = m[1]
			calls = append(calls, c)
		}
		if len(calls) == 0 {
			return reply, nil
		}
		rest.WriteString(reply[last:])
		return strings.TrimSpace(rest.String()), calls
	}
	return reply, nil
}

// parseCall reads {"name": ..., <args key>: {...}}; the arguments are
// returned as compact JSON.
func (f ToolFormat) parseCall(text string) (ToolCall, bool) {
	var raw struct {
		Name       *string         `json:"name"`
		Parameters json.RawMessage `json:"parameters"`
		Arguments  json.RawMessage `json:"arguments"`
	}
	d := json.NewDecoder(strings.NewReader(text))
	if err := d.Decode(&raw); err != nil || d.More() || raw.Name == nil {
		return ToolCall{}, false
	}
	args := raw.Arguments
	if f == Llama3Tools || len(args) == 0 {
		args = raw.Parameters
	}
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(args, &obj) != nil {
		return ToolCall{}, false
	}
	var buf bytes.Buffer
	if json.Compact(&buf, args) != nil {
		return ToolCall{}, false
	}
	return ToolCall{Name: *raw.Name, Arguments: buf.String()}, true
}
