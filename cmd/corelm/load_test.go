package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/models"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	loader "github.com/corelm/corelm/services/loader/server"
)

// TestLoad runs `corelm load` against a loader in this process: a first
// load publishes generation 1 with its stages and progress on stderr, the
// same file again is reused, --reload publishes generation 2, and a file
// outside the source directory is refused with the loader's reason.
func TestLoad(t *testing.T) {
	src, shm := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "tiny.gguf"), models.Stories, 0o644); err != nil {
		t.Fatal(err)
	}
	conn, _ := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return loader.Serve(ctx, lis, loader.Config{Options: loader.Options{SourceDir: src, ShmDir: shm}, AuthToken: "s3cret"})
	})
	addr := conn.Target()
	env := []string{loaderTokenEnv + "=s3cret"}

	stdout, stderr, code := corelmWith(t, "", env, "load", "--server", addr, "tiny", "tiny.gguf")
	if code != 0 || !strings.Contains(stdout, "tiny: published generation 1, ") {
		t.Fatalf("first load: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{"validating\n", "packing\n", "ready\n", "100%"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("progress on stderr lacks %q:\n%s", want, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(shm, "tiny.1.clm")); err != nil {
		t.Errorf("published file: %v", err)
	}

	stdout, _, code = corelmWith(t, "", env, "load", "tiny", "tiny.gguf", "--server", addr)
	if code != 0 || !strings.Contains(stdout, "tiny: already published generation 1, ") {
		t.Errorf("second load: exit %d, stdout %q", code, stdout)
	}
	stdout, _, code = corelmWith(t, "", env, "load", "--server", addr, "--reload", "tiny")
	if code != 0 || !strings.Contains(stdout, "tiny: published generation 2, ") {
		t.Errorf("reload by id: exit %d, stdout %q", code, stdout)
	}

	_, stderr, code = corelmWith(t, "", env, "load", "--server", addr, "other", "../outside.gguf")
	if code != 1 || !strings.Contains(stderr, "outside.gguf") {
		t.Errorf("a path outside the source directory: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = corelm(t, "load", "--server", addr, "tiny")
	if code != 1 || !strings.Contains(stderr, "$"+loaderTokenEnv) {
		t.Errorf("no token: exit %d, stderr %q", code, stderr)
	}
	if _, _, code = corelm(t, "load", "tiny"); code != 2 {
		t.Errorf("no --server: exit %d, want 2", code)
	}
}

// TestProgressBar draws on a terminal: one line redrawn in place with the
// bar, the sizes, the rate and the time left, ended by a newline.
func TestProgressBar(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b, true)
	p.update(&corelmv1.LoadModelResponse{Stage: corelmv1.LoadStage_LOAD_STAGE_PACKING, BytesDone: 1 << 30, BytesTotal: 4 << 30,
		BytesPerSecond: 256 << 20, Eta: durationpb.New(12e9)})
	p.done()
	got := b.String()
	for _, want := range []string{"\r\033[K", "packing", "[#######.......................]", " 25%", "1.00 GiB / 4.00 GiB", "256.00 MiB/s", "ETA 12s"} {
		if !strings.Contains(got, want) {
			t.Errorf("bar %q lacks %q", got, want)
		}
	}
	if !strings.HasSuffix(got, "\n") {
		t.Errorf("bar %q does not end its line", got)
	}
}
