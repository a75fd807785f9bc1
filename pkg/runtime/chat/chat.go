// Package chat renders a conversation into a model's prompt with the chat
// template the model ships (GGUF tokenizer.chat_template, a Jinja template),
// as Hugging Face transformers and llama.cpp do.
//
// Templates run on github.com/ardanlabs/jinja, a Jinja engine written for
// exactly these templates (raise_exception, strftime_now, tojson, loop
// variables, namespace, slicing), with no dependencies. The real templates of
// Llama-3.1/3.2, Qwen2.5, Gemma-2 and Phi-3.5 are tested against
// hand-written expected prompts.
//
// A model without a template, or with one that does not compile, is an
// error from Compile; Load turns that into the documented fallback, ChatML
// (<|im_start|>role\ncontent<|im_end|>\n), together with the error so that
// callers can warn or refuse.
package chat

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"` // system, user, assistant, tool, …
	Content string `json:"content"`
	// ToolCalls are the calls an assistant turn made.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID and Name say which call a tool turn answers.
	ToolCallID string `json:"tool_call_id,omitempty"`
	Name       string `json:"name,omitempty"`
}

// ToolCall is one function call of an assistant turn.
type ToolCall struct {
	ID        string
	Name      string
	Arguments string // a JSON object
}

// Tool is a function the model may call.
type Tool struct {
	Name        string
	Description string
	Parameters  string // a JSON Schema of the arguments; "" for none
}

// Options are the variables a template sees besides messages.
type Options struct {
	// AddGenerationPrompt ends the prompt with the header of an assistant
	// turn, so that the model writes the reply.
	AddGenerationPrompt bool
	// BOSToken and EOSToken are the texts of the model's BOS/EOS tokens
	// (bos_token, eos_token). Templates that write bos_token (Llama-3.x,
	// Gemma-2) already start the prompt with it: encode such a prompt
	// without adding another BOS, with control tokens parsed.
	BOSToken, EOSToken string
	// Now is the time strftime_now() reports (Llama-3.2 writes today's
	// date into its system header); zero means the current time.
	Now time.Time
	// Tools are offered to the model as the template's "tools" variable
	// (OpenAI's shape: {"type": "function", "function": {name,
	// description, parameters}}); none means the variable is undefined.
	Tools []Tool
	// Vars are further template variables (date_string, …); they
	// override the ones above.
	Vars map[string]any
	// Literal, when set, finds the parts of a message's role or content
	// that must stay literal text (tokenizer.ControlSpans: the text of the
	// model's control tokens, with which a user could otherwise forge turns
	// of the conversation). RenderPrompt reports where they end up in the
	// prompt. Render ignores it.
	Literal func(s string) [][2]int
}

// Prompt is a rendered conversation.
type Prompt struct {
	Text string
	// Literal holds the byte ranges of Text, sorted and disjoint, that
	// Options.Literal marked in a message: tokenize them as plain text
	// (tokenizer.EncodeOptions.Literal) while the template's own control
	// tokens are parsed.
	Literal [][2]int
}

// Errors wrap one of these.
var (
	// ErrNoTemplate: the model has no chat template.
	ErrNoTemplate = errors.New("chat: model has no chat template")
	// ErrTemplate: the template does not compile.
	ErrTemplate = errors.New("chat: invalid chat template")
	// ErrRender: the template failed on these messages, e.g. by
	// raise_exception("System role not supported").
	ErrRender = errors.New("chat: cannot render conversation")
	// ErrLiteral: the template cut or rewrote a message's text so that its
	// literal parts (Options.Literal) can no longer be told apart from the
	// template's own text.
	ErrLiteral = errors.New("chat: the template rewrote a message's control-token text")
)

// ChatMLSource is the fallback template: ChatML as Qwen and many
// fine-tunes use it.
const ChatMLSource = `{%- for message in messages -%}
{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- endif -%}`

// Template is a compiled chat template, safe for concurrent use.
type Template struct {
	src string
	t   *jinja.Template
}

var chatML = func() *Template {
	t, err := Compile(ChatMLSource)
	if err != nil {
		panic(err)
	}
	return t
}()

// ChatML returns the fallback template.
func ChatML() *Template { return chatML }

// Compile parses a template.
func Compile(src string) (*Template, error) {
	if strings.TrimSpace(src) == "" {
		return nil, ErrNoTemplate
	}
	t, err := jinja.Compile(rewriteTojson(src))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTemplate, err)
	}
	return &Template{src: src, t: t}, nil
}

// Load compiles a model's template, falling back to ChatML when there is
// none or it does not compile. The template is never nil; err says why the
// fallback was taken.
func Load(src string) (*Template, error) {
	t, err := Compile(src)
	if err != nil {
		return chatML, err
	}
	return t, nil
}

// Source is the template's text.
func (t *Template) Source() string { return t.src }

// IsChatML reports whether t is the fallback template.
func (t *Template) IsChatML() bool { return t == chatML }

// Render renders msgs.
func (t *Template) Render(msgs []Message, opts Options) (string, error) {
	return t.render(msgs, opts, nil)
}

// RenderPrompt renders msgs and reports which bytes of the prompt are the
// literal parts of their roles and contents (Options.Literal).
//
// Each literal part is rendered between two markers made with a random
// nonce, so that no message can forge one: the markers travel with the
// text through the template (concatenation, trim, case changes) and are
// then cut out, leaving the prompt Render gives. A template that cuts or
// rewrites a marked part (slicing, replace) is ErrLiteral: the request
// cannot be rendered safely, rather than silently unsafely. Templates that
// measure a message (length) see the markers; the real ones do not.
func (t *Template) RenderPrompt(msgs []Message, opts Options) (Prompt, error) {
	if opts.Literal == nil {
		text, err := t.render(msgs, opts, nil)
		return Prompt{Text: text}, err
	}
	mk := &marking{find: opts.Literal}
	mk.open, mk.close = markers()
	text, err := t.render(msgs, opts, mk)
	if err != nil || !mk.found {
		return Prompt{Text: text}, err
	}
	p, err := unmark(text, mk.open, mk.close)
	if err != nil {
		return Prompt{}, err
	}
	// A template that cut into an opening marker cut the text after it
	// too; what is left of the marker must not reach the model.
	if !mk.runes && strings.ContainsAny(p.Text, markerRunes) {
		return Prompt{}, ErrLiteral
	}
	return p, nil
}

// marking puts the literal parts (Options.Literal) of every string a
// request gives the template between markers: roles, contents, names and
// ids, tool descriptions, and the strings (keys too) inside tool
// parameters and call arguments, after their JSON is decoded, so that an
// escaped control token ("\u003c|eot_id|\u003e") is marked too. A nil
// *marking marks nothing.
type marking struct {
	find        func(string) [][2]int
	open, close string
	found       bool // some string had a literal part
	runes       bool // some string had marker runes of its own
}

func (mk *marking) str(s string) jinja.Value {
	if mk == nil {
		return jinja.NewString(s)
	}
	mk.runes = mk.runes || strings.ContainsAny(s, markerRunes)
	out, ok := mark(s, mk.find(s), mk.open, mk.close)
	mk.found = mk.found || ok
	return jinja.NewString(out)
}

// markerRunes are the noncharacters the markers are made of.
const markerRunes = "\uFDD0\uFDD1"

// markers returns a fresh pair of literal markers: noncharacters around a
// random decimal nonce (decimal, so that case changes keep them).
func markers() (open, close string) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	n := strconv.FormatUint(binary.LittleEndian.Uint64(b[:]), 10)
	return "\uFDD0" + n + "\uFDD1", "\uFDD1" + n + "\uFDD0"
}

// mark puts each span of s between open and close.
func mark(s string, spans [][2]int, open, close string) (string, bool) {
	if len(spans) == 0 {
		return s, false
	}
	var sb strings.Builder
	prev := 0
	for _, sp := range spans {
		sb.WriteString(s[prev:sp[0]])
		sb.WriteString(open)
		sb.WriteString(s[sp[0]:sp[1]])
		sb.WriteString(close)
		prev = sp[1]
	}
	sb.WriteString(s[prev:])
	return sb.String(), true
}

// unmark cuts the markers out of a rendered prompt and records the ranges
// they enclosed.
func unmark(text, open, close string) (Prompt, error) {
	var p Prompt
	var sb strings.Builder
	for {
		i := strings.Index(text, open)
		j := strings.Index(text, close)
		if i < 0 && j < 0 {
			break
		}
		if i < 0 || j < i {
			return Prompt{}, ErrLiteral
		}
		sb.WriteString(text[:i])
		body := text[i+len(open) : j]
		if strings.Contains(body, open) || body == "" {
			return Prompt{}, ErrLiteral
		}
		lo := sb.Len()
		sb.WriteString(body)
		if n := len(p.Literal); n > 0 && p.Literal[n-1][1] == lo {
			p.Literal[n-1][1] = sb.Len()
		} else {
			p.Literal = append(p.Literal, [2]int{lo, sb.Len()})
		}
		text = text[j+len(close):]
	}
	sb.WriteString(text)
	p.Text = sb.String()
	return p, nil
}

func (t *Template) render(msgs []Message, opts Options, mk *marking) (string, error) {
	list := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		v, err := messageValue(m, mk)
		if err != nil {
			return "", fmt.Errorf("%w: message %d: %v", ErrRender, i, err)
		}
		list[i] = v
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	data := map[string]any{
		"add_generation_prompt": opts.AddGenerationPrompt,
		"bos_token":             opts.BOSToken,
		"eos_token":             opts.EOSToken,
	}
	for k, v := range opts.Vars {
		data[k] = v
	}
	vals := make(map[string]jinja.Value, len(data)+3)
	for k, v := range data {
		vals[k] = jinja.FromGoValue(v)
	}
	vals["messages"] = jinja.NewList(list)
	vals[tojsonIndent] = jinja.NewCallable(tojsonIndent, tojsonIndentFilter)
	if len(opts.Tools) > 0 {
		tools, err := toolsValue(opts.Tools, mk)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrRender, err)
		}
		if _, set := opts.Vars["tools"]; !set {
			vals["tools"] = tools
		}
	}
	vals["strftime_now"] = jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		format := "%Y-%m-%d"
		if len(args) > 0 && args[0].IsString() {
			format = args[0].AsString()
		}
		return jinja.NewString(strftime(now, format)), nil
	})
	out, err := t.t.RenderValues(vals)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrRender, err)
	}
	return out, nil
}

// Render compiles template and renders msgs with it.
func Render(template string, msgs []Message, opts Options) (string, error) {
	t, err := Compile(template)
	if err != nil {
		return "", err
	}
	return t.Render(msgs, opts)
}

// strftime formats t with the C/Python directives chat templates use.
func strftime(t time.Time, format string) string {
	var sb strings.Builder
	pad := func(v, w int) {
		s := strconv.Itoa(v)
		for i := len(s); i < w; i++ {
			sb.WriteByte('0')
		}
		sb.WriteString(s)
	}
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			sb.WriteByte(c)
			continue
		}
		i++
		switch format[i] {
		case 'Y':
			pad(t.Year(), 4)
		case 'y':
			pad(t.Year()%100, 2)
		case 'm':
			pad(int(t.Month()), 2)
		case 'd':
			pad(t.Day(), 2)
		case 'e':
			if t.Day() < 10 {
				sb.WriteByte(' ')
			}
			sb.WriteString(strconv.Itoa(t.Day()))
		case 'H':
			pad(t.Hour(), 2)
		case 'I':
			pad((t.Hour()+11)%12+1, 2)
		case 'M':
			pad(t.Minute(), 2)
		case 'S':
			pad(t.Second(), 2)
		case 'p':
			sb.WriteString(map[bool]string{true: "AM", false: "PM"}[t.Hour() < 12])
		case 'j':
			pad(t.YearDay(), 3)
		case 'b', 'h':
			sb.WriteString(t.Month().String()[:3])
		case 'B':
			sb.WriteString(t.Month().String())
		case 'a':
			sb.WriteString(t.Weekday().String()[:3])
		case 'A':
			sb.WriteString(t.Weekday().String())
		case 'Z':
			name, _ := t.Zone()
			sb.WriteString(name)
		case '%':
			sb.WriteByte('%')
		default:
			sb.WriteByte('%')
			sb.WriteByte(format[i])
		}
	}
	return sb.String()
}

// Templates read messages and tools as Python dicts: the values here are
// ordered dicts, so tojson writes the members in the order the client sent
// them, as transformers does.

func dict(kv ...any) jinja.Value {
	d := jinja.NewDict()
	for i := 0; i+1 < len(kv); i += 2 {
		d.AsDict().Set(kv[i].(string), kv[i+1].(jinja.Value))
	}
	return d
}

func messageValue(m Message, mk *marking) (jinja.Value, error) {
	d := dict("role", mk.str(m.Role), "content", mk.str(m.Content))
	if len(m.ToolCalls) > 0 {
		calls := make([]jinja.Value, len(m.ToolCalls))
		for i, c := range m.ToolCalls {
			args, err := jsonValue(c.Arguments, mk)
			if err != nil {
				return jinja.Value{}, fmt.Errorf("tool call %d arguments: %v", i, err)
			}
			calls[i] = dict("id", mk.str(c.ID), "type", jinja.NewString("function"),
				"function", dict("name", mk.str(c.Name), "arguments", args))
		}
		d.AsDict().Set("tool_calls", jinja.NewList(calls))
	}
	if m.ToolCallID != "" {
		d.AsDict().Set("tool_call_id", mk.str(m.ToolCallID))
	}
	if m.Name != "" {
		d.AsDict().Set("name", mk.str(m.Name))
	}
	return d, nil
}

func toolsValue(tools []Tool, mk *marking) (jinja.Value, error) {
	list := make([]jinja.Value, len(tools))
	for i, t := range tools {
		fn := dict("name", mk.str(t.Name), "description", mk.str(t.Description))
		if t.Parameters != "" {
			p, err := jsonValue(t.Parameters, mk)
			if err != nil {
				return jinja.Value{}, fmt.Errorf("tool %q parameters: %v", t.Name, err)
			}
			fn.AsDict().Set("parameters", p)
		}
		list[i] = dict("type", jinja.NewString("function"), "function", fn)
	}
	return jinja.NewList(list), nil
}

// jsonValue decodes JSON text into a template value, keeping object
// members in order and integers as integers, its strings marked by mk.
func jsonValue(text string, mk *marking) (jinja.Value, error) {
	d := json.NewDecoder(strings.NewReader(text))
	d.UseNumber()
	v, err := readValue(d, mk)
	if err != nil {
		return jinja.Value{}, err
	}
	if _, err := d.Token(); err != io.EOF {
		return jinja.Value{}, errors.New("data after the JSON value")
	}
	return v, nil
}

func readValue(d *json.Decoder, mk *marking) (jinja.Value, error) {
	tok, err := d.Token()
	if err != nil {
		return jinja.Value{}, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '[':
			var items []jinja.Value
			for d.More() {
				v, err := readValue(d, mk)
				if err != nil {
					return jinja.Value{}, err
				}
				items = append(items, v)
			}
			_, err := d.Token()
			return jinja.NewList(items), err
		case '{':
			obj := jinja.NewDict()
			for d.More() {
				k, err := d.Token()
				if err != nil {
					return jinja.Value{}, err
				}
				v, err := readValue(d, mk)
				if err != nil {
					return jinja.Value{}, err
				}
				obj.AsDict().Set(mk.str(k.(string)).AsString(), v)
			}
			_, err := d.Token()
			return obj, err
		}
	}
	if str, ok := tok.(string); ok {
		return mk.str(str), nil
	}
	return jinja.FromGoValue(tok), nil
}
