package main

// Fault tests (issue 16): the loader and inference binaries on loopback,
// one of them killed, restarted or stopped while generations run. Every
// wait is on a condition with a deadline; the processes go at the test's
// end (servicetest.Start).

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/models"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// longCtx lets one generation run long enough (some 2 s for longTokens on
// the tiny stories model, 20 times what a switch or a kill takes) for
// the fault to hit it while it runs; the tests check that it did.
const (
	longCtx    = "2048"
	longTokens = 2000
)

// storiesDirs are a source directory holding the stories model and an
// empty shared-memory directory.
func storiesDirs(t *testing.T) (src, shm string) {
	t.Helper()
	src, shm = t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "stories260K.gguf"), models.Stories, 0o644); err != nil {
		t.Fatal(err)
	}
	return src, shm
}

// startOn is start on a given address: a restarted process where its
// peers look for it.
func startOn(t *testing.T, name, addr string, args ...string) *servicetest.Proc {
	t.Helper()
	pkg := map[string]string{"loader": "../loader", "inference": "."}[name]
	cmd := exec.Command(servicetest.Binary(t, pkg), append([]string{"--listen", addr}, args...)...)
	cmd.Env = append(os.Environ(), "CORELM_THREADS=1")
	return servicetest.Start(t, cmd, servicetest.ServingAddr)
}

// waitLog waits until p has logged a line containing each of parts.
func waitLog(t *testing.T, p *servicetest.Proc, within time.Duration, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !hasLog(p.Logs(), parts...) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q within %v", parts, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countLog is how many lines of logs contain each of parts.
func countLog(logs string, parts ...string) int {
	n := 0
	for line := range strings.SplitSeq(logs, "\n") {
		if hasLog(line, parts...) {
			n++
		}
	}
	return n
}

func hasLog(logs string, parts ...string) bool {
	for line := range strings.SplitSeq(logs, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// activeSequences is how many generations the server runs now.
func activeSequences(t *testing.T, c corelmv1.InferenceServiceClient) int32 {
	t.Helper()
	s, err := c.GetStatus(t.Context(), &corelmv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return s.GetActiveSequences()
}

// checkLong checks a long greedy generation of text that ran to its
// length: longTokens tokens, the first ones those of Generate.
func checkLong(t *testing.T, what, text string, r *result) {
	t.Helper()
	_, want, _ := servicetest.Greedy(t, text, 32)
	if r.final.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_LENGTH || len(r.ids) != longTokens ||
		r.final.GetUsage().GetCompletionTokens() != longTokens || !slices.Equal(r.ids[:len(want)], want) {
		t.Errorf("%s: %d tokens, final %v; want %d tokens starting %v, finish LENGTH", what, len(r.ids), r.final, longTokens, want)
	}
}

// checkShort runs a short greedy generation and checks it against Generate.
func checkShort(t *testing.T, what string, c corelmv1.InferenceServiceClient) {
	t.Helper()
	const text = "The dog"
	_, want, _ := servicetest.Greedy(t, text, 16)
	r, err := generateStream(t.Context(), c, greedy(text, 16))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !slices.Equal(r.ids, want) || r.final.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_LENGTH {
		t.Errorf("%s: %v (%v), want %v", what, r.ids, r.final.GetFinishReason(), want)
	}
}

// TestFaultLoaderKilled: the loader dies (SIGKILL) while the inference
// service runs a generation on a model it published. The generation
// finishes, new ones are served from the mapping meanwhile, and once a
// loader is back on the same address and directory the watch has
// reconnected: a reload through it is served.
func TestFaultLoaderKilled(t *testing.T) {
	src, shm := storiesDirs(t)
	loaderArgs := []string{"--source-dir", src, "--shm-dir", shm}
	loader := start(t, "loader", loaderArgs...)
	gen1 := loadStories(t, corelmv1.NewLoaderServiceClient(loader.Conn), false)
	inf := start(t, "inference", "--loader", loader.Addr, "--ctx", longCtx)
	client := corelmv1.NewInferenceServiceClient(inf.Conn)
	waitModel(t, client, "stories", gen1)

	const text = "Once upon a time"
	stream, running := startStream(t, client, greedy(text, longTokens))
	loader.Kill(t)
	if n := activeSequences(t, client); n != 1 {
		t.Fatalf("%d generations running at the kill, want 1 (the long one)", n)
	}
	waitLog(t, inf, 10*time.Second, "loader watch ended, reconnecting")
	if err := servicetest.RecvAll(stream.Recv, running.add); err != nil {
		t.Fatalf("the generation running at the kill: %v", err)
	}
	checkLong(t, "the generation running at the kill", text, running)
	checkShort(t, "a generation while the loader is down", client)

	loader = startOn(t, "loader", loader.Addr, loaderArgs...)
	if !hasLog(loader.Logs(), "re-announcing", `"generation":1`) {
		t.Errorf("the restarted loader did not re-announce generation 1:\n%s", loader.Logs())
	}
	gen2 := loadStories(t, corelmv1.NewLoaderServiceClient(loader.Conn), true)
	if gen2 <= gen1 {
		t.Fatalf("reload through the restarted loader gave generation %d after %d", gen2, gen1)
	}
	waitModel(t, client, "stories", gen2)
	checkShort(t, "a generation after the reload", client)
	servicetest.WaitIdle(t, client, 5*time.Second)
}

// TestFaultInferenceKilled: the inference service dies (SIGKILL) in the
// middle of a generation. Its client's stream breaks; a new inference
// process on the same loader maps the published file again: the loader
// packs nothing, its generation and the file stay the same.
func TestFaultInferenceKilled(t *testing.T) {
	src, shm := storiesDirs(t)
	loader := start(t, "loader", "--source-dir", src, "--shm-dir", shm)
	gen1 := loadStories(t, corelmv1.NewLoaderServiceClient(loader.Conn), false)
	file := filepath.Join(shm, "stories.1.clm")
	before := inode(t, file)
	inf := start(t, "inference", "--loader", loader.Addr, "--ctx", longCtx)
	client := corelmv1.NewInferenceServiceClient(inf.Conn)
	waitModel(t, client, "stories", gen1)

	stream, running := startStream(t, client, greedy("Once upon a time", longTokens))
	inf.Kill(t)
	if err := servicetest.RecvAll(stream.Recv, running.add); err == nil || running.final != nil {
		t.Fatalf("stream of the killed server: %v, final %v, want an error and no final frame", err, running.final)
	}

	inf = start(t, "inference", "--loader", loader.Addr)
	client = corelmv1.NewInferenceServiceClient(inf.Conn)
	waitModel(t, client, "stories", gen1)
	if g := mustGeneration(t, client); g != gen1 {
		t.Errorf("the restarted server serves generation %d, want %d", g, gen1)
	}
	checkShort(t, "a generation on the restarted server", client)
	if n := countLog(loader.Logs(), `"msg":"published"`); n != 1 {
		t.Errorf("the loader published %d times, want once:\n%s", n, loader.Logs())
	}
	if after := inode(t, file); after != before {
		t.Errorf("%s was replaced: inode %d, was %d", file, after, before)
	}
	if entries, _ := os.ReadDir(shm); len(entries) != 2 { // the file and the loader's lock
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("shm directory holds %v", names)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestFaultPublishMidStream: a reload publishes a new generation while a
// generation runs. The running one keeps the old mapping (its file stays,
// draining) and ends with a normal final frame; a new request runs on the
// new generation.
func TestFaultPublishMidStream(t *testing.T) {
	src, shm := storiesDirs(t)
	loader := start(t, "loader", "--source-dir", src, "--shm-dir", shm)
	lc := corelmv1.NewLoaderServiceClient(loader.Conn)
	gen1 := loadStories(t, lc, false)
	inf := start(t, "inference", "--loader", loader.Addr, "--ctx", longCtx)
	client := corelmv1.NewInferenceServiceClient(inf.Conn)
	waitModel(t, client, "stories", gen1)

	const text = "Once upon a time"
	stream, running := startStream(t, client, greedy(text, longTokens))
	gen2 := loadStories(t, lc, true)
	waitModel(t, client, "stories", gen2)
	if n := activeSequences(t, client); n != 1 {
		t.Fatalf("%d generations running after the switch, want 1 (the long one)", n)
	}
	// The loader renamed generation 1 aside: a reader still maps it.
	draining := filepath.Join(shm, ".draining-stories.1.clm")
	if _, err := os.Stat(draining); err != nil {
		t.Errorf("generation 1 while a request runs on it: %v", err)
	}
	checkShort(t, "a generation on the new mapping", client)
	if err := servicetest.RecvAll(stream.Recv, running.add); err != nil {
		t.Fatalf("the generation across the switch: %v", err)
	}
	checkLong(t, "the generation across the switch", text, running)
	// Its end lets the old mapping go.
	deadline := time.Now().Add(10 * time.Second)
	for _, err := os.Stat(draining); err == nil; _, err = os.Stat(draining) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still there after the generation on it ended", draining)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if g := mustGeneration(t, client); g != gen2 {
		t.Errorf("serving generation %d, want %d", g, gen2)
	}
}

// waitQueue polls until the server runs active generations with queued
// ones waiting.
func waitQueue(t *testing.T, c corelmv1.InferenceServiceClient, active, queued int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := c.GetStatus(t.Context(), &corelmv1.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if s.GetActiveSequences() == active && s.GetQueuedRequests() == queued {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %v, want %d running and %d queued", s, active, queued)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitExit waits for p to exit after a signal, within d.
func waitExit(t *testing.T, p *servicetest.Proc, d time.Duration) int {
	t.Helper()
	select {
	case <-p.Exited():
		return p.ExitCode()
	case <-time.After(d):
		t.Fatalf("still running %v after SIGTERM", d)
		return 0
	}
}

// recvFinal reads a stream to its end into a new result.
func recvFinal(stream corelmv1.InferenceService_GenerateStreamClient) (*result, error) {
	r := &result{}
	return r, servicetest.RecvAll(stream.Recv, r.add)
}

// TestFaultSIGTERMDrains: SIGTERM while two generations run and two wait
// (--max-seqs 2 --max-queue 2). The two queued ones end at once with a
// final frame CANCELLED, code Unavailable ("shutting down: the request was
// still queued; send it again") and no token, while the running ones are
// still running (GetStatus: 2 running, none queued); calls made after the
// signal get Unavailable; the running ones drain to their end (LENGTH, all
// their tokens) and the process exits 0 well within --shutdown-grace.
func TestFaultSIGTERMDrains(t *testing.T) {
	const tokens = longTokens // some 1 s each, two at a time
	p := start(t, "inference", "--model-file", "stories", "--ctx", longCtx, "--max-seqs", "2", "--max-queue", "2", "--shutdown-grace", "20s")
	c := corelmv1.NewInferenceServiceClient(p.Conn)
	texts := []string{"Once upon a time", "The cat", "The dog", "Lily"}
	streams := make([]corelmv1.InferenceService_GenerateStreamClient, len(texts))
	for i, text := range texts {
		var err error
		if streams[i], err = c.GenerateStream(t.Context(), greedy(text, tokens)); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			waitQueue(t, c, int32(i+1), 0)
		}
	}
	waitQueue(t, c, 2, 2)
	term := time.Now()
	p.Signal(t, syscall.SIGTERM)

	// The queued ones: refused, retryable, before the running ones end.
	for i, stream := range streams[2:] {
		r, err := recvFinal(stream)
		if f := r.final; err != nil || f.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_CANCELLED ||
			codes.Code(f.GetErrorCode()) != codes.Unavailable || !strings.Contains(f.GetErrorMessage(), "still queued") || len(r.ids) != 0 {
			t.Errorf("queued generation %d: %d tokens, final %v, err %v; want a CANCELLED final with code Unavailable and no token", i+2, len(r.ids), f, err)
		}
	}
	if s, err := c.GetStatus(t.Context(), &corelmv1.GetStatusRequest{}); err != nil || s.GetActiveSequences() != 2 || s.GetQueuedRequests() != 0 {
		t.Errorf("status once the queued ones were refused: %v %v; want the 2 running, none queued", s, err)
	}
	// A call after the signal: refused with Unavailable.
	if _, err := generateStream(t.Context(), c, greedy("Tom", 4)); status.Code(err) != codes.Unavailable {
		t.Errorf("a call after SIGTERM: %v, want Unavailable", err)
	}
	for i, stream := range streams[:2] {
		r, err := recvFinal(stream)
		if err != nil || r.final.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_LENGTH || len(r.ids) != tokens {
			t.Errorf("running generation %d: %d tokens, final %v, err %v; want %d tokens and LENGTH", i, len(r.ids), r.final, err, tokens)
		}
	}
	if code := waitExit(t, p, 20*time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	t.Logf("drained and exited %v after SIGTERM", time.Since(term).Round(time.Millisecond))
}

// TestFaultSIGTERMGraceEnds: SIGTERM with a generation running that needs
// longer than --shutdown-grace and one queued behind it. At the end of the
// grace the running one ends with a final frame saying Unavailable
// ("shutting down", retryable) after the tokens it made; the queued one
// got the same with no token at the signal (TestFaultSIGTERMDrains); the
// process exits 0.
func TestFaultSIGTERMGraceEnds(t *testing.T) {
	p := start(t, "inference", "--model-file", "stories", "--ctx", longCtx, "--max-seqs", "1", "--max-queue", "1", "--shutdown-grace", "500ms")
	c := corelmv1.NewInferenceServiceClient(p.Conn)
	running, _ := startStream(t, c, greedy("Once upon a time", longTokens)) // some 2 s
	queued, err := c.GenerateStream(t.Context(), greedy("The cat", 16))
	if err != nil {
		t.Fatal(err)
	}
	waitQueue(t, c, 1, 1)
	p.Signal(t, syscall.SIGTERM)
	for _, tt := range []struct {
		name   string
		stream corelmv1.InferenceService_GenerateStreamClient
		tokens func(n int) bool
	}{
		{"running", running, func(n int) bool { return n < longTokens-1 }}, // its first token read above
		{"queued", queued, func(n int) bool { return n == 0 }},
	} {
		r, err := recvFinal(tt.stream)
		f := r.final
		if err != nil || f.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_CANCELLED ||
			codes.Code(f.GetErrorCode()) != codes.Unavailable || !tt.tokens(len(r.ids)) {
			t.Errorf("%s: %d tokens, final %v, err %v; want a CANCELLED final with code Unavailable", tt.name, len(r.ids), f, err)
		}
	}
	if code := waitExit(t, p, 10*time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
}

// TestFaultTmpfsFull: the loader's directory is a real 1 MiB tmpfs and the
// model packs to some 1.2 MiB. With the budget taken from the file system
// the load is refused before writing; with a budget that lies (larger
// than the disk), writing runs out of space. Either way the client gets a
// clean error, nothing is left in the directory, and the loader serves
// on: a second try fails the same way.
func TestFaultTmpfsFull(t *testing.T) {
	for _, tt := range []struct{ name, budget string }{
		{"budget from the file system", "0"},
		{"disk smaller than the budget", "1GiB"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src, _ := storiesDirs(t)
			shm := smallTmpfs(t, "1m")
			loader := start(t, "loader", "--source-dir", src, "--shm-dir", shm, "--budget", tt.budget)
			lc := corelmv1.NewLoaderServiceClient(loader.Conn)
			before := dirNames(t, shm)
			for try := range 2 {
				err := loadErr(t, lc)
				if c := status.Code(err); c == codes.OK || c == codes.Unknown || c == codes.Internal {
					t.Errorf("try %d: %v, want a clean error", try, err)
				}
				t.Logf("try %d: %v", try, err)
				if after := dirNames(t, shm); !slices.Equal(after, before) {
					t.Errorf("try %d: the directory holds %v, held %v", try, after, before)
				}
			}
			servicetest.WaitServing(t, loader.Conn, "")
			if r, err := lc.ListModels(t.Context(), &corelmv1.LoaderServiceListModelsRequest{}); err != nil || len(r.GetModels()) != 0 {
				t.Errorf("list after the failed loads: %v %v", r, err)
			}
		})
	}
}

// smallTmpfs mounts a tmpfs of size in a temporary directory until the
// test ends, skipping the test where mounting is not allowed.
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// loadErr asks the loader for stories and returns how the load ended.
func loadErr(t *testing.T, lc corelmv1.LoaderServiceClient) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	stream, err := lc.LoadModel(ctx, &corelmv1.LoadModelRequest{ModelId: "stories", Path: "stories260K.gguf"})
	if err != nil {
		return err
	}
	return servicetest.RecvAll(stream.Recv, func(*corelmv1.LoadModelResponse) {})
}
