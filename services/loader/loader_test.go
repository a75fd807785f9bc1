package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/formats/pack/packtest"
	"github.com/corelm/corelm/pkg/kernels"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/loader/internal/loadertest"
)

func TestLoadPublishesPackedModels(t *testing.T) {
	src, shm := loadertest.SourceDir(t), t.TempDir()
	p := startLoader(t, src, shm)
	for _, tt := range []struct{ id, path string }{{"stories", "stories.gguf"}, {"tiny-q", "tiny.gguf"}} {
		t.Run(tt.id, func(t *testing.T) {
			resps, err := loadertest.LoadAll(t, p.client, &corelmv1.LoadModelRequest{ModelId: tt.id, Path: tt.path,
				Options: &corelmv1.LoadOptions{KvType: corelmv1.KVType_KV_TYPE_Q8_0, Context: 64}})
			if err != nil {
				t.Fatal(err)
			}
			stages := map[corelmv1.LoadStage]bool{}
			for _, r := range resps {
				stages[r.GetStage()] = true
			}
			for _, s := range []corelmv1.LoadStage{corelmv1.LoadStage_LOAD_STAGE_VALIDATING, corelmv1.LoadStage_LOAD_STAGE_PACKING,
				corelmv1.LoadStage_LOAD_STAGE_PUBLISHING, corelmv1.LoadStage_LOAD_STAGE_READY} {
				if !stages[s] {
					t.Errorf("no %v progress in %v", s, resps)
				}
			}
			m := resps[len(resps)-1].GetModel()
			if m.GetGeneration() != 1 || m.GetPath() != filepath.Join(shm, tt.id+".1.clm") || m.GetArchitecture() != "llama" {
				t.Errorf("published %v", m)
			}
			if m.GetOptions().GetKvType() != corelmv1.KVType_KV_TYPE_Q8_0 || m.GetOptions().GetContext() != 64 {
				t.Errorf("options %v", m.GetOptions())
			}
			st, err := os.Stat(m.GetPath())
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o444 {
				t.Errorf("published file mode %v, want 0444", st.Mode())
			}
			if sys := st.Sys().(*syscall.Stat_t); sys.Ino != m.GetInode() || uint64(sys.Dev) != m.GetDevice() {
				t.Errorf("announced (dev, inode) (%d, %d), file has (%d, %d)", m.GetDevice(), m.GetInode(), sys.Dev, sys.Ino)
			}
			loadertest.ComparePacked(t, m.GetPath(), filepath.Join(src, tt.path))

			// Asking again for the same unchanged file reuses the publication.
			again, err := loadertest.LoadAll(t, p.client, &corelmv1.LoadModelRequest{ModelId: tt.id, Path: tt.path,
				Options: &corelmv1.LoadOptions{KvType: corelmv1.KVType_KV_TYPE_Q8_0, Context: 64}})
			if err != nil {
				t.Fatal(err)
			}
			if len(again) != 1 || !again[0].GetReused() || again[0].GetModel().GetGeneration() != 1 {
				t.Errorf("second load: %v", again)
			}
		})
	}
	list, err := p.client.ListModels(context.Background(), &corelmv1.LoaderServiceListModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetModels()) != 2 || list.GetModels()[0].GetModelId() != "stories" || list.GetModels()[1].GetModelId() != "tiny-q" {
		t.Errorf("ListModels = %v", list)
	}
}

// TestGenerationReplacesGeneration watches a second generation replace the
// first while a reader keeps its mapping of the first, then unloads.
func TestGenerationReplacesGeneration(t *testing.T) {
	src, shm := loadertest.SourceDir(t), t.TempDir()
	p := startLoader(t, src, shm)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, err := p.client.WatchModels(ctx, &corelmv1.WatchModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	next := func() *corelmv1.WatchModelsResponse {
		t.Helper()
		ev, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	if ev := next(); ev.GetKind() != corelmv1.ModelEventKind_MODEL_EVENT_KIND_SYNCED {
		t.Fatalf("first event %v, want SYNCED on an empty loader", ev)
	}

	gen1 := loadertest.MustLoad(t, p.client, "m", "tiny.gguf", false)
	if ev := next(); ev.GetKind() != corelmv1.ModelEventKind_MODEL_EVENT_KIND_PUBLISHED || ev.GetModel().GetGeneration() != 1 {
		t.Fatalf("event %v, want PUBLISHED generation 1", ev)
	}
	reader, err := pack.Open(gen1.GetPath())
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	before := bytes.Clone(reader.TensorData(&reader.Tensors[len(reader.Tensors)-1]))

	// Replace the source with another model and reload.
	loadertest.WriteFile(t, filepath.Join(src, "tiny.gguf"), mustBytes(t, packtest.Spec{Dim: 256, FFN: 256, Layers: 1, Heads: 2, KVHeads: 2,
		Vocab: 32, Context: 64, Matrix: kernels.Q8_0, Embedding: kernels.Q8_0, Seed: 9}))
	gen2 := loadertest.MustLoad(t, p.client, "m", "tiny.gguf", false)
	if gen2.GetGeneration() != 2 || gen2.GetPath() != filepath.Join(shm, "m.2.clm") {
		t.Fatalf("second load published %v", gen2)
	}
	if ev := next(); ev.GetKind() != corelmv1.ModelEventKind_MODEL_EVENT_KIND_PUBLISHED || ev.GetModel().GetGeneration() != 2 {
		t.Fatalf("event %v, want PUBLISHED generation 2", ev)
	}
	if _, err := os.Stat(gen1.GetPath()); !os.IsNotExist(err) {
		t.Errorf("superseded generation still linked: %v", err)
	}
	// The reader detects the replacement by (dev, inode) ...
	var st syscall.Stat_t
	if err := syscall.Stat(gen2.GetPath(), &st); err != nil {
		t.Fatal(err)
	}
	if _, ino := reader.Identity(); ino == st.Ino {
		t.Error("new generation has the old inode")
	}
	// ... and its mapping of the old one stays valid.
	if err := reader.Verify(); err != nil {
		t.Fatalf("old mapping after replacement: %v", err)
	}
	if !bytes.Equal(before, reader.TensorData(&reader.Tensors[len(reader.Tensors)-1])) {
		t.Error("old mapping changed")
	}
	loadertest.ComparePacked(t, gen2.GetPath(), filepath.Join(src, "tiny.gguf"))

	// reload forces a new generation of an unchanged source.
	if gen3 := loadertest.MustLoad(t, p.client, "m", "tiny.gguf", true); gen3.GetGeneration() != 3 {
		t.Fatalf("reload published generation %d, want 3", gen3.GetGeneration())
	}
	next()

	// A new watcher learns the current state first.
	w2, err := p.client.WatchModels(ctx, &corelmv1.WatchModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := w2.Recv(); err != nil || ev.GetKind() != corelmv1.ModelEventKind_MODEL_EVENT_KIND_PUBLISHED || ev.GetModel().GetGeneration() != 3 {
		t.Fatalf("new watcher's first event %v, %v", ev, err)
	}
	if ev, err := w2.Recv(); err != nil || ev.GetKind() != corelmv1.ModelEventKind_MODEL_EVENT_KIND_SYNCED {
		t.Fatalf("new watcher's second event %v, %v", ev, err)
	}

	resp, err := p.client.UnloadModel(ctx, &corelmv1.UnloadModelRequest{ModelId: "m"})
	if err != nil || resp.GetGeneration() != 3 {
		t.Fatalf("UnloadModel = %v, %v", resp, err)
	}
	if ev := next(); ev.GetKind() != corelmv1.ModelEventKind_MODEL_EVENT_KIND_UNLOADED || ev.GetModel().GetGeneration() != 3 {
		t.Fatalf("event %v, want UNLOADED generation 3", ev)
	}
	if files := loadertest.ShmFiles(t, shm); len(files) != 0 {
		t.Errorf("files left after unload: %v", files)
	}
	_, err = p.client.UnloadModel(ctx, &corelmv1.UnloadModelRequest{ModelId: "m"})
	loadertest.WantCode(t, err, codes.NotFound, `"m"`)
}

func TestRestartCleansUpAndReannounces(t *testing.T) {
	src, shm := loadertest.SourceDir(t), t.TempDir()
	p := startLoader(t, src, shm)
	m := loadertest.MustLoad(t, p.client, "stories", "stories.gguf", false)
	// A watch stream is open across the shutdown: SIGTERM must still stop.
	if _, err := p.client.WatchModels(context.Background(), &corelmv1.WatchModelsRequest{}); err != nil {
		t.Fatal(err)
	}
	p.Stop(t)

	// Leftovers of a crashed run: a temporary file, and a stale generation.
	loadertest.WriteFile(t, filepath.Join(shm, ".tmp-stories-123"), []byte("half written"))
	loadertest.WriteFile(t, filepath.Join(shm, "junk.7.clm"), []byte("not a packed file"))

	p = startLoader(t, src, shm, "--budget", "64MiB")
	list, err := p.client.ListModels(context.Background(), &corelmv1.LoaderServiceListModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetModels()) != 1 || list.GetModels()[0].GetGeneration() != 1 || list.GetModels()[0].GetInode() != m.GetInode() ||
		list.GetModels()[0].GetSourcePath() != "stories.gguf" || !bytes.Equal(list.GetModels()[0].GetSourceSha256(), m.GetSourceSha256()) {
		t.Fatalf("after restart ListModels = %v, want %v", list.GetModels(), m)
	}
	if files := loadertest.ShmFiles(t, shm); len(files) != 1 || files[0] != "stories.1.clm" {
		t.Errorf("after restart the directory holds %v", files)
	}
	// The unchanged source is recognised after the restart ...
	again, err := loadertest.LoadAll(t, p.client, &corelmv1.LoadModelRequest{ModelId: "stories", Path: "stories.gguf"})
	if err != nil || len(again) != 1 || !again[0].GetReused() {
		t.Errorf("load after restart: %v, %v; want the published file reused", again, err)
	}
	// ... and a reload continues the generations.
	if m2 := loadertest.MustLoad(t, p.client, "stories", "stories.gguf", true); m2.GetGeneration() != 2 {
		t.Errorf("generation after restart %d, want 2", m2.GetGeneration())
	}
}

// hostileGGUF returns corrupted or invalid variants of the tiny model.
func hostileGGUF(t *testing.T) map[string][]byte {
	t.Helper()
	good := mustBytes(t, packtest.Tiny)
	out := map[string][]byte{}
	b := bytes.Clone(good)
	b[0] = 'X'
	out["bad-magic"] = b
	out["truncated"] = good[:len(good)-4096]
	out["header-only"] = good[:20]
	out["empty"] = nil
	// A tensor's offset pointing past the end of the file.
	b = bytes.Clone(good)
	name := []byte("output_norm.weight")
	at := bytes.Index(b, name) + len(name)
	// u32 rank (1), u64 dim, u32 type, u64 offset
	binary.LittleEndian.PutUint64(b[at+4+8+4:], 1<<40)
	out["bad-tensor-offset"] = b
	missing := packtest.Tiny
	missing.Edit = func(n string, t kernels.DType, s []uint64) (kernels.DType, []uint64, bool) {
		return t, s, n != "blk.1.ffn_down.weight"
	}
	out["missing-tensor"] = mustBytes(t, missing)
	shape := packtest.Tiny
	shape.Edit = func(n string, t kernels.DType, s []uint64) (kernels.DType, []uint64, bool) {
		if n == "blk.0.attn_k.weight" {
			return t, []uint64{256, 64}, true
		}
		return t, s, true
	}
	out["wrong-shape"] = mustBytes(t, shape)
	w := packtest.Tiny.Writer()
	w.AddKV("general.architecture", gguf.Str("mamba"))
	out["unknown-architecture"] = mustWriter(t, w)
	w = packtest.Tiny.Writer()
	w.AddKV("llama.block_count", gguf.Str("two"))
	out["wrong-metadata-type"] = mustWriter(t, w)
	return out
}

func TestHostileFilesRejected(t *testing.T) {
	src, shm := loadertest.SourceDir(t), t.TempDir()
	outside := t.TempDir()
	loadertest.WriteFile(t, filepath.Join(outside, "secret.gguf"), mustBytes(t, packtest.Tiny))
	for name, b := range hostileGGUF(t) {
		loadertest.WriteFile(t, filepath.Join(src, "bad", name+".gguf"), b)
	}
	must(t, os.Symlink(filepath.Join(outside, "secret.gguf"), filepath.Join(src, "escape.gguf")))
	must(t, os.Symlink(outside, filepath.Join(src, "outdir")))
	must(t, os.Symlink("tiny.gguf", filepath.Join(src, "inside-link.gguf"))) // allowed
	must(t, syscall.Mkfifo(filepath.Join(src, "fifo.gguf"), 0o644))
	must(t, os.Mkdir(filepath.Join(src, "dir.gguf"), 0o755))

	p := startLoader(t, src, shm)
	tests := []struct {
		path  string
		code  codes.Code
		words []string
	}{
		{"bad/bad-magic.gguf", codes.InvalidArgument, []string{"bad/bad-magic.gguf", "bad magic"}},
		{"bad/truncated.gguf", codes.InvalidArgument, []string{"past the end of the file"}},
		{"bad/header-only.gguf", codes.InvalidArgument, []string{"truncated"}},
		{"bad/empty.gguf", codes.InvalidArgument, []string{"empty"}},
		{"bad/bad-tensor-offset.gguf", codes.InvalidArgument, []string{"output_norm.weight", "past the end"}},
		{"bad/missing-tensor.gguf", codes.InvalidArgument, []string{"blk.1.ffn_down.weight", "missing"}},
		{"bad/wrong-shape.gguf", codes.InvalidArgument, []string{"blk.0.attn_k.weight", "shape"}},
		{"bad/unknown-architecture.gguf", codes.InvalidArgument, []string{"mamba"}},
		{"bad/wrong-metadata-type.gguf", codes.InvalidArgument, []string{"block_count"}},
		{"escape.gguf", codes.PermissionDenied, []string{"outside the source directory"}},
		{"outdir/secret.gguf", codes.PermissionDenied, []string{"outside the source directory"}},
		{"../secret.gguf", codes.PermissionDenied, []string{`".."`}},
		{"bad/../../secret.gguf", codes.PermissionDenied, []string{`".."`}},
		{"bad/../tiny.gguf", codes.PermissionDenied, []string{`".."`}},
		{filepath.Join(outside, "secret.gguf"), codes.PermissionDenied, []string{"absolute"}},
		{"fifo.gguf", codes.InvalidArgument, []string{"named pipe", "not a regular file"}},
		{"dir.gguf", codes.InvalidArgument, []string{"directory", "not a regular file"}},
		{"nope.gguf", codes.NotFound, []string{"nope.gguf"}},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.path, "/", "_"), func(t *testing.T) {
			_, err := loadertest.LoadAll(t, p.client, &corelmv1.LoadModelRequest{ModelId: "hostile", Path: tt.path})
			loadertest.WantCode(t, err, tt.code, tt.words...)
			if files := loadertest.ShmFiles(t, shm); len(files) != 0 {
				t.Fatalf("files visible after a rejected load: %v", files)
			}
		})
	}
	// Malformed requests are refused by validation.
	_, err := loadertest.LoadAll(t, p.client, &corelmv1.LoadModelRequest{ModelId: "../x", Path: "tiny.gguf"})
	loadertest.WantCode(t, err, codes.InvalidArgument, "model_id")
	// No path: loaded by id, from x.gguf, which is not there.
	_, err = loadertest.LoadAll(t, p.client, &corelmv1.LoadModelRequest{ModelId: "x"})
	loadertest.WantCode(t, err, codes.NotFound, "x.gguf")

	// The loader still serves, and symlinks inside the directory work.
	m := loadertest.MustLoad(t, p.client, "ok", "inside-link.gguf", false)
	loadertest.ComparePacked(t, m.GetPath(), filepath.Join(src, "tiny.gguf"))
}

func TestOutOfBudget(t *testing.T) {
	src, shm := loadertest.SourceDir(t), t.TempDir()
	p := startLoader(t, src, shm, "--budget", "100KiB")
	_, err := loadertest.LoadAll(t, p.client, &corelmv1.LoadModelRequest{ModelId: "stories", Path: "stories.gguf"})
	loadertest.WantCode(t, err, codes.ResourceExhausted, "budget")
	if files := loadertest.ShmFiles(t, shm); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
}

func mustBytes(t *testing.T, s packtest.Spec) []byte {
	t.Helper()
	b, err := s.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustWriter(t *testing.T, w *gguf.Writer) []byte {
	t.Helper()
	b, err := w.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestReflectionAndHealth lists the services over server reflection (what
// grpcurl uses) and checks the health service.
func TestReflectionAndHealth(t *testing.T) {
	p := startLoader(t, loadertest.SourceDir(t), t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(p.Conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	services := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		services[s.GetName()] = true
	}
	for _, want := range []string{"corelm.v1.LoaderService", "grpc.health.v1.Health"} {
		if !services[want] {
			t.Errorf("reflection lists %v, missing %s", services, want)
		}
	}
	h, err := healthpb.NewHealthClient(p.Conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, %v", h, err)
	}
}
