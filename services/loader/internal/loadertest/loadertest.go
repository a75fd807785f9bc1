// Package loadertest holds what the loader's tests share: a source
// directory with real models, LoadModel to the end, status and
// shared-memory checks. The binary's tests (services/loader) and the
// in-process ones (services/loader/server) both use it; starting the
// servers is internal/servicetest's.
package loadertest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/formats/pack/packtest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// SourceDir returns a source directory holding the stories model
// (stories.gguf) and the synthetic quantized model (tiny.gguf).
func SourceDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	WriteFile(t, filepath.Join(dir, "stories.gguf"), models.Stories)
	tiny, err := packtest.Tiny.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	WriteFile(t, filepath.Join(dir, "tiny.gguf"), tiny)
	return dir
}

// WriteFile writes b to path, creating its directory.
func WriteFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// LoadAll runs LoadModel to the end and returns every response.
func LoadAll(t testing.TB, c corelmv1.LoaderServiceClient, req *corelmv1.LoadModelRequest) ([]*corelmv1.LoadModelResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := c.LoadModel(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []*corelmv1.LoadModelResponse
	err = servicetest.RecvAll(stream.Recv, func(r *corelmv1.LoadModelResponse) { out = append(out, r) })
	return out, err
}

// MustLoad loads and returns the published model.
func MustLoad(t testing.TB, c corelmv1.LoaderServiceClient, id, path string, reload bool) *corelmv1.PublishedModel {
	t.Helper()
	resps, err := LoadAll(t, c, &corelmv1.LoadModelRequest{ModelId: id, Path: path, Reload: reload})
	if err != nil {
		t.Fatalf("LoadModel(%s, %s): %v", id, path, err)
	}
	last := resps[len(resps)-1]
	if last.GetStage() != corelmv1.LoadStage_LOAD_STAGE_READY || last.GetModel() == nil {
		t.Fatalf("LoadModel(%s) ended with %v", id, last)
	}
	return last.GetModel()
}

// WantCode checks err's gRPC code and that its message mentions each of
// words.
func WantCode(t testing.TB, err error, code codes.Code, words ...string) {
	t.Helper()
	st, _ := status.FromError(err)
	t.Logf("%v: %s", st.Code(), st.Message())
	if st.Code() != code {
		t.Fatalf("got %v (%v), want %v", st.Code(), err, code)
	}
	for _, w := range words {
		if !strings.Contains(st.Message(), w) {
			t.Errorf("message %q does not mention %q", st.Message(), w)
		}
	}
}

// LockName is the loader's lock file in the shared-memory directory (the
// server package checks that it agrees).
const LockName = ".loader.lock"

// ShmFiles lists the shared-memory directory without the loader's lock.
func ShmFiles(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != LockName {
			names = append(names, e.Name())
		}
	}
	return names
}

// ComparePacked checks that the published file holds exactly the source's
// metadata and tensors.
func ComparePacked(t testing.TB, packedPath, srcPath string) {
	t.Helper()
	pf, err := pack.Open(packedPath)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	if err := pf.Verify(); err != nil {
		t.Fatal(err)
	}
	src, err := gguf.Open(srcPath)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for _, kv := range src.KVs {
		got, ok := pf.Get(kv.Key)
		if !ok || got.Type != kv.Value.Type || !bytes.Equal(got.Payload(), kv.Value.Payload()) {
			t.Errorf("metadata %s: got %v, want %v", kv.Key, got, kv.Value)
		}
	}
	if len(pf.Tensors) != len(src.Tensors) {
		t.Fatalf("%d tensors, source has %d", len(pf.Tensors), len(src.Tensors))
	}
	for i := range src.Tensors {
		st := &src.Tensors[i]
		got, ok := pf.Tensor(st.Name)
		if !ok || got.Type != st.Type || !bytes.Equal(bytes.Join(pf.Parts(got), nil), pack.InLayout(got, src.TensorData(st))) {
			t.Errorf("tensor %s differs", st.Name)
		}
	}
}
