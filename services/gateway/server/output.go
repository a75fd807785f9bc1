package server

import (
	"encoding/json"
	"strings"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// output turns a generation's frames into OpenAI's objects: whole (the
// non-streaming answer) or as chunks (streaming).
type output struct {
	kind         kind
	id, model    string
	created      int64
	logprobs     bool
	includeUsage bool

	text   strings.Builder
	tokens []*corelmv1.GeneratedToken // with logprobs, for the whole answer
	final  *corelmv1.GenerateFinal
}

// add takes one frame of the non-streaming answer.
func (o *output) add(m *corelmv1.GenerateResponse) {
	switch fr := m.GetFrame().(type) {
	case *corelmv1.GenerateResponse_Token:
		o.text.WriteString(fr.Token.GetText())
		if o.logprobs && fr.Token.Logprob != nil {
			o.tokens = append(o.tokens, fr.Token)
		}
	case *corelmv1.GenerateResponse_Final:
		o.text.WriteString(fr.Final.GetText())
		o.final = fr.Final
	}
}

// whole is the non-streaming answer, once the final frame is in.
func (o *output) whole() any {
	reason := finishReason(o.final)
	u := toUsage(o.final.GetUsage())
	text := o.text.String()
	if o.kind == kindChat {
		msg := &messageOut{Role: "assistant", Content: &text, ToolCalls: toolCalls(o.final, false)}
		if text == "" && len(msg.ToolCalls) > 0 {
			msg.Content = nil
		}
		c := &chatCompletion{ID: o.id, Object: "chat.completion", Created: o.created, Model: o.model, Usage: u,
			Choices: []chatChoice{{Message: msg, FinishReason: &reason}}}
		if o.logprobs {
			c.Choices[0].Logprobs = chatLogprobsOf(o.tokens)
		}
		return c
	}
	c := &textCompletion{ID: o.id, Object: "text_completion", Created: o.created, Model: o.model, Usage: u,
		Choices: []textChoice{{Text: text, FinishReason: &reason}}}
	if o.logprobs {
		c.Choices[0].Logprobs = textLogprobsOf(o.tokens, 0)
	}
	return c
}

// nullUsage is "usage": null, in each chunk before the usage chunk when
// stream_options.include_usage asks for one (as OpenAI sends them).
var nullUsage = json.RawMessage("null")

func (o *output) usageField() any {
	if o.includeUsage {
		return nullUsage
	}
	return nil
}

// roleChunk is a chat stream's first chunk: the assistant role and empty
// content. A completion stream has none (nil).
func (o *output) roleChunk() any {
	if o.kind != kindChat {
		return nil
	}
	empty := ""
	return o.chatChunk(chatChoice{Delta: &chatOut{Role: "assistant", Content: &empty}})
}

func (o *output) chatChunk(ch chatChoice) *chatCompletion {
	return &chatCompletion{ID: o.id, Object: "chat.completion.chunk", Created: o.created, Model: o.model,
		Choices: []chatChoice{ch}, Usage: o.usageField()}
}

func (o *output) textChunk(ch textChoice) *textCompletion {
	return &textCompletion{ID: o.id, Object: "text_completion", Created: o.created, Model: o.model,
		Choices: []textChoice{ch}, Usage: o.usageField()}
}

// tokenChunk is the chunk of one token frame; nil when it carries nothing
// to show (bytes of an unfinished character, held for the next token).
func (o *output) tokenChunk(t *corelmv1.GeneratedToken) any {
	withLogprobs := o.logprobs && t.Logprob != nil
	if t.GetText() == "" && !withLogprobs {
		return nil
	}
	var toks []*corelmv1.GeneratedToken
	if withLogprobs {
		toks = []*corelmv1.GeneratedToken{t}
	}
	offset := o.text.Len()
	o.text.WriteString(t.GetText())
	return o.textPiece(t.GetText(), toks, offset)
}

func (o *output) textPiece(text string, toks []*corelmv1.GeneratedToken, offset int) any {
	if o.kind == kindChat {
		ch := chatChoice{Delta: &chatOut{Content: &text}}
		if toks != nil {
			ch.Logprobs = chatLogprobsOf(toks)
		}
		return o.chatChunk(ch)
	}
	ch := textChoice{Text: text}
	if toks != nil {
		ch.Logprobs = textLogprobsOf(toks, offset)
	}
	return o.textChunk(ch)
}

// finalChunks end a stream: the text held back to the end (if any), the
// finish reason, and the usage chunk (empty choices) when asked for.
func (o *output) finalChunks(f *corelmv1.GenerateFinal) []any {
	var out []any
	if t := f.GetText(); t != "" {
		offset := o.text.Len()
		o.text.WriteString(t)
		out = append(out, o.textPiece(t, nil, offset))
	}
	reason := finishReason(f)
	if o.kind == kindChat {
		// Each call in one delta, whole (as vLLM streams calls its
		// parser finds at once): the client's accumulator joins them
		// by index either way.
		for _, c := range toolCalls(f, true) {
			out = append(out, o.chatChunk(chatChoice{Delta: &chatOut{ToolCalls: []toolCall{c}}}))
		}
		out = append(out, o.chatChunk(chatChoice{Delta: &chatOut{}, FinishReason: &reason}))
	} else {
		out = append(out, o.textChunk(textChoice{FinishReason: &reason}))
	}
	if o.includeUsage {
		u := toUsage(f.GetUsage())
		if o.kind == kindChat {
			out = append(out, &chatCompletion{ID: o.id, Object: "chat.completion.chunk", Created: o.created, Model: o.model,
				Choices: []chatChoice{}, Usage: u})
		} else {
			out = append(out, &textCompletion{ID: o.id, Object: "text_completion", Created: o.created, Model: o.model,
				Choices: []textChoice{}, Usage: u})
		}
	}
	return out
}

// finishReason is OpenAI's: "stop" for an end-of-generation token or a
// stop string, "length" for max_tokens or a full context, "tool_calls"
// for a reply that is calls.
func finishReason(f *corelmv1.GenerateFinal) string {
	switch f.GetFinishReason() {
	case corelmv1.FinishReason_FINISH_REASON_LENGTH:
		return "length"
	case corelmv1.FinishReason_FINISH_REASON_TOOL_CALLS:
		return "tool_calls"
	}
	return "stop"
}

// toolCalls are f's calls in OpenAI's shape; indexed for stream deltas.
func toolCalls(f *corelmv1.GenerateFinal, indexed bool) []toolCall {
	var out []toolCall
	for i, c := range f.GetToolCalls() {
		tc := toolCall{ID: c.GetId(), Type: "function", Function: toolFunction{Name: c.GetName(), Arguments: c.GetArguments()}}
		if indexed {
			tc.Index = &i
		}
		out = append(out, tc)
	}
	return out
}

func toUsage(u *corelmv1.Usage) *usage {
	out := &usage{PromptTokens: u.GetPromptTokens(), CompletionTokens: u.GetCompletionTokens(),
		TotalTokens: u.GetPromptTokens() + u.GetCompletionTokens()}
	out.PromptTokensDetails.CachedTokens = u.GetCachedTokens()
	return out
}

func chatLogprobsOf(toks []*corelmv1.GeneratedToken) *chatLogprobs {
	lp := &chatLogprobs{Content: []tokenLogprob{}}
	for _, t := range toks {
		tl := tokenLogprob{Token: string(t.GetRaw()), Logprob: t.GetLogprob(), Bytes: byteList(t.GetRaw()), TopLogprobs: []tokenLogprob{}}
		for _, alt := range t.GetTopLogprobs() {
			tl.TopLogprobs = append(tl.TopLogprobs, tokenLogprob{Token: string(alt.GetRaw()), Logprob: alt.GetLogprob(), Bytes: byteList(alt.GetRaw())})
		}
		lp.Content = append(lp.Content, tl)
	}
	return lp
}

// textLogprobsOf is the completions API's logprobs; offset is the first
// token's position in the output text.
func textLogprobsOf(toks []*corelmv1.GeneratedToken, offset int) *textLogprobs {
	lp := &textLogprobs{Tokens: []string{}, TokenLogprobs: []float32{}, TopLogprobs: []map[string]float32{}, TextOffset: []int{}}
	for _, t := range toks {
		lp.Tokens = append(lp.Tokens, string(t.GetRaw()))
		lp.TokenLogprobs = append(lp.TokenLogprobs, t.GetLogprob())
		top := map[string]float32{}
		for _, alt := range t.GetTopLogprobs() {
			top[string(alt.GetRaw())] = alt.GetLogprob()
		}
		lp.TopLogprobs = append(lp.TopLogprobs, top)
		lp.TextOffset = append(lp.TextOffset, offset)
		offset += len(t.GetText())
	}
	return lp
}

func byteList(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}
