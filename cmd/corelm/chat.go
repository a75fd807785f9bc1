package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/chat"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sched"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// runChat is an interactive chat with a model, in this process or on a
// server: the terminal side is chatSession, the model side a replyFunc.
func runChat(ctx context.Context, args []string) error {
	fs := newFlags("chat")
	var mf modelFlags
	mf.bind(fs)
	system := fs.String("system", "", "a system message to start the conversation with")
	maxTokens := fs.Int("max-tokens", 0, "most tokens of one reply (0: until the model ends its turn or the context is full)")
	showPrompt := fs.Bool("show-prompt", false, "print each prompt to stderr: the rendered text, or with --server the messages sent")
	verbose := fs.Bool("v", false, "print each reply's timings to stderr")
	if err := fs.parse(args, 0, "usage: corelm chat [--model MODEL | --server ADDR [--model ID]] [--system TEXT] [flags]"); err != nil {
		return err
	}
	if err := mf.check(fs); err != nil {
		return err
	}
	var (
		reply replyFunc
		err   error
	)
	if mf.remote.server != "" {
		start := &corelmv1.GenerateStart{ModelId: mf.path, Sampling: mf.sampling.proto(fs), MaxTokens: int32(*maxTokens)}
		var r *remote
		if r, reply, err = remoteChat(ctx, &mf.remote, start, *showPrompt, *verbose); err != nil {
			return err
		}
		defer r.Close()
	} else {
		lc := &localChat{sf: &mf.sampling, maxTokens: *maxTokens, ctx: mf.run.ctx, showPrompt: *showPrompt, verbose: *verbose}
		if lc.kvType, err = kvcache.ParseType(mf.run.kvType); err != nil {
			return usagef("--kv-type: %v", err)
		}
		if err := lc.open(mf.path, mf.run.threads); err != nil {
			return err
		}
		defer lc.close()
		reply = lc.reply
	}

	// main's context ends on the first Ctrl-C, which here stops one reply,
	// not the program: the session watches the signals itself.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	s := &chatSession{
		in: os.Stdin, out: os.Stdout, errOut: os.Stderr, interactive: isTerminal(os.Stdin),
		system: *system, reply: reply, signals: signals,
	}
	return s.run(context.WithoutCancel(ctx))
}

// isTerminal reports whether f is a terminal rather than a pipe or a file.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// localChat replies with a model in this process: the model's chat
// template, then the generation loop of corelm generate.
type localChat struct {
	sf         *samplingFlags
	maxTokens  int
	ctx        int
	kvType     kvcache.Type
	showPrompt bool
	verbose    bool

	l       *runtime.Loaded
	tok     *tokenizer.Tokenizer
	tmpl    *chat.Template
	session *runtime.Session // keeps the conversation's KV between turns
}

func (c *localChat) open(path string, threads int) error {
	l, err := openModel(path, threads)
	if err != nil {
		return err
	}
	tok, err := tokenizer.New(l.Source)
	if err != nil {
		l.Close()
		return err
	}
	src, _ := l.Source.String("tokenizer.chat_template")
	tmpl, err := chat.Load(src)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%v; using ChatML\n", err)
	}
	c.l, c.tok, c.tmpl = l, tok, tmpl
	// The prefix cache holds one whole context: the last turn's prompt and
	// reply, which the next turn's prompt starts with.
	served := l.Model.Config().ClampContext(c.ctx)
	c.session = runtime.NewSession(l.Model, runtime.SessionConfig{Context: c.ctx, KVType: c.kvType,
		CacheBytes: l.Model.KVBytes(model.StateOptions{Context: served, KVType: c.kvType})})
	return nil
}

func (c *localChat) close() {
	c.session.Close()
	c.l.Close()
}

func (c *localChat) reply(ctx context.Context, msgs []chat.Message, text func(string) error) error {
	prompt, enc, err := renderPrompt(c.tmpl, c.tok, msgs, true)
	if err != nil {
		return err
	}
	ids, err := c.tok.Encode(prompt, enc)
	if err != nil {
		return err
	}
	if c.showPrompt {
		fmt.Fprintf(os.Stderr, "prompt (%d tokens): %s\n", len(ids), strconv.Quote(prompt))
	}
	dec := c.tok.NewDecoder()
	res, err := c.session.Generate(ctx, runtime.GenerateRequest{
		Prompt:    ids,
		MaxTokens: c.maxTokens,
		Sampling:  c.sf.params(),
		IsEOG:     c.tok.IsEOG,
		Context:   c.ctx,
		KVType:    c.kvType,
	}, func(id int32) error {
		piece, _ := dec.Push(id)
		return text(piece)
	})
	if rest := dec.Flush(); rest != "" {
		text(rest)
	}
	if errors.Is(err, sched.ErrPromptTooLong) {
		return fmt.Errorf("%w: %v", errPromptTooLong, err)
	}
	if err == nil && c.verbose {
		fmt.Fprintf(os.Stderr, "%s; %d prompt tokens from the cache\n", timings(len(ids), len(res.Tokens), res.Prefill, res.Decode, res.Finish.String()), res.Cached)
	}
	return err
}

// remoteChat replies with a model on the server of rf: each reply is a
// GenerateStream of the conversation as chat messages, which the server
// renders with the model's template. start carries the model id and the
// sampling flags.
func remoteChat(ctx context.Context, rf *remoteFlags, start *corelmv1.GenerateStart, showPrompt, verbose bool) (*remote, replyFunc, error) {
	r, err := rf.connect()
	if err != nil {
		return nil, nil, err
	}
	// Ask first, so that a wrong --model fails before the first message.
	info, err := r.model(ctx, start.GetModelId())
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	start.ModelId = info.GetModelId()
	if !info.GetHasChatTemplate() && info.GetState() != corelmv1.ModelState_MODEL_STATE_LOADING {
		fmt.Fprintf(os.Stderr, "corelm chat: model %q has no chat template; the server uses ChatML\n", start.ModelId)
	}
	reply := func(ctx context.Context, msgs []chat.Message, text func(string) error) error {
		req := proto.Clone(start).(*corelmv1.GenerateStart)
		prompt := &corelmv1.ChatPrompt{AddGenerationPrompt: true}
		for _, m := range msgs {
			prompt.Messages = append(prompt.Messages, &corelmv1.ChatMessage{Role: m.Role, Content: m.Content})
		}
		req.Prompt = &corelmv1.GenerateStart_Chat{Chat: prompt}
		if showPrompt {
			b, _ := protojson.Marshal(prompt)
			fmt.Fprintf(os.Stderr, "messages: %s\n", b)
		}
		fin, err := r.generate(ctx, req, text)
		if err == nil && verbose {
			remoteTimings(fin)
		}
		return err
	}
	return r, reply, nil
}
