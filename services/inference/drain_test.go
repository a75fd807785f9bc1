package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/models"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// TestE2ELeaseKeepsSupersededGeneration: while a generation runs on a
// superseded file, the inference service's lease keeps it in the loader's
// directory (and budget) under a draining name; once it has drained, the
// file goes.
func TestE2ELeaseKeepsSupersededGeneration(t *testing.T) {
	src, shm := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "stories260K.gguf"), models.Stories, 0o644); err != nil {
		t.Fatal(err)
	}
	loader := start(t, "loader", "--source-dir", src, "--shm-dir", shm)
	lc := corelmv1.NewLoaderServiceClient(loader.Conn)
	gen1 := loadStories(t, lc, false)
	inf := start(t, "inference", "--loader", loader.Addr)
	client := corelmv1.NewInferenceServiceClient(inf.Conn)
	waitModel(t, client, "stories", gen1)

	// A long generation on the first generation, not read until later.
	stream, first := startStream(t, client, greedy("Once upon a time", 200))
	gen2 := loadStories(t, lc, true)
	waitModel(t, client, "stories", gen2)
	draining := func() []string {
		var names []string
		entries, _ := os.ReadDir(shm)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".draining-") {
				names = append(names, e.Name())
			}
		}
		return names
	}
	if d := draining(); len(d) != 1 || d[0] != ".draining-stories.1.clm" {
		t.Fatalf("while generation 1 runs: draining %v", d)
	}
	if err := servicetest.RecvAll(stream.Recv, first.add); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(draining()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still draining after the generation ended: %v", draining())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
