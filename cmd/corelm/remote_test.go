package main

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	inference "github.com/corelm/corelm/services/inference/server"
)

// serveStories runs the inference service in the test process on a
// loopback port, serving the embedded model directly, and returns its
// address and a connection to it.
func serveStories(t *testing.T, token string) (string, corelmv1.InferenceServiceClient) {
	t.Helper()
	conn, _ := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return inference.Serve(ctx, lis, inference.Config{
			ModelFile: inference.EmbeddedModel, AuthToken: token,
			Options: inference.Options{Threads: 1, MaxSeqs: 2},
		})
	})
	return conn.Target(), corelmv1.NewInferenceServiceClient(conn)
}

// TestRemoteMatchesLocal: every command that can run on a server prints
// over --server what it prints in this process (greedy sampling, so the
// text is determined).
func TestRemoteMatchesLocal(t *testing.T) {
	addr, _ := serveStories(t, "")
	const prompt = "Once upon a time"
	tests := []struct {
		name  string
		args  []string
		stdin string
	}{
		{"generate", []string{"generate", "--prompt", prompt, "--temperature", "0", "--max-tokens", "24"}, ""},
		{"generate no-bos", []string{"generate", "--prompt", prompt, "--temperature", "0", "--max-tokens", "8", "--no-bos"}, ""},
		{"generate json-schema", []string{"generate", "--prompt", prompt, "--temperature", "0", "--max-tokens", "40",
			"--json-schema", `{"type":"object","properties":{"hero":{"type":"string","maxLength":10},"age":{"type":"integer","minimum":1,"maximum":99}},"required":["hero","age"]}`}, ""},
		{"generate regex", []string{"generate", "--prompt", prompt, "--temperature", "0", "--max-tokens", "12", "--regex", `( [a-z]+)+\.`}, ""},
		{"tokenize", []string{"tokenize", "--text", prompt}, ""},
		{"tokenize pieces", []string{"tokenize", "--text", prompt, "--pieces", "--no-bos"}, ""},
		{"detokenize", []string{"detokenize", "--ids", "403 407 261 378"}, ""},
		{"chat", []string{"chat", "--system", "Be brief.", "--temperature", "0", "--max-tokens", "12"}, "Hello\nHow are you?\n"},
		{"embed", []string{"embed", prompt, "The end."}, ""},
		{"embed last raw", []string{"embed", "--pooling", "last", "--no-normalize", prompt}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local, errOut, code := corelmWith(t, tt.stdin, nil, tt.args...)
			if code != 0 || strings.TrimSpace(local) == "" {
				t.Fatalf("local: exit %d, stdout %q\n%s", code, local, errOut)
			}
			for _, extra := range [][]string{{"--server", addr}, {"--server", addr, "--model", "stories"}} {
				remote, errOut, code := corelmWith(t, tt.stdin, nil, append(tt.args, extra...)...)
				if code != 0 || remote != local {
					t.Errorf("%s: exit %d, stdout\n%q\nwant (local)\n%q\nstderr: %s", strings.Join(extra, " "), code, remote, local, errOut)
				}
			}
		})
	}

	// And the local command is the reference generation.
	_, _, want := servicetest.Greedy(t, prompt, 24)
	if out, _, _ := corelm(t, tests[0].args...); out != prompt+want+"\n" {
		t.Errorf("generate printed %q, want the prompt and the greedy text %q", out, want)
	}
}

// TestRemoteErrors: what goes wrong on the server side reads as a sentence
// that names the server, with exit status 1; flags that do not apply are
// usage errors (status 2).
func TestRemoteErrors(t *testing.T) {
	addr, _ := serveStories(t, "")
	authAddr, _ := serveStories(t, "s3cret")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()

	tests := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"unknown model", nil, []string{"generate", "--server", addr, "--model", "nope", "--prompt", "x"}, 1,
			`model "nope" not found on ` + addr + ` (serving [stories])`},
		{"unknown model tokenize", nil, []string{"tokenize", "--server", addr, "--model", "nope", "--text", "x"}, 1,
			`model "nope" not found on ` + addr + ` (serving [stories])`},
		{"unknown model chat", nil, []string{"chat", "--server", addr, "--model", "nope"}, 1,
			`model "nope" not found on ` + addr + ` (serving [stories])`},
		{"no server", nil, []string{"generate", "--server", closed, "--prompt", "x"}, 1, "server at " + closed + " is not ready: "},
		{"no server models", nil, []string{"models", "--server", closed}, 1, "server at " + closed + " is not ready: "},
		{"no token", nil, []string{"generate", "--server", authAddr, "--prompt", "x"}, 1,
			"server at " + authAddr + " refused the call: missing or invalid bearer token (give the token with --auth-token or $CORELM_AUTH_TOKEN)"},
		{"wrong token", nil, []string{"models", "--server", authAddr, "--auth-token", "nope"}, 1, "refused the call"},
		{"token flag", nil, []string{"generate", "--server", authAddr, "--auth-token", "s3cret", "--prompt", "x", "--max-tokens", "1"}, 0, ""},
		{"token env", []string{"CORELM_AUTH_TOKEN=s3cret"}, []string{"models", "--server", authAddr}, 0, ""},
		{"server's flag", nil, []string{"generate", "--server", addr, "--ctx", "64", "--prompt", "x"}, 2, "--ctx is the server's to choose"},
		{"timeout without server", nil, []string{"tokenize", "--timeout", "1s", "--text", "x"}, 2, "--timeout needs --server"},
		{"models without server", nil, []string{"models"}, 2, "usage: corelm models --server ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := corelmWith(t, "", tt.env, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q\nwant exit %d and %q", code, errOut, tt.code, tt.want)
			}
			if code != 0 && out != "" {
				t.Errorf("a refused call printed %q", out)
			}
		})
	}
}

// TestModels: one line per served model, and --json is the server's
// ListModels answer.
func TestModels(t *testing.T) {
	addr, client := serveStories(t, "")
	out, errOut, code := corelm(t, "models", "--server", addr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want a header and one model:\n%s", out)
	}
	header, row := strings.Fields(lines[0]), strings.Fields(lines[1])
	if len(row) != len(header)+1 || header[len(header)-1] != "WEIGHTS" { // the last, "1.12 MiB", has a space
		t.Fatalf("columns %q, row %q", header, row)
	}
	cols := map[string]string{}
	for i, name := range header {
		cols[name] = row[i]
	}
	for col, want := range map[string]string{"ID": "stories", "ARCH": "llama", "CONTEXT": "2048", "KV": "f16", "GENERATION": "0"} {
		if cols[col] != want {
			t.Errorf("%s = %q, want %q\n%s", col, cols[col], want, out)
		}
	}

	out, errOut, code = corelm(t, "models", "--server", addr, "--json")
	if code != 0 {
		t.Fatalf("--json: exit %d: %s", code, errOut)
	}
	var got corelmv1.ListModelsResponse
	if err := protojson.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	want, err := client.ListModels(t.Context(), &corelmv1.ListModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, want) {
		t.Errorf("--json printed %v, ListModels says %v", &got, want)
	}
}
