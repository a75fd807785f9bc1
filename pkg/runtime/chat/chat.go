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
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"` // system, user, assistant, tool, …
	Content string `json:"content"`
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
	// Vars are further template variables (tools, date_string, …); they
	// override the ones above.
	Vars map[string]any
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
	t, err := jinja.Compile(src)
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
	list := make([]any, len(msgs))
	for i, m := range msgs {
		list[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	data := map[string]any{
		"messages":              list,
		"add_generation_prompt": opts.AddGenerationPrompt,
		"bos_token":             opts.BOSToken,
		"eos_token":             opts.EOSToken,
	}
	for k, v := range opts.Vars {
		data[k] = v
	}
	vals := make(map[string]jinja.Value, len(data)+1)
	for k, v := range data {
		vals[k] = jinja.FromGoValue(v)
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
