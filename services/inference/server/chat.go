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

// chatTokens renders messages with the model's chat template, and the
// tools of plan (nil: none), and encodes the prompt. The template's own
// control tokens are parsed; control-token text in a message's role or
// content is plain text unless parseSpecial (the user's text cannot forge a
// turn). A template that writes the BOS text itself does not get a second
// BOS unless the request asks (explicit).
func chatTokens(e *entry, c *corelmv1.ChatPrompt, plan *toolPlan, bos tokenizer.BOSMode, explicit, parseSpecial bool) ([]int32, error) {
	if len(c.GetMessages()) == 0 {
		return nil, badRequestf("chat: at least one message is required")
	}
	msgs := make([]chat.Message, len(c.GetMessages()))
	for i, m := range c.GetMessages() {
		if m.GetRole() == "" {
			return nil, badRequestf("chat: message %d has no role", i)
		}
		msgs[i] = chat.Message{Role: m.GetRole(), Content: m.GetContent(), ToolCallID: m.GetToolCallId(), Name: m.GetName()}
		for j, tc := range m.GetToolCalls() {
			if tc.GetName() == "" {
				return nil, badRequestf("chat: message %d tool call %d has no name", i, j)
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
	if !parseSpecial {
		opts.Literal = e.tok.ControlSpans
	}
	p, err := e.chat.RenderPrompt(msgs, opts)
	if err != nil {
		if errors.Is(err, chat.ErrRender) || errors.Is(err, chat.ErrLiteral) {
			return nil, badRequestf("%v", err)
		}
		return nil, err
	}
	// The template wrote the BOS, unless that text came from a message.
	fromMessage := len(p.Literal) > 0 && p.Literal[0][0] == 0
	if !explicit && bosText != "" && strings.HasPrefix(p.Text, bosText) && !fromMessage {
		bos = tokenizer.BOSNone
	}
	return encode(e, p.Text, tokenizer.EncodeOptions{AddBOS: bos, ParseSpecial: true, Literal: p.Literal})
}
