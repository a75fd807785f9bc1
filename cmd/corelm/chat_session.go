package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/corelm/corelm/pkg/runtime/chat"
)

// replyFunc generates the assistant's reply to a conversation, handing its
// text to text piece by piece as it is generated. When ctx ends it stops
// and returns ctx's error, having handed over the text so far.
type replyFunc func(ctx context.Context, msgs []chat.Message, text func(string) error) error

// errPromptTooLong: the conversation leaves no room to generate in the
// model's context. Replies wrap it, locally and from a server, so that the
// session can shorten the conversation.
var errPromptTooLong = errors.New("the prompt does not fit the model's context")

// chatHelp is what /? prints.
const chatHelp = `Available commands:
  /clear   forget the conversation (the --system message stays)
  /bye     leave (so do Ctrl-D and Ctrl-C at an empty prompt)
  /?       this help

Start a message with """ to write several lines; end it with """.
Ctrl-C while the model writes stops the reply; what it wrote so far stays in the conversation.
`

// chatSession is the terminal side of corelm chat: it reads the user's
// messages line by line, keeps the conversation, and runs one reply at a
// time, which Ctrl-C stops.
type chatSession struct {
	in          io.Reader
	out, errOut io.Writer
	// interactive shows prompts and notices: the input is a terminal. From
	// a pipe the session prints only the replies, and ends at end of input.
	interactive bool
	system      string
	reply       replyFunc
	// signals delivers os.Interrupt (Ctrl-C: stop the reply, or at the
	// prompt end the session) and other signals (end the session).
	signals <-chan os.Signal

	msgs  []chat.Message
	lines <-chan inputLine
	inErr error // why the input ended, when it was not a clean end
}

// inputLine is one line read, or the end of the input (eof, with the read
// error if it was not a clean end).
type inputLine struct {
	text string
	eof  bool
	err  error
}

// event is what waiting for input ended with.
type event int

const (
	gotLine      event = iota
	gotEOF             // end of input: Ctrl-D, or the end of a pipe
	gotInterrupt       // Ctrl-C
	gotSignal          // SIGTERM
)

// run runs the session until /bye, the end of the input, Ctrl-C at the
// prompt or another signal. Errors of a reply are shown and the session
// goes on, except from a pipe, where the first one ends it.
func (s *chatSession) run(ctx context.Context) error {
	done := make(chan struct{})
	defer close(done)
	s.lines = readLines(s.in, done)
	s.clear()
	for {
		text, ev := s.readMessage()
		switch ev {
		case gotEOF, gotInterrupt, gotSignal:
			if s.interactive {
				fmt.Fprintln(s.out)
			}
			return s.inErr
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		if strings.HasPrefix(text, "/") {
			if s.command(text) {
				return nil
			}
			continue
		}
		s.msgs = append(s.msgs, chat.Message{Role: "user", Content: text})
		stop, err := s.turn(ctx)
		if err != nil {
			if !s.interactive {
				return err
			}
			fmt.Fprintf(s.errOut, "Error: %v\n", err)
		}
		if stop {
			return nil
		}
	}
}

// command runs a /command and reports whether the session ends.
func (s *chatSession) command(text string) (bye bool) {
	switch name := strings.Fields(text)[0]; name {
	case "/bye", "/exit":
		return true
	case "/clear":
		s.clear()
		if s.interactive {
			fmt.Fprintln(s.out, "Cleared the conversation.")
		}
	case "/?", "/help":
		fmt.Fprint(s.out, chatHelp)
	default:
		fmt.Fprintf(s.errOut, "Unknown command %q; /? lists them.\n", name)
	}
	return false
}

// clear starts the conversation over, with the system message if any.
func (s *chatSession) clear() {
	s.msgs = s.msgs[:0]
	if s.system != "" {
		s.msgs = append(s.msgs, chat.Message{Role: "system", Content: s.system})
	}
}

// turn runs the reply to the conversation's last message, streaming it to
// the terminal, and keeps it in the conversation: whole, or what was
// written before Ctrl-C. A turn that fails or stops before writing
// anything leaves the conversation as it was before the user's message.
// stop is true when a signal other than Ctrl-C ended it.
func (s *chatSession) turn(ctx context.Context) (stop bool, err error) {
	for {
		var reply strings.Builder
		replyCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		msgs := slices.Clone(s.msgs)
		go func() {
			done <- s.reply(replyCtx, msgs, func(text string) error {
				reply.WriteString(text)
				_, err := io.WriteString(s.out, text)
				return err
			})
		}()
		interrupted := false
	wait:
		for {
			select {
			case err = <-done:
				break wait
			case sig := <-s.signals:
				cancel()
				interrupted = true
				stop = sig != os.Interrupt
			}
		}
		cancel()
		if reply.Len() > 0 {
			fmt.Fprintln(s.out)
			if s.interactive {
				fmt.Fprintln(s.out)
			}
		}
		if interrupted && errors.Is(err, context.Canceled) {
			err = nil
		}
		// A conversation that outgrew the context loses its oldest
		// exchange, as often as needed, as ollama does.
		if errors.Is(err, errPromptTooLong) && reply.Len() == 0 && s.dropOldest() {
			if s.interactive {
				fmt.Fprintln(s.errOut, "(the conversation outgrew the context: forgot its oldest exchange)")
			}
			continue
		}
		if err != nil || reply.Len() == 0 {
			s.msgs = s.msgs[:len(s.msgs)-1]
			return stop, err
		}
		s.msgs = append(s.msgs, chat.Message{Role: "assistant", Content: reply.String()})
		return stop, nil
	}
}

// dropOldest removes the first exchange after the system message: the
// user's message and the replies up to the next user message. It keeps
// the last user message, and reports whether it removed anything.
func (s *chatSession) dropOldest() bool {
	first := 0
	if s.system != "" {
		first = 1
	}
	next := slices.IndexFunc(s.msgs[first+1:], func(m chat.Message) bool { return m.Role == "user" })
	if next < 0 {
		return false
	}
	s.msgs = slices.Delete(s.msgs, first, first+1+next)
	return true
}

// readMessage reads the user's next message: one line, or the lines
// between """ and """. Ctrl-C in a multi-line message drops it and shows
// the prompt again.
func (s *chatSession) readMessage() (string, event) {
	for {
		line, ev := s.read(">>> ")
		if ev != gotLine || !strings.HasPrefix(line, `"""`) {
			return line, ev
		}
		line = strings.TrimPrefix(line, `"""`)
		if body, ok := strings.CutSuffix(line, `"""`); ok {
			return body, gotLine
		}
		var parts []string
		if line != "" {
			parts = append(parts, line)
		}
	more:
		for {
			line, ev := s.read("... ")
			switch ev {
			case gotInterrupt:
				if s.interactive {
					fmt.Fprintln(s.out)
				}
				break more
			case gotEOF, gotSignal:
				return "", ev
			}
			if body, ok := strings.CutSuffix(line, `"""`); ok {
				if body != "" {
					parts = append(parts, body)
				}
				return strings.Join(parts, "\n"), gotLine
			}
			parts = append(parts, line)
		}
	}
}

// read shows prompt (in a terminal) and waits for a line or a signal.
func (s *chatSession) read(prompt string) (string, event) {
	if s.interactive {
		fmt.Fprint(s.out, prompt)
	}
	select {
	case l := <-s.lines:
		if l.eof {
			s.inErr = l.err
			return "", gotEOF
		}
		return l.text, gotLine
	case sig := <-s.signals:
		if sig == os.Interrupt {
			return "", gotInterrupt
		}
		return "", gotSignal
	}
}

// readLines reads in line by line until its end or until done is closed.
// The last value has eof set.
func readLines(in io.Reader, done <-chan struct{}) <-chan inputLine {
	ch := make(chan inputLine)
	go func() {
		send := func(l inputLine) bool {
			select {
			case ch <- l:
				return true
			case <-done:
				return false
			}
		}
		r := bufio.NewReader(in)
		for {
			text, err := r.ReadString('\n')
			if text != "" {
				text = strings.TrimSuffix(strings.TrimSuffix(text, "\n"), "\r")
				if !send(inputLine{text: text}) {
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				send(inputLine{eof: true, err: err})
				return
			}
		}
	}()
	return ch
}
