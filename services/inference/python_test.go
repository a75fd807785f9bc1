package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// pythonWithGRPC returns a Python 3 that imports grpc and google.protobuf:
// $CORELM_PYTHON, else python3 on PATH, else Debian's /usr/bin/python3 (where
// python3-grpcio installs when a pyenv or venv python3 comes first on PATH).
func pythonWithGRPC() (string, bool) {
	candidates := []string{os.Getenv("CORELM_PYTHON"), "python3", "/usr/bin/python3"}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		path, err := exec.LookPath(c)
		if err != nil {
			continue
		}
		if exec.Command(path, "-c", "import grpc, google.protobuf").Run() == nil {
			return path, true
		}
	}
	return "", false
}

// TestPythonClient runs clients/python/generate.py against the inference
// binary: two greedy generations interleaved on one bidi Generate stream,
// one of them cancelled part-way. Each must be exactly what a direct
// GenerateStream gives. CI installs python3-grpcio, so there a missing grpc
// fails the test instead of skipping it.
func TestPythonClient(t *testing.T) {
	python, ok := pythonWithGRPC()
	if !ok {
		msg := "python3 with grpc and protobuf is needed (apt-get install python3-grpcio python3-protobuf, or set CORELM_PYTHON)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir, err := filepath.Abs("../../clients/python")
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, "inference", "--model-file", "stories")
	const cancelAfter = 6
	out := servicetest.ClientOutput(t, dir, python, "generate.py", "--addr", p.Addr, "--model", "stories",
		"--prompt", "Once upon a time", "--max-tokens", "32", "--prompt-b", "The cat",
		"--cancel-after", strconv.Itoa(cancelAfter), "--temperature", "0", "--json")
	var got struct {
		Requests map[string]clientResult `json:"requests"`
		Order    []string                `json:"order"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	a, b := got.Requests["a"], got.Requests["b"]

	c := corelmv1.NewInferenceServiceClient(p.Conn)
	direct := func(text string, maxTokens int) *result {
		t.Helper()
		r, err := generateStream(t.Context(), c, greedy(text, int32(maxTokens)))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	wantA := direct("Once upon a time", 32)
	if !slices.Equal(a.IDs, wantA.ids) || a.Text != wantA.text {
		t.Errorf("a: %v %q, want %v %q", a.IDs, a.Text, wantA.ids, wantA.text)
	}
	if a.Final.FinishReason != "FINISH_REASON_LENGTH" || a.Final.Usage.CompletionTokens != 32 {
		t.Errorf("a: final %+v", a.Final)
	}
	// b ran until the Cancel frame reached the server: at least cancelAfter
	// tokens, and then exactly the start of b's greedy generation.
	if len(b.IDs) < cancelAfter {
		t.Fatalf("b: %d tokens before the cancel, want ≥ %d", len(b.IDs), cancelAfter)
	}
	wantB := direct("The cat", len(b.IDs))
	if !slices.Equal(b.IDs, wantB.ids) || b.Text != wantB.text {
		t.Errorf("b: %v %q, want %v %q", b.IDs, b.Text, wantB.ids, wantB.text)
	}
	if b.Final.FinishReason != "FINISH_REASON_CANCELLED" || b.Final.Usage.CompletionTokens != len(b.IDs) {
		t.Errorf("b: final %+v after %d tokens", b.Final, len(b.IDs))
	}
	// Both ran together: a's first token came before b ended (the final
	// frames' timings count from each request's submission; the two starts
	// are sent back to back). The order frames arrive in depends on how
	// the server's senders are scheduled, which a loaded machine can
	// serialise, so it is not checked.
	ft := b.Final.Timings
	if bEnd := ft.QueueNs + ft.PrefillNs + ft.DecodeNs; a.Final.Timings.TTFTNs == 0 || a.Final.Timings.TTFTNs >= bEnd {
		t.Errorf("a's first token at %v, after b ended at %v: the two did not run together (frames %v)",
			time.Duration(a.Final.Timings.TTFTNs), time.Duration(bEnd), got.Order)
	}
	servicetest.WaitIdle(t, c, 5*time.Second)
}

// TestPythonStubs checks that the committed stubs in clients/python/corelm
// are what clients/python/gen_stubs.sh makes from the .proto files now,
// when protoc and grpc_python_plugin are installed.
func TestPythonStubs(t *testing.T) {
	for _, tool := range []string{"bash", "protoc", "grpc_python_plugin"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is needed (apt-get install protobuf-compiler protobuf-compiler-grpc)", tool)
		}
	}
	dir, err := filepath.Abs("../../clients/python")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	if out, err := exec.Command("bash", filepath.Join(dir, "gen_stubs.sh"), tmp).CombinedOutput(); err != nil {
		t.Fatalf("gen_stubs.sh: %v\n%s", err, out)
	}
	files := func(root string) map[string][]byte {
		t.Helper()
		m := map[string][]byte{}
		err := filepath.WalkDir(filepath.Join(root, "corelm"), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(path, ".pyc") {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			m[rel], err = os.ReadFile(path)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	want, have := files(tmp), files(dir)
	for name, b := range want {
		if !bytes.Equal(have[name], b) {
			t.Errorf("clients/python/%s is stale or missing: run clients/python/gen_stubs.sh", name)
		}
	}
	for name := range have {
		if _, ok := want[name]; !ok {
			t.Errorf("clients/python/%s is not generated any more: delete it", name)
		}
	}
}
