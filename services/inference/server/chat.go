package server

import (
	"errors"
	"strings"

	"github.com/corelm/corelm/pkg/runtime/chat"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// loadTemplate compiles the model's chat template; a model without one (or
// with one that does not compile) gets chat's ChatML fallback.
func loadTemplate(src string) (t *chat.Template, own bool) {
	t, err := chat.Load(src)
	return t, err == nil
}

// renderChat renders messages with the model's chat template, and the
// tools of plan (nil: none). It returns the prompt and the BOS mode to
// encode it with: a template that writes the BOS text itself must not get
// a second one.
func renderChat(e *entry, c *corelmv1.ChatPrompt, plan *toolPlan, bos tokenizer.BOSMode, explicit bool) (string, tokenizer.BOSMode, error) {
	if len(c.GetMessages()) == 0 {
		return "", bos, badRequestf("chat: at least one message is required")
	}
	msgs := make([]chat.Message, len(c.GetMessages()))
	for i, m := range c.GetMessages() {
		if m.GetRole() == "" {
			return "", bos, badRequestf("chat: message %d has no role", i)
		}
		msgs[i] = chat.Message{Role: m.GetRole(), Content: m.GetContent(), ToolCallID: m.GetToolCallId(), Name: m.GetName()}
		for j, tc := range m.GetToolCalls() {
			if tc.GetName() == "" {
				return "", bos, badRequestf("chat: message %d tool call %d has no name", i, j)
			}
			args := tc.GetArguments()
			if strings.TrimSpace(args) == "" {
				args = "{}"
			}
			msgs[i].ToolCalls = append(msgs[i].ToolCalls, chat.ToolCall{ID: tc.GetId(), Name: tc.GetName(), Arguments: args})
		}
	}
	bosText := e.tok.TokenText(e.tok.BOS())
	opts := chat.Options{
		AddGenerationPrompt: c.GetAddGenerationPrompt(),
		BOSToken:            bosText,
		EOSToken:            e.tok.TokenText(e.tok.EOS()),
	}
	if plan != nil {
		opts.Tools = plan.tools
	}
	text, err := e.chat.Render(msgs, opts)
	if err != nil {
		if errors.Is(err, chat.ErrRender) {
			return "", bos, badRequestf("%v", err)
		}
		return "", bos, err
	}
	if !explicit && bosText != "" && strings.HasPrefix(text, bosText) {
		bos = tokenizer.BOSNone
	}
	return text, bos, nil
}
