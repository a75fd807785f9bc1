package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/models"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	loader "github.com/corelm/corelm/services/loader/server"
)

// banner is serve-all's line once it serves: the inference service's
// address and the shared-memory directory.
var banner = regexp.MustCompile(`(?m)^serving .* on (\S+) \(loader on \S+, packed files in (\S+)\)`)

// startServeAll runs `corelm serve-all` with args in dir ("": the test's)
// and returns it once its banner says it serves.
func startServeAll(t *testing.T, dir string, args ...string) (p *servicetest.Proc, shm string) {
	t.Helper()
	cmd := cli(t.Context(), append([]string{"serve-all", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--max-seqs", "2", "--metrics-listen", "127.0.0.1:0"}, args...)...)
	cmd.Dir = dir
	p = servicetest.Start(t, cmd, func(line string) (string, bool) {
		if m := banner.FindStringSubmatch(line); m != nil {
			return m[1], true
		}
		return "", false
	})
	return p, banner.FindStringSubmatch(p.Logs())[2]
}

// wantGreedy streams a greedy generation of model id and checks it against
// runtime.Generate on the embedded model.
func wantGreedy(t *testing.T, p *servicetest.Proc, id string) {
	t.Helper()
	const text = "Once upon a time"
	prompt, want, _ := servicetest.Greedy(t, text, 32)
	temp := float32(0)
	stream, err := corelmv1.NewInferenceServiceClient(p.Conn).GenerateStream(t.Context(), &corelmv1.GenerateStart{
		ModelId: id, Prompt: &corelmv1.GenerateStart_Text{Text: text}, MaxTokens: 32,
		Sampling: &corelmv1.SamplingParams{Temperature: &temp},
	})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int32
	var final *corelmv1.GenerateFinal
	err = servicetest.RecvAll(stream.Recv, func(resp *corelmv1.GenerateResponse) {
		switch f := resp.GetFrame().(type) {
		case *corelmv1.GenerateResponse_Token:
			if final != nil {
				t.Error("a token after the final frame")
			}
			ids = append(ids, f.Token.GetId())
		case *corelmv1.GenerateResponse_Final:
			final = f.Final
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) == 0 || !slices.Equal(ids, want) {
		t.Errorf("streamed %v\nwant      %v", ids, want)
	}
	if u := final.GetUsage(); final == nil || u.GetPromptTokens() != int32(len(prompt)) || u.GetCompletionTokens() != int32(len(ids)) {
		t.Errorf("final frame %v; want usage prompt %d, completion %d", final, len(prompt), len(ids))
	}
}

// TestServeAll runs `corelm serve-all` as a process with its defaults (the
// embedded model, temporary source and shared-memory directories), streams
// a greedy generation through the loader-published model, checks `corelm
// health`, then stops it with SIGTERM: it must exit 0 and remove its
// temporary directories.
func TestServeAll(t *testing.T) {
	p, shm := startServeAll(t, "")
	// The banner comes once the model is mapped: health says so already.
	for _, svc := range []string{"", "corelm.v1.InferenceService"} {
		if out, errb, code := corelm(t, "health", p.Addr, "--service", svc); code != 0 || out != "SERVING\n" {
			t.Errorf("corelm health --service %q: exit %d, %q %q", svc, code, out, errb)
		}
	}
	wantGreedy(t, p, storiesID)
	p.Stop(t)
	if _, err := os.Stat(shm); !os.IsNotExist(err) {
		t.Errorf("temporary shared-memory directory %s left behind (%v)", shm, err)
	}
}

// TestServeAllModelPath: --model takes a path relative to the working
// directory, with no --source-dir, and serves only that model.
func TestServeAllModelPath(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "m"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "m", "tale.gguf"), models.Stories, 0o644); err != nil {
		t.Fatal(err)
	}
	p, _ := startServeAll(t, dir, "--model", "tale=m/tale.gguf")
	wantGreedy(t, p, "tale")
	list, err := corelmv1.NewInferenceServiceClient(p.Conn).ListModels(t.Context(), &corelmv1.ListModelsRequest{})
	if err != nil || len(list.GetModels()) != 1 || list.GetModels()[0].GetModelId() != "tale" {
		t.Errorf("ListModels: %v %v, want tale alone", list, err)
	}
}

// TestServeAllRemovesStale: a serve-all that is SIGKILLed leaves its
// temporary directories (its shared-memory one in /dev/shm, its source one
// in TMPDIR), named with its pid; the next serve-all removes those of
// processes that are gone, and keeps those of a running process and those
// a loader still holds (its flock).
func TestServeAllRemovesStale(t *testing.T) {
	tmp := t.TempDir()
	serveAll := func() (*servicetest.Proc, *exec.Cmd, string) {
		cmd := cli(t.Context(), "serve-all", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
		cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
		p := servicetest.Start(t, cmd, func(line string) (string, bool) {
			if m := banner.FindStringSubmatch(line); m != nil {
				return m[1], true
			}
			return "", false
		})
		return p, cmd, banner.FindStringSubmatch(p.Logs())[2]
	}
	src := func(pid int) []string {
		m, _ := filepath.Glob(filepath.Join(tmp, fmt.Sprintf("corelm-src-%d-*", pid)))
		return m
	}

	first, cmd, shm := serveAll()
	pid := cmd.Process.Pid
	if !strings.HasPrefix(filepath.Base(shm), fmt.Sprintf("corelm-%d-", pid)) || len(src(pid)) != 1 {
		t.Fatalf("serve-all (pid %d) made %s and %v: want its pid in their names", pid, shm, src(pid))
	}
	first.Kill(t)
	if _, err := os.Stat(shm); err != nil || len(src(pid)) != 1 {
		t.Fatalf("after SIGKILL: %s: %v, sources %v; want both left behind", shm, err, src(pid))
	}

	// Beside them: a directory of this (running) test process, and one of
	// a gone process whose lock a loader still holds.
	live, err := os.MkdirTemp("/dev/shm", fmt.Sprintf("corelm-%d-", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(live) })
	locked, err := os.MkdirTemp("/dev/shm", fmt.Sprintf("corelm-%d-", pid))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(locked) })
	lock, err := os.Create(filepath.Join(locked, loader.LockName))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}

	second, _, _ := serveAll()
	if _, err := os.Stat(shm); !os.IsNotExist(err) || len(src(pid)) != 0 {
		t.Errorf("the killed process's %s (%v) and sources %v are still there", shm, err, src(pid))
	}
	for _, dir := range []string{live, locked} {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("%s was removed: %v", dir, err)
		}
	}
	second.Stop(t)
}
