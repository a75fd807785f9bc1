package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"github.com/corelm/corelm/pkg/runtime"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
)

// asCLI makes the test binary run as corelm when it is started by
// corelm(): the commands then run as a real process (exit status, signals,
// standard streams), with no separate build.
const asCLI = "CORELM_TEST_RUN_AS_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(asCLI) == "1" {
		main()
		return
	}
	// GGUF files the CLI opens are packed into a cache of the run's own.
	packed, err := os.MkdirTemp("", "corelm-packed-")
	if err == nil {
		os.Setenv(runtime.PackCacheEnv, packed)
	}
	code := m.Run()
	os.RemoveAll(packed)
	os.Exit(code)
}

// cli returns the command that runs corelm with args. When ctx ends (a
// test's context ends before its cleanups run) the process gets SIGTERM,
// and SIGKILL only if it has not exited 20 s later: a SIGKILLed serve-all
// would leave its temporary directories behind.
func cli(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), asCLI+"=1")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	return cmd
}

// corelm runs corelm with args to the end.
func corelm(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return corelmWith(t, "", nil, args...)
}

// corelmWith runs corelm with args to the end, with stdin as its standard
// input and env added to its environment.
func corelmWith(t *testing.T, stdin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := cli(t.Context(), args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
	cmd.Env = append(cmd.Env, env...)
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

func TestTokenize(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		// BOS, then the text's ids; exactly one newline after them.
		{"embedded", []string{"tokenize", "--text", "Once upon a time"}, "1 403 407 261 378\n"},
		{"no-bos", []string{"tokenize", "--no-bos", "--text", "Once upon a time"}, "403 407 261 378\n"},
		// detokenize prints the text exactly: no newline is added.
		{"detokenize", []string{"detokenize", "--ids", "403 407 261 378"}, "Once upon a time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := corelm(t, tt.args...)
			if code != 0 || out != tt.want {
				t.Fatalf("corelm %s: exit %d, stdout %q, want %q\nstderr: %s", strings.Join(tt.args, " "), code, out, tt.want, errOut)
			}
		})
	}
}

// TestInspectCorrupted: a truncated model is refused with the validator's
// own message and a non-zero exit status.
func TestInspectCorrupted(t *testing.T) {
	bad := models.Stories[:len(models.Stories)*3/4]
	_, want := gguf.Parse(bad)
	if want == nil {
		t.Fatal("the validator accepts the truncated model")
	}
	path := filepath.Join(t.TempDir(), "truncated.gguf")
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := corelm(t, "inspect", path)
	if code == 0 {
		t.Fatalf("exit 0 for a truncated model; stdout:\n%s", out)
	}
	// The file-opening path prefixes the path; the rest is the validator's.
	if msg := strings.TrimPrefix(want.Error(), "gguf: "); !strings.Contains(errOut, msg) {
		t.Errorf("stderr %q does not carry the validator's message %q", errOut, msg)
	}
}

// TestEvalWritesLogits: eval writes n_tokens × n_vocab little-endian
// float32s.
func TestEvalWritesLogits(t *testing.T) {
	g, err := gguf.Parse(models.Stories)
	if err != nil {
		t.Fatal(err)
	}
	vocab, ok := g.Strings("tokenizer.ggml.tokens")
	if !ok {
		t.Fatal("no vocabulary")
	}
	ids := []string{"1", "403", "407", "261", "378"}
	path := filepath.Join(t.TempDir(), "logits.f32")
	if out, errOut, code := corelm(t, "eval", "--tokens", strings.Join(ids, " "), "--logits-out", path); code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(ids) * len(vocab) * 4; len(b) != want {
		t.Fatalf("%d bytes of logits, want %d × %d × 4 = %d", len(b), len(ids), len(vocab), want)
	}
	for i := 0; i < len(b); i += 4 {
		if x := math.Float32frombits(binary.LittleEndian.Uint32(b[i:])); math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("logit %d is %v", i/4, x)
		}
	}
}

// TestUsageErrors: mistakes in the command line exit with status 2 and say
// what is wrong, before anything starts.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"model without a path", []string{"serve-all", "--model", "m"}, "ID=PATH"},
		{"model named twice", []string{"serve-all", "--model", "m=a.gguf", "--model", "m=b.gguf"}, "twice"},
		{"bad model id", []string{"serve-all", "--source-dir", dir, "--model", "../m=m.gguf"}, "model_id"},
		{"nothing to serve", []string{"serve-all", "--listen", "127.0.0.1:0", "--source-dir", dir}, "nothing to serve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := corelm(t, tt.args...)
			if code != 2 || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut, tt.want)
			}
		})
	}
}

func TestFlagsAfterPositionalArguments(t *testing.T) {
	tests := []struct {
		args []string
		pos  []string
		ctx  int
		json bool
	}{
		{[]string{"model.gguf"}, []string{"model.gguf"}, 0, false},
		{[]string{"model.gguf", "--ctx", "4096"}, []string{"model.gguf"}, 4096, false},
		{[]string{"--ctx=8", "a", "--json", "b"}, []string{"a", "b"}, 8, true},
		{[]string{"a", "--", "--json", "b"}, []string{"a", "--json", "b"}, 0, false},
		{[]string{"--json", "--", "-x"}, []string{"-x"}, 0, true},
	}
	for _, tt := range tests {
		fs := newFlags("test")
		ctx := fs.Int("ctx", 0, "")
		js := fs.Bool("json", false, "")
		if err := fs.Parse(tt.args); err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if !slices.Equal(fs.Args(), tt.pos) || fs.NArg() != len(tt.pos) || *ctx != tt.ctx || *js != tt.json {
			t.Errorf("%q: positional %q ctx %d json %v, want %q %d %v", tt.args, fs.Args(), *ctx, *js, tt.pos, tt.ctx, tt.json)
		}
		if tt.pos != nil && fs.Arg(0) != tt.pos[0] {
			t.Errorf("%q: Arg(0) = %q", tt.args, fs.Arg(0))
		}
	}
	if err := newFlags("test").Parse([]string{"a", "--nope"}); err == nil {
		t.Error("an unknown flag after a positional argument was accepted")
	}
}
