package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/models"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// startListening runs the inference binary and returns it once it listens,
// ready or not (its "listening" log line; "serving" comes when ready).
func startListening(t *testing.T, args ...string) *servicetest.Proc {
	t.Helper()
	cmd := exec.Command(servicetest.Binary(t, "."), append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "CORELM_THREADS=1")
	return servicetest.Start(t, cmd, func(line string) (string, bool) {
		var rec struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "listening" {
			return "", false
		}
		return rec.Addr, true
	})
}

func healthOf(t *testing.T, p *servicetest.Proc, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	r, err := healthpb.NewHealthClient(p.Conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health of %q: %v", service, err)
	}
	return r.GetStatus()
}

// TestE2EReadiness: while a required model is not published (its file
// does not exist yet), the inference service listens but is not ready:
// health NOT_SERVING, generations on it Unavailable with a retry hint, the
// model LOADING in GetModel and ListModels. Once the file appears the
// loader (watching it) publishes it and the service turns SERVING.
func TestE2EReadiness(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stories.gguf")
	ld := start(t, "loader", "--shm-dir", filepath.Join(dir, "shm"), "--model", "stories="+path, "--watch-interval", "20ms")
	inf := startListening(t, "--loader", ld.Addr, "--require-models", "stories")
	c := corelmv1.NewInferenceServiceClient(inf.Conn)

	for _, svc := range []string{"", "corelm.v1.InferenceService"} {
		if st := healthOf(t, inf, svc); st != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health of %q while loading: %v", svc, st)
		}
	}
	_, err := generateStream(t.Context(), c, greedy("Once", 4))
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "loaded") {
		t.Errorf("generation while loading: %v, want Unavailable saying it is being loaded", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry.GetRetryDelay().AsDuration() <= 0 {
		t.Errorf("no RetryInfo in %v", st.Details())
	}
	m, err := c.GetModel(t.Context(), &corelmv1.GetModelRequest{ModelId: "stories"})
	if err != nil || m.GetModel().GetState() != corelmv1.ModelState_MODEL_STATE_LOADING {
		t.Errorf("GetModel while loading: %v %v", m, err)
	}
	list, err := c.ListModels(t.Context(), &corelmv1.ListModelsRequest{})
	if err != nil || len(list.GetModels()) != 1 || list.GetModels()[0].GetState() != corelmv1.ModelState_MODEL_STATE_LOADING {
		t.Errorf("ListModels while loading: %v %v", list, err)
	}
	if _, err := generateStream(t.Context(), c, &corelmv1.GenerateStart{ModelId: "other", Prompt: &corelmv1.GenerateStart_Text{Text: "x"}}); status.Code(err) != codes.NotFound {
		t.Errorf("a model nobody named: %v, want NotFound", err)
	}

	if err := os.WriteFile(path, models.Stories, 0o644); err != nil {
		t.Fatal(err)
	}
	servicetest.WaitServing(t, inf.Conn, "")
	if st := healthOf(t, inf, "corelm.v1.InferenceService"); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("service health once ready: %v", st)
	}
	if r, err := generateStream(t.Context(), c, greedy("Once", 4)); err != nil || len(r.ids) != 4 {
		t.Errorf("generation once ready: %v %v", r, err)
	}
	m, err = c.GetModel(t.Context(), &corelmv1.GetModelRequest{ModelId: "stories"})
	if err != nil || m.GetModel().GetState() != corelmv1.ModelState_MODEL_STATE_READY || m.GetModel().GetGeneration() == 0 {
		t.Errorf("GetModel once ready: %v %v", m, err)
	}
	if !strings.Contains(inf.Logs(), `"msg":"serving"`) {
		t.Error(`no "serving" log line once ready`)
	}

	// Unloaded: not ready (the readiness probe's service), but alive (the
	// whole server, the liveness probe's); published again: ready.
	lc := corelmv1.NewLoaderServiceClient(ld.Conn)
	if _, err := lc.UnloadModel(t.Context(), &corelmv1.UnloadModelRequest{ModelId: "stories"}); err != nil {
		t.Fatal(err)
	}
	servicetest.WaitStatus(t, inf.Conn, "corelm.v1.InferenceService", healthpb.HealthCheckResponse_NOT_SERVING, time.Minute)
	if st := healthOf(t, inf, ""); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("whole-server health after the unload: %v, want SERVING (alive)", st)
	}
	if _, err := lc.LoadModel(t.Context(), &corelmv1.LoadModelRequest{ModelId: "stories", Path: path}); err != nil {
		t.Fatal(err)
	}
	servicetest.WaitStatus(t, inf.Conn, "corelm.v1.InferenceService", healthpb.HealthCheckResponse_SERVING, time.Minute)
}

// TestE2ENotReadyWithoutModels: with no required models, an inference
// service is ready once any model is mapped, not before.
func TestE2ENotReadyWithoutModels(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "stories260K.gguf"), models.Stories, 0o644); err != nil {
		t.Fatal(err)
	}
	ld := start(t, "loader", "--source-dir", src, "--shm-dir", t.TempDir())
	inf := startListening(t, "--loader", ld.Addr)
	// Nothing is published, so nothing can make it ready: whether or not
	// the loader's first (empty) snapshot has arrived, health says so.
	if st := healthOf(t, inf, ""); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health with nothing published: %v", st)
	}
	loadStories(t, corelmv1.NewLoaderServiceClient(ld.Conn), false)
	servicetest.WaitServing(t, inf.Conn, "")
}
