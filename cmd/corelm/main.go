// Command corelm is the operator CLI of corelm: inspect, validate and run
// models, tokenize text, and serve.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/corelm/corelm/internal/version"
	"github.com/corelm/corelm/pkg/kernels"
)

// command is one sub-command. run receives the arguments after its name.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

// commands is the registry of sub-commands: adding one is adding a line here.
var commands = map[string]command{
	"inspect":     {"validate a model file and show its architecture, tensors and memory fit", runInspect},
	"pack":        {"validate a GGUF model and convert it to the packed layout (.clm)", runPack},
	"eval":        {"run token ids as one batch and write the logits of every position", runEval},
	"generate":    {"generate text from a prompt, streamed to stdout", runGenerate},
	"chat":        {"chat with a model in the terminal: chat [--model M | --server ADDR [--model ID]] [--system TEXT]", runChat},
	"chat-render": {"render a conversation with the model's chat template", runChatRender},
	"models":      {"list the models a server serves: models --server ADDR [--json]", runModels},
	"load":        {"ask a loader to load a model, with a progress bar: load --server LOADER ID [PATH] [--reload]", runLoad},
	"tokenize":    {"print the token ids of a text (llama.cpp-exact)", runTokenize},
	"detokenize":  {"print the text of token ids", runDetokenize},
	"embed":       {"print the embedding of each text, one JSON line each: embed [--model M | --server ADDR] TEXT...", runEmbed},
	"quantize":    {"re-encode a GGUF model: quantize IN OUT TYPE (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_S, Q5_K_S, Q6_K, Q4_K_M, Q5_K_M, TQ1_0, TQ2_0, F16, BF16)", runQuantize},
	"synth":       {"write a random-weight model of a real model's shape: synth --like llama-3.1-8b --type Q4_K_M OUT", runSynth},
	"bench":       {"measure prefill and decode speed, peak RSS and achieved bandwidth", runBench},
	"serve-all":   {"run the loader and the inference service in one process (the built-in stories model by default)", runServeAll},
	"health":      {"check a server's gRPC health: health ADDR [--service NAME] (exit 0 when SERVING; for container health checks)", runHealth},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" {
		fmt.Println("corelm", version.String())
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "corelm: unknown command %q (run `corelm help` for the list)\n", args[0])
		return 2
	}
	// A mistyped CORELM_KERNELS must stop the command, not run it on another tier.
	if err := kernels.Check(); err != nil {
		fmt.Fprintf(os.Stderr, "corelm: %v\n", err)
		return 2
	}
	if err := cmd.run(ctx, args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "corelm %s: %v\n", args[0], err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

// usageError marks a mistake in the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func usage() {
	fmt.Fprintln(os.Stderr, "usage: corelm <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(os.Stderr, "  %-12s %s\n", name, commands[name].summary)
	}
}

// newFlags returns a flag set for a sub-command that reports errors instead
// of exiting and accepts flags before, between and after the positional
// arguments (`corelm inspect MODEL --ctx 4096`), as users of other CLIs expect.
func newFlags(name string) *flagSet {
	return &flagSet{FlagSet: flag.NewFlagSet("corelm "+name, flag.ContinueOnError)}
}

// flagSet is a flag.FlagSet whose Parse does not stop at the first
// positional argument; "--" still ends the flags.
type flagSet struct {
	*flag.FlagSet
	pos []string
}

func (f *flagSet) Parse(args []string) error {
	f.pos = f.pos[:0]
	for {
		if err := f.FlagSet.Parse(args); err != nil {
			return err
		}
		rest := f.FlagSet.Args()
		if len(rest) == 0 {
			return nil
		}
		// flag.Parse consumed a "--" if it stopped on one: everything after
		// it is positional.
		if len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			f.pos = append(f.pos, rest...)
			return nil
		}
		f.pos = append(f.pos, rest[0])
		args = rest[1:]
	}
}

func (f *flagSet) Args() []string { return f.pos }
func (f *flagSet) NArg() int      { return len(f.pos) }
func (f *flagSet) Arg(i int) string {
	if i < 0 || i >= len(f.pos) {
		return ""
	}
	return f.pos[i]
}

// parse parses args and wants n positional arguments: a mistake in either
// is a usage error, the second one saying usage.
func (f *flagSet) parse(args []string, n int, usage string) error {
	if err := f.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if f.NArg() != n {
		return usageError{usage}
	}
	return nil
}
