// Package envflag binds command-line flags to environment variables, the
// way every corelm server reads its configuration: each flag --name-x has
// a variable <PREFIX>NAME_X, the command line wins over the environment,
// and the environment over the default. A value the environment gets wrong
// is an error naming the variable, unless the command line sets that flag.
//
// The loader (CORELM_LOADER_), the inference service and `corelm
// serve-all` (CORELM_) bind their flags here. Every set also has
// --version, which prints the build (internal/version) and stops.
package envflag

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/corelm/corelm/internal/version"
	"github.com/corelm/corelm/pkg/runtime"
)

// ErrVersion is Parse's error after --version printed the build. It wraps
// flag.ErrHelp, so a command that exits 0 on -h does on --version too.
var ErrVersion = fmt.Errorf("%w: version printed", flag.ErrHelp)

// Set is a flag set whose flags also read the environment.
type Set struct {
	fs     *flag.FlagSet
	prefix string
	getenv func(string) string
	envErr map[string]error // by flag name: the variable's value did not parse

	version bool      // --version was given
	stdout  io.Writer // where --version prints [os.Stdout]
}

// New returns an empty set for the command name. Its variables are prefix
// followed by the flag's name in upper case with dashes as underscores;
// getenv reads them (os.Getenv, or a map in tests).
func New(name, prefix string, getenv func(string) string) *Set {
	s := &Set{fs: flag.NewFlagSet(name, flag.ContinueOnError), prefix: prefix, getenv: getenv, envErr: map[string]error{}, stdout: os.Stdout}
	// No variable: a CORELM_VERSION in the environment must not turn a
	// server into a command that prints and exits.
	s.fs.BoolVar(&s.version, "version", false, "print the build (module version, VCS revision, modified) and exit")
	return s
}

// Env is the environment variable of the flag name.
func (s *Set) Env(name string) string {
	return s.prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// FlagSet is the underlying flag set, for its usage output.
func (s *Set) FlagSet() *flag.FlagSet { return s.fs }

// String binds a string flag.
func (s *Set) String(p *string, name, def, usage string) {
	s.fs.StringVar(p, name, def, usage)
	s.bind(name)
}

// Int binds an integer flag.
func (s *Set) Int(p *int, name string, def int, usage string) {
	s.fs.IntVar(p, name, def, usage)
	s.bind(name)
}

// Bool binds a boolean flag.
func (s *Set) Bool(p *bool, name string, def bool, usage string) {
	s.fs.BoolVar(p, name, def, usage)
	s.bind(name)
}

// Duration binds a duration flag ("10s", "1m30s").
func (s *Set) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	s.fs.DurationVar(p, name, def, usage)
	s.bind(name)
}

// Bytes binds a byte-count flag: "1GiB", "512MiB", "0" (runtime.ParseBytes).
// def must parse.
func (s *Set) Bytes(p *int64, name, def, usage string) {
	Parsed(s, p, name, def, runtime.ParseBytes, usage)
}

// LogLevel binds --log-level, the same in every command.
func (s *Set) LogLevel(p *slog.Level) {
	Parsed(s, p, "log-level", "info", func(v string) (l slog.Level, err error) {
		err = l.UnmarshalText([]byte(v))
		return l, err
	}, "debug, info, warn or error")
}

// Var binds a flag of any flag.Value (a repeatable flag, say).
func (s *Set) Var(v flag.Value, name, usage string) {
	s.fs.Var(v, name, usage)
	s.bind(name)
}

// List binds a repeatable flag of strings: each use on the command line
// adds its comma-separated items, and the variable is one comma-separated
// list. A command line that uses the flag replaces the variable's items
// rather than adding to them. Empty items are dropped.
func (s *Set) List(p *[]string, name, usage string) {
	v := &list{p: p}
	s.Var(v, name, usage)
	v.fromEnv = len(*p) > 0
}

type list struct {
	p       *[]string
	fromEnv bool // *p holds the variable's items, not yet replaced
}

func (v *list) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}

func (v *list) Set(text string) error {
	if v.fromEnv {
		*v.p, v.fromEnv = nil, false
	}
	for item := range strings.SplitSeq(text, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*v.p = append(*v.p, item)
		}
	}
	return nil
}

// Parsed binds a flag whose text parse turns into a T (a cache type, a
// size). def is its default as text and must parse; help shows it as
// written.
func Parsed[T any](s *Set, p *T, name, def string, parse func(string) (T, error), usage string) {
	v := &parsed[T]{p: p, parse: parse}
	if err := v.Set(def); err != nil {
		panic(fmt.Sprintf("envflag: default of --%s: %v", name, err))
	}
	s.Var(v, name, usage)
}

type parsed[T any] struct {
	p     *T
	text  string
	parse func(string) (T, error)
}

func (v *parsed[T]) String() string { return v.text }

func (v *parsed[T]) Set(text string) error {
	x, err := v.parse(text)
	if err != nil {
		return err
	}
	*v.p, v.text = x, text
	return nil
}

// bind names the variable in the flag's help and applies its value.
func (s *Set) bind(name string) {
	f := s.fs.Lookup(name)
	env := s.Env(name)
	f.Usage += " (" + env + ")"
	if val := s.getenv(env); val != "" {
		if err := f.Value.Set(val); err != nil {
			s.envErr[name] = fmt.Errorf("%s=%q: %w", env, val, err)
		}
	}
}

// Parse parses the command line over what the environment set. A bad
// variable whose flag the command line does not set, and any positional
// argument, are errors. -h gives flag.ErrHelp.
func (s *Set) Parse(args []string) error {
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	if s.version {
		fmt.Fprintf(s.stdout, "%s %s\n", s.fs.Name(), version.String())
		return ErrVersion
	}
	s.fs.Visit(func(f *flag.Flag) { delete(s.envErr, f.Name) })
	var errs []error
	s.fs.VisitAll(func(f *flag.Flag) { // in name order
		if err := s.envErr[f.Name]; err != nil {
			errs = append(errs, err)
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if s.fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", s.fs.Args())
	}
	return nil
}

// Main is a server binary's main function: run gets a context that SIGINT
// and SIGTERM cancel, the command line and the environment. An error is
// printed after the command's name and exits with status 1; -h and
// --version exit 0.
func Main(name string, run func(ctx context.Context, args []string, getenv func(string) string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		stop()
		os.Exit(1)
	}
}
