package server

import (
	"crypto/rand"
	"encoding/json"
	"strings"

	"github.com/corelm/corelm/pkg/runtime/chat"
	"github.com/corelm/corelm/pkg/runtime/constrain"
	"github.com/corelm/corelm/pkg/runtime/sched"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// toolPlan is what a chat request's tools ask of its generation: which
// tools the template renders, and whether the reply is forced to be a
// call (generated under the format's call grammar) or only parsed for
// calls at the end.
type toolPlan struct {
	format chat.ToolFormat
	tools  []chat.Tool
	forced bool   // REQUIRED or FUNCTION
	only   string // FUNCTION: the tool's name
}

// readTools checks a chat prompt's tools and choice against e's template.
// It returns nil when the reply is plain text: no tools, or choice NONE
// (whose tools are then not rendered).
func readTools(e *entry, c *corelmv1.ChatPrompt) (*toolPlan, error) {
	choice := c.GetToolChoice()
	mode := choice.GetMode()
	if mode == corelmv1.ToolChoice_MODE_UNSPECIFIED {
		mode = corelmv1.ToolChoice_MODE_AUTO
	}
	if choice.GetFunction() != "" && mode != corelmv1.ToolChoice_MODE_FUNCTION {
		return nil, badRequestf("tool_choice: function %q is set but mode is %v (want MODE_FUNCTION)", choice.GetFunction(), mode)
	}
	if len(c.GetTools()) == 0 {
		switch mode {
		case corelmv1.ToolChoice_MODE_REQUIRED, corelmv1.ToolChoice_MODE_FUNCTION:
			return nil, badRequestf("tool_choice %v: no tools are given", mode)
		}
		return nil, nil
	}
	p := &toolPlan{format: e.chat.ToolFormat()}
	seen := map[string]bool{}
	for i, t := range c.GetTools() {
		name := t.GetName()
		switch {
		case name == "":
			return nil, badRequestf("tools[%d]: a tool needs a name", i)
		case seen[name]:
			return nil, badRequestf("tools[%d]: tool %q is given twice", i, name)
		}
		seen[name] = true
		if params := strings.TrimSpace(t.GetParameters()); params != "" {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal([]byte(params), &obj); err != nil {
				return nil, badRequestf("tools[%d] (%q): parameters must be a JSON Schema object: %v", i, name, err)
			}
		}
		p.tools = append(p.tools, chat.Tool{Name: name, Description: t.GetDescription(), Parameters: t.GetParameters()})
	}
	switch mode {
	case corelmv1.ToolChoice_MODE_NONE:
		return nil, nil
	case corelmv1.ToolChoice_MODE_AUTO:
	case corelmv1.ToolChoice_MODE_REQUIRED:
		p.forced = true
	case corelmv1.ToolChoice_MODE_FUNCTION:
		if !seen[choice.GetFunction()] {
			return nil, badRequestf("tool_choice: function %q is not among the tools", choice.GetFunction())
		}
		p.forced, p.only = true, choice.GetFunction()
	default:
		return nil, badRequestf("tool_choice: unknown mode %v", mode)
	}
	if p.format == chat.NoTools {
		return nil, badRequestf("tools: this model's chat template does not take tools (tool_choice NONE sends none)")
	}
	return p, nil
}

// callConstraint is the constraint of a forced call: the format's call
// grammar over the tools' parameter schemas. A schema keyword the grammar
// cannot enforce is refused, naming the tool and the keyword.
func (p *toolPlan) callConstraint(e *entry, stops []int32) (sched.Constraint, error) {
	src, err := p.format.CallGrammar(p.tools, p.only)
	if err != nil {
		return nil, badRequestf("tools: %v", err)
	}
	return compiledConstraint(e, constrain.Spec{Kind: constrain.GBNF, Text: src}, stops)
}

// callStream follows a tool-calling reply as it is generated. Token text
// that is, or may become, a call in the model's format is held back, so
// that the text of a call never reaches the client as plain text (as
// llama.cpp's server and vLLM stream tool calls): with a forced choice all
// of it; with AUTO, from where the reply may begin a call (Llama-3.1: a
// reply whose first non-blank text is "{" or "<|python_tag|>"; Hermes:
// from "<tool_call>", and a trailing prefix of it until the next token
// decides). The end parses what was held: its calls go to the final
// frame, the rest goes out as text.
type callStream struct {
	p       *toolPlan
	reply   strings.Builder // the whole reply so far
	sent    int             // bytes of reply sent as token text
	holding bool            // from sent on, everything is held to the end
	plain   bool            // Llama-3.1: the reply is known not to be a call
}

const (
	hermesOpen = "<tool_call>"
	pythonTag  = "<|python_tag|>"
)

// token takes one token's text and returns what of the reply may be sent
// now.
func (c *callStream) token(text string) string {
	c.reply.WriteString(text)
	if c.p.forced || c.holding {
		return ""
	}
	s := c.reply.String()
	end := len(s) // s[c.sent:end] goes out now
	switch c.p.format {
	case chat.Llama3Tools:
		if !c.plain {
			t := strings.TrimLeft(s, " \t\r\n")
			switch {
			case t == "" || strings.HasPrefix(pythonTag, t):
				return "" // undecided
			case strings.HasPrefix(t, "{") || strings.HasPrefix(t, pythonTag):
				c.holding = true
				return ""
			}
			c.plain = true
		}
	case chat.HermesTools:
		if i := strings.Index(s[c.sent:], hermesOpen); i >= 0 {
			end, c.holding = c.sent+i, true
		} else {
			for k := min(len(hermesOpen)-1, len(s)-c.sent); k > 0; k-- {
				if strings.HasSuffix(s, hermesOpen[:k]) {
					end = len(s) - k
					break
				}
			}
		}
	}
	out := s[c.sent:end]
	c.sent = end
	return out
}

// finish takes the final frame's own text and returns the text still to
// send and the calls of the reply. Calls count only in a reply the model
// ended; a reply cut short keeps its partial call as text.
func (c *callStream) finish(text string, stopped bool) (string, []*corelmv1.ToolCall) {
	c.reply.WriteString(text)
	rest := c.reply.String()[c.sent:]
	if !stopped {
		return rest, nil
	}
	content, calls := c.p.format.ParseCalls(rest)
	if len(calls) == 0 {
		return rest, nil
	}
	out := make([]*corelmv1.ToolCall, len(calls))
	for i, call := range calls {
		out[i] = &corelmv1.ToolCall{Id: newCallID(), Name: call.Name, Arguments: call.Arguments}
	}
	return content, out
}

// newCallID is a call id in OpenAI's shape: "call_" and 24 letters and
// digits.
func newCallID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var b [24]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "call_" + string(b[:])
}
