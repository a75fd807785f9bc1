package envflag

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// knobs is one of each kind of flag.
type knobs struct {
	listen  string
	seqs    int
	verbose bool
	grace   time.Duration
	budget  int64
	level   slog.Level
}

func bindKnobs(env map[string]string) (*Set, *knobs) {
	s := New("test", "CORELM_", func(k string) string { return env[k] })
	s.FlagSet().SetOutput(new(bytes.Buffer))
	k := &knobs{}
	s.String(&k.listen, "listen", "127.0.0.1:7071", "address")
	s.Int(&k.seqs, "max-seqs", 8, "sequences")
	s.Bool(&k.verbose, "verbose", false, "more")
	s.Duration(&k.grace, "shutdown-grace", 10*time.Second, "grace")
	s.Bytes(&k.budget, "budget", "1GiB", "bytes")
	s.LogLevel(&k.level)
	return s, k
}

func TestParse(t *testing.T) {
	defaults := knobs{"127.0.0.1:7071", 8, false, 10 * time.Second, 1 << 30, slog.LevelInfo}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    knobs
		wantErr string // a substring; "" for no error
	}{
		{name: "defaults", want: defaults},
		{name: "environment", env: map[string]string{"CORELM_LISTEN": ":1", "CORELM_MAX_SEQS": "3", "CORELM_VERBOSE": "true",
			"CORELM_SHUTDOWN_GRACE": "1m", "CORELM_BUDGET": "2MiB", "CORELM_LOG_LEVEL": "debug"},
			want: knobs{":1", 3, true, time.Minute, 2 << 20, slog.LevelDebug}},
		{name: "command line wins", env: map[string]string{"CORELM_MAX_SEQS": "3", "CORELM_BUDGET": "2MiB"},
			args: []string{"--max-seqs", "5", "--budget=0"},
			want: knobs{"127.0.0.1:7071", 5, false, 10 * time.Second, 0, slog.LevelInfo}},
		{name: "empty variable is unset", env: map[string]string{"CORELM_MAX_SEQS": ""}, want: defaults},
		{name: "bad variable", env: map[string]string{"CORELM_MAX_SEQS": "many"}, wantErr: `CORELM_MAX_SEQS="many"`},
		{name: "bad variables", env: map[string]string{"CORELM_SHUTDOWN_GRACE": "soon", "CORELM_BUDGET": "lots"},
			wantErr: `CORELM_BUDGET="lots": invalid size "lots"`},
		{name: "bad variable, flag given", env: map[string]string{"CORELM_MAX_SEQS": "many"}, args: []string{"--max-seqs=2"},
			want: knobs{"127.0.0.1:7071", 2, false, 10 * time.Second, 1 << 30, slog.LevelInfo}},
		{name: "bad flag", args: []string{"--log-level", "loud"}, wantErr: "log-level"},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "nope"},
		{name: "positional", args: []string{"model.gguf"}, wantErr: `unexpected arguments ["model.gguf"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, k := bindKnobs(tt.env)
			err := s.Parse(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse: %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *k != tt.want {
				t.Errorf("got %+v\nwant %+v", *k, tt.want)
			}
		})
	}
}

// TestBadVariablesAll: every bad variable is reported, not just the first.
func TestBadVariablesAll(t *testing.T) {
	s, _ := bindKnobs(map[string]string{"CORELM_SHUTDOWN_GRACE": "soon", "CORELM_BUDGET": "lots"})
	err := s.Parse(nil)
	for _, v := range []string{"CORELM_SHUTDOWN_GRACE", "CORELM_BUDGET"} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("Parse: %v, want it to name %s", err, v)
		}
	}
}

// TestHelp: -h is flag.ErrHelp, and the help names each variable and shows
// defaults as written.
func TestHelp(t *testing.T) {
	s, _ := bindKnobs(nil)
	var out bytes.Buffer
	s.FlagSet().SetOutput(&out)
	if err := s.Parse([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse(-h) = %v", err)
	}
	for _, want := range []string{"(CORELM_MAX_SEQS)", "(CORELM_LOG_LEVEL)", "(default 1GiB)", "(default 10s)", "(CORELM_VERBOSE)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestEnv(t *testing.T) {
	if got := New("x", "CORELM_LOADER_", nil).Env("shm-dir"); got != "CORELM_LOADER_SHM_DIR" {
		t.Errorf("Env = %q", got)
	}
}

// TestList: a list flag takes comma-separated items from its variable and
// from each use on the command line; the command line replaces the
// variable.
func TestList(t *testing.T) {
	tests := []struct {
		name string
		env  string
		args []string
		want []string
	}{
		{"unset", "", nil, nil},
		{"variable", "a=x, b=y,,", nil, []string{"a=x", "b=y"}},
		{"repeated flag", "", []string{"--model", "a=x", "--model", "b=y,c=z"}, []string{"a=x", "b=y", "c=z"}},
		{"command line replaces the variable", "a=x,b=y", []string{"--model", "c=z"}, []string{"c=z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New("test", "CORELM_", func(k string) string { return map[string]string{"CORELM_MODEL": tt.env}[k] })
			var got []string
			s.List(&got, "model", "models")
			if err := s.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestVersion: --version prints the set's name and the build on stdout and
// ends like -h; a bad variable does not stop it, and CORELM_VERSION is not
// read.
func TestVersion(t *testing.T) {
	s, _ := bindKnobs(map[string]string{"CORELM_MAX_SEQS": "many", "CORELM_VERSION": "true"})
	var out bytes.Buffer
	s.stdout = &out
	if err := s.Parse([]string{"--version"}); !errors.Is(err, ErrVersion) || !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse(--version) = %v", err)
	}
	if !strings.HasPrefix(out.String(), "test ") || !strings.Contains(out.String(), " go1.") {
		t.Errorf("version line %q", out.String())
	}
	s, _ = bindKnobs(map[string]string{"CORELM_VERSION": "true"})
	s.stdout = &out
	if err := s.Parse(nil); err != nil {
		t.Errorf("CORELM_VERSION=true: Parse = %v", err)
	}
}
