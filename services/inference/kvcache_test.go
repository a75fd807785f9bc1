package main

// The prefix cache across restarts of the real binary (issue 15): the
// inference process writes its cached prefixes to --kv-cache-dir when it
// stops on SIGTERM and reads them when it starts.

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// logprobs is one served generation's ids and logprobs.
func logprobsOf(t *testing.T, c corelmv1.InferenceServiceClient, text string, maxTokens int32, cache bool) (*corelmv1.GenerateFinal, []int32, []float32) {
	t.Helper()
	req := greedy(text, maxTokens)
	req.Logprobs, req.Cache = true, &cache
	stream, err := c.GenerateStream(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	var final *corelmv1.GenerateFinal
	var ids []int32
	var lps []float32
	err = servicetest.RecvAll(stream.Recv, func(r *corelmv1.GenerateResponse) {
		switch f := r.GetFrame().(type) {
		case *corelmv1.GenerateResponse_Token:
			ids = append(ids, f.Token.GetId())
			lps = append(lps, f.Token.GetLogprob())
		case *corelmv1.GenerateResponse_Final:
			final = f.Final
		}
	})
	if err != nil || final == nil {
		t.Fatalf("generate: %v, final %v", err, final)
	}
	return final, ids, lps
}

// TestKVCacheRestart: the inference binary, serving a model published by
// the loader, is stopped with SIGTERM after a request and started again on
// the same --kv-cache-dir: a request with the same prefix hits the
// persisted blocks (the new process computed nothing yet) and its tokens
// and logprobs equal an uncached run's. With every persisted block
// corrupted, the next start logs each as ignored, the request misses, and
// the output is still the same.
func TestKVCacheRestart(t *testing.T) {
	src, shm := storiesDirs(t)
	cacheDir := t.TempDir()
	loader := start(t, "loader", "--source-dir", src, "--shm-dir", shm)
	gen := loadStories(t, corelmv1.NewLoaderServiceClient(loader.Conn), false)
	serve := func() (*servicetest.Proc, corelmv1.InferenceServiceClient) {
		p := start(t, "inference", "--loader", loader.Addr, "--kv-cache-dir", cacheDir)
		c := corelmv1.NewInferenceServiceClient(p.Conn)
		waitModel(t, c, "stories", gen)
		return p, c
	}
	text := strings.Repeat("Once upon a time there was a little girl who lived in a village near the forest. ", 4)
	const n = 16

	inf, client := serve()
	_, wantIDs, wantLPs := logprobsOf(t, client, text, n, false) // the uncached run
	if first, ids, _ := logprobsOf(t, client, text, n, true); !slices.Equal(ids, wantIDs) || first.GetUsage().GetCachedTokens() != 0 {
		t.Fatalf("first cached run: %d cached tokens, %v, want 0 and %v", first.GetUsage().GetCachedTokens(), ids, wantIDs)
	}
	inf.Stop(t) // SIGTERM: the scheduler writes its cache as it stops
	blocks := kvBlockFiles(t, cacheDir)
	if len(blocks) == 0 {
		t.Fatalf("nothing persisted under %s:\n%s", cacheDir, inf.Logs())
	}

	inf, client = serve()
	warm, ids, lps := logprobsOf(t, client, text, n, true)
	inf.Stop(t)
	prompt := warm.GetUsage().GetPromptTokens()
	if c := warm.GetUsage().GetCachedTokens(); c < 64 || !slices.Equal(ids, wantIDs) || !slices.Equal(lps, wantLPs) {
		t.Errorf("after a restart: %d of %d prompt tokens cached (want ≥ 64), %v %v; uncached %v %v", c, prompt, ids, lps, wantIDs, wantLPs)
	}
	t.Logf("after a restart: %d of %d prompt tokens from %d persisted blocks", warm.GetUsage().GetCachedTokens(), prompt, len(blocks))

	blocks = kvBlockFiles(t, cacheDir)
	for _, f := range blocks {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		raw[len(raw)/2] ^= 0xff
		if err := os.WriteFile(f, raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	inf, client = serve()
	cold, ids, lps := logprobsOf(t, client, text, n, true)
	inf.Stop(t)
	if c := cold.GetUsage().GetCachedTokens(); c != 0 || !slices.Equal(ids, wantIDs) || !slices.Equal(lps, wantLPs) {
		t.Errorf("corrupt cache: %d cached tokens, %v %v; want 0 and %v %v", c, ids, lps, wantIDs, wantLPs)
	}
	if got := countLog(inf.Logs(), "ignoring a persisted KV cache block", "checksum"); got != len(blocks) {
		t.Errorf("%d log lines for %d corrupt blocks:\n%s", got, len(blocks), inf.Logs())
	}
	// The stop rewrote them: a fourth start reads them back.
	inf, client = serve()
	again, _, _ := logprobsOf(t, client, text, n, true)
	inf.Stop(t)
	if c := again.GetUsage().GetCachedTokens(); c < 64 || countLog(inf.Logs(), "ignoring a persisted KV cache block") != 0 {
		t.Errorf("after the corrupt blocks were rewritten: %d cached tokens, logs:\n%s", c, inf.Logs())
	}
}

// kvBlockFiles lists the persisted block files under dir.
func kvBlockFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(d.Name(), ".kvb") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
