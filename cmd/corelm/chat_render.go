package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/runtime/chat"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
)

func runChatRender(ctx context.Context, args []string) error {
	fs := newFlags("chat-render")
	modelPath := fs.String("model", "", "GGUF model or vocabulary file (default: the embedded "+models.Name+")")
	msgFile := fs.String("messages", "", `JSON file (- for standard input): [{"role":"user","content":"Hi"}, …] or {"messages": […]}`)
	tmplFile := fs.String("template", "", "use this Jinja chat template instead of the model's tokenizer.chat_template")
	noGen := fs.Bool("no-generation-prompt", false, "do not end with the header of an assistant turn")
	strict := fs.Bool("strict", false, "fail instead of falling back to ChatML when the model's template is missing or broken")
	showIDs := fs.Bool("ids", false, "print the prompt's token ids instead of its text")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if *msgFile == "" || fs.NArg() != 0 {
		return usagef("usage: corelm chat-render --model MODEL --messages FILE.json [--template FILE] [--no-generation-prompt] [--strict] [--ids]")
	}
	msgs, err := readMessages(*msgFile)
	if err != nil {
		return err
	}
	vf, err := openVocab(*modelPath)
	if err != nil {
		return err
	}
	defer vf.Close()

	src, _ := vf.String("tokenizer.chat_template")
	if *tmplFile != "" {
		b, err := os.ReadFile(*tmplFile)
		if err != nil {
			return err
		}
		src = string(b)
	}
	tmpl, err := chat.Load(src)
	if err != nil {
		if *strict {
			return err
		}
		fmt.Fprintf(os.Stderr, "corelm chat-render: %v; using ChatML\n", err)
	}
	prompt, enc, err := renderPrompt(tmpl, vf.tok, msgs, !*noGen)
	if err != nil {
		return err
	}
	if !*showIDs {
		_, err = io.WriteString(os.Stdout, prompt)
		return err
	}
	ids, err := vf.tok.Encode(prompt, enc)
	if err != nil {
		return err
	}
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.Itoa(int(id))
	}
	fmt.Println(strings.Join(parts, " "))
	return nil
}

// renderPrompt renders msgs with tmpl, the chat template of tok's model,
// and says how to encode the prompt, as the inference service does: the
// template's control tokens are parsed, control-token text inside a message
// is plain text, and BOS is added only if the template did not already
// begin with it.
func renderPrompt(tmpl *chat.Template, tok *tokenizer.Tokenizer, msgs []chat.Message, addGenerationPrompt bool) (string, tokenizer.EncodeOptions, error) {
	bos := tok.TokenText(tok.BOS())
	p, err := tmpl.RenderPrompt(msgs, chat.Options{
		AddGenerationPrompt: addGenerationPrompt,
		BOSToken:            bos,
		EOSToken:            tok.TokenText(tok.EOS()),
		Literal:             tok.ControlSpans,
	})
	enc := tokenizer.EncodeOptions{ParseSpecial: true, Literal: p.Literal}
	fromMessage := len(p.Literal) > 0 && p.Literal[0][0] == 0
	if bos != "" && strings.HasPrefix(p.Text, bos) && !fromMessage {
		enc.AddBOS = tokenizer.BOSNone
	}
	return p.Text, enc, err
}

// readMessages reads a conversation: a JSON array of messages, or an object
// with a "messages" array (an OpenAI-style request body).
func readMessages(path string) ([]chat.Message, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	var msgs []chat.Message
	if err := json.Unmarshal(b, &msgs); err == nil {
		return msgs, nil
	}
	var req struct {
		Messages []chat.Message `json:"messages"`
	}
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, fmt.Errorf("%s: want a JSON array of {role, content} or {\"messages\": […]}: %v", path, err)
	}
	return req.Messages, nil
}
