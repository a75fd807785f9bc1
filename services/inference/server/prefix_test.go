package server

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corelm/corelm/internal/syncbuf"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// TestCachedTokens: a second request resending the first one's prompt and
// more reports the shared prefix as cached tokens in its usage, generates
// what an opted-out request (cache: false) generates, and the opted-out
// request reports none.
func TestCachedTokens(t *testing.T) {
	client, _ := serveInProcess(t, Options{Threads: 1})
	story := "Once upon a time there was a little girl who lived in a village near the forest. She liked to play with her dog every day."
	gen := func(text string, cache *bool) (*corelmv1.GenerateFinal, string) {
		t.Helper()
		return greedy(t, client, text, 12, cache)
	}
	first, _ := gen(story, nil)
	if c := first.GetUsage().GetCachedTokens(); c != 0 {
		t.Errorf("first request: %d cached tokens", c)
	}
	more := story + " One day the dog ran away."
	off := false
	plain, want := gen(more, &off)
	if c := plain.GetUsage().GetCachedTokens(); c != 0 {
		t.Errorf("cache: false: %d cached tokens", c)
	}
	again, got := gen(more, nil)
	if c := again.GetUsage().GetCachedTokens(); c < first.GetUsage().GetPromptTokens()-1 {
		t.Errorf("resent prompt: %d cached tokens, want at least %d", c, first.GetUsage().GetPromptTokens()-1)
	}
	t.Logf("%d of %d prompt tokens cached; %q", again.GetUsage().GetCachedTokens(), again.GetUsage().GetPromptTokens(), got)
	if got != want || got == "" {
		t.Errorf("with the cache %q, without %q", got, want)
	}
	st, err := client.GetStatus(t.Context(), &corelmv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	m := st.GetModels()[0]
	if m.GetCacheHits() < 1 || m.GetCacheMisses() < 1 || m.GetCachedTokens() != uint64(again.GetUsage().GetCachedTokens()) ||
		m.GetCacheBytes() <= 0 || m.GetCacheBytesBudget() < m.GetCacheBytes() || m.GetKvBytesBudget() <= 0 {
		t.Errorf("GetStatus: %v", m)
	}
}

// greedy runs one greedy generation of maxTokens on the stories model and
// returns its final frame and text.
func greedy(t *testing.T, client corelmv1.InferenceServiceClient, text string, maxTokens int32, cache *bool) (*corelmv1.GenerateFinal, string) {
	t.Helper()
	temp := float32(0)
	stream, err := client.GenerateStream(t.Context(), &corelmv1.GenerateStart{
		ModelId: "stories", MaxTokens: maxTokens, Sampling: &corelmv1.SamplingParams{Temperature: &temp},
		Prompt: &corelmv1.GenerateStart_Text{Text: text}, Cache: cache,
	})
	if err != nil {
		t.Fatal(err)
	}
	var out string
	var final *corelmv1.GenerateFinal
	for {
		resp, err := stream.Recv()
		if err != nil {
			break
		}
		out += resp.GetToken().GetText()
		if f := resp.GetFinal(); f != nil {
			final = f
			out += f.GetText()
		}
	}
	if final == nil {
		t.Fatal("no final frame")
	}
	return final, out
}

// TestKVCacheDirSurvivesRestart: with --kv-cache-dir a restarted server
// answers a prompt it saw before from the persisted prefix cache (cached
// tokens in the usage, the same text); with the persisted blocks corrupted
// it logs each one, ignores it and still answers right.
func TestKVCacheDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	prompt := strings.Repeat("Once upon a time there was a little girl who lived in a village near the forest. ", 4)
	var logs syncbuf.Buffer
	opts := Options{Threads: 1, KVCacheDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))}

	client, stop := serveInProcess(t, opts)
	first, want := greedy(t, client, prompt, 8, nil)
	stop() // the model's scheduler writes its cache as it stops
	files, _ := filepath.Glob(filepath.Join(dir, "stories", "*"))
	if len(files) == 0 {
		t.Fatalf("nothing persisted in %s", dir)
	}

	client, stop = serveInProcess(t, opts)
	warm, got := greedy(t, client, prompt, 8, nil)
	stop()
	if c := warm.GetUsage().GetCachedTokens(); c < 64 || got != want {
		t.Errorf("after a restart: %d of %d prompt tokens cached, text %q; want ≥ 64 and %q", c, first.GetUsage().GetPromptTokens(), got, want)
	}

	var blocks []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			blocks = append(blocks, path)
		}
		return nil
	})
	if len(blocks) == 0 {
		t.Fatalf("no persisted block files under %s", dir)
	}
	for _, f := range blocks {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	client, stop = serveInProcess(t, opts)
	cold, got := greedy(t, client, prompt, 8, nil)
	stop()
	if c := cold.GetUsage().GetCachedTokens(); c != 0 || got != want {
		t.Errorf("corrupt cache: %d cached tokens, text %q; want 0 and %q", c, got, want)
	}
	if n := strings.Count(logs.String(), "ignoring a persisted KV cache block"); n == 0 {
		t.Errorf("no log line for the corrupt blocks:\n%s", logs.String())
	}
}
