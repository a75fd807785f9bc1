package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// validID is corelmv1.ValidateModelID's rule written out by hand, the
// fuzz targets' oracle.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i, c := range []byte(id) {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// FuzzValidateModelID: a model id is accepted exactly when it matches the
// documented rule; an accepted one is a safe file name and its published
// file name parses back to it.
func FuzzValidateModelID(f *testing.F) {
	for _, s := range []string{"stories", "llama-3.1-8b", "a", "../etc", ".hidden", "", "a/b", strings.Repeat("x", 65), "x\x00", "ü", "a.1"} {
		f.Add(s, uint64(1))
	}
	f.Fuzz(func(t *testing.T, id string, gen uint64) {
		err := corelmv1.ValidateModelID(id)
		if (err == nil) != validID(id) {
			t.Fatalf("ValidateModelID(%q) = %v, the rule says valid=%v", id, err, validID(id))
		}
		if err != nil {
			return
		}
		if strings.ContainsAny(id, "/\\\x00") || strings.HasPrefix(id, ".") {
			t.Fatalf("accepted %q, not a safe file name", id)
		}
		if gen == 0 {
			gen = 1
		}
		if gotID, gotGen, ok := parseFileName(fileName(id, gen)); !ok || gotID != id || gotGen != gen {
			t.Fatalf("parseFileName(fileName(%q, %d)) = %q, %d, %v", id, gen, gotID, gotGen, ok)
		}
	})
}

// FuzzValidateRequests: LoadModel and UnloadModel requests as bytes off
// the wire validate without panicking; an accepted one has a valid id,
// known options and no negative context. UnloadModel of any id the
// validator passes is answered NotFound here (nothing is published).
func FuzzValidateRequests(f *testing.F) {
	for _, m := range []proto.Message{
		&corelmv1.LoadModelRequest{ModelId: "stories", Path: "stories.gguf"},
		&corelmv1.LoadModelRequest{ModelId: "x", Options: &corelmv1.LoadOptions{KvType: corelmv1.KVType(99), Context: -1}},
		&corelmv1.LoadModelRequest{ModelId: "../x", Path: "/etc/passwd", Reload: true},
		&corelmv1.UnloadModelRequest{ModelId: "stories"},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	s := fuzzServer(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var load corelmv1.LoadModelRequest
		if proto.Unmarshal(b, &load) == nil && load.Validate() == nil {
			if !validID(load.GetModelId()) || load.GetOptions().GetContext() < 0 {
				t.Fatalf("accepted %v", &load)
			}
			if _, ok := corelmv1.KVType_name[int32(load.GetOptions().GetKvType())]; !ok {
				t.Fatalf("accepted kv_type %d", load.GetOptions().GetKvType())
			}
		}
		var unload corelmv1.UnloadModelRequest
		if proto.Unmarshal(b, &unload) == nil && unload.Validate() == nil {
			if !validID(unload.GetModelId()) {
				t.Fatalf("accepted %v", &unload)
			}
			if _, err := s.UnloadModel(context.Background(), &unload); status.Code(err) != codes.NotFound {
				t.Fatalf("UnloadModel(%q) = %v, want NotFound", unload.GetModelId(), err)
			}
		}
	})
}

// fuzzServer is a started loader over a source directory that holds a
// model file, a subdirectory, a FIFO and symlinks (one inside, one to a
// file outside, one to the directory's parent, a loop), beside a secret
// file outside it.
func fuzzServer(tb testing.TB) *Server {
	tb.Helper()
	root := tb.TempDir()
	src := filepath.Join(root, "src")
	for _, d := range []string{src, filepath.Join(src, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	for _, p := range []string{filepath.Join(root, "secret.gguf"), filepath.Join(src, "tiny.gguf"), filepath.Join(src, "sub", "in.gguf")} {
		if err := os.WriteFile(p, []byte("GGUF"), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	links := map[string]string{"out.gguf": "../secret.gguf", "up": "..", "same.gguf": "tiny.gguf", "loop": "loop", "abs.gguf": filepath.Join(root, "secret.gguf")}
	for name, to := range links {
		if err := os.Symlink(to, filepath.Join(src, name)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(src, "fifo.gguf"), 0o644); err != nil {
		tb.Fatal(err)
	}
	s, err := New(Options{SourceDir: src, ShmDir: filepath.Join(root, "shm"), Budget: 1 << 20})
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// FuzzSourcePath: whatever path a LoadModel names, the loader opens only
// regular files inside its source directory (symlinks, "..", absolute
// paths, FIFOs and directories are refused), and refusals carry the
// loader's error kinds.
func FuzzSourcePath(f *testing.F) {
	for _, p := range []string{"tiny.gguf", "sub/in.gguf", "out.gguf", "up/secret.gguf", "same.gguf", "loop", "abs.gguf", "fifo.gguf",
		"sub", "../secret.gguf", "sub/../tiny.gguf", "/etc/passwd", "", ".", "./tiny.gguf", "tiny.gguf/", "sub//in.gguf", "nope.gguf"} {
		f.Add(p)
	}
	s := fuzzServer(f)
	f.Fuzz(func(t *testing.T, rel string) {
		file, err := s.openSource(rel)
		if err != nil {
			if !errors.Is(err, ErrEscape) && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrBadFile) {
				t.Fatalf("openSource(%q): %v is none of the loader's kinds", rel, err)
			}
			return
		}
		defer file.Close()
		real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", file.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(real, s.srcDir+"/") {
			t.Fatalf("openSource(%q) opened %s, outside %s", rel, real, s.srcDir)
		}
		if slices.Contains(strings.Split(filepath.ToSlash(rel), "/"), "..") {
			t.Fatalf("openSource(%q) accepted a path with \"..\"", rel)
		}
	})
}
