package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/formats/pack/packtest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

var binOnce struct {
	sync.Once
	path string
	err  error
	out  []byte
}

var binDir string

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "loader-bin-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// loaderBinary builds the real loader once per test run.
func loaderBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binOnce.path = filepath.Join(binDir, "loader")
		cmd := exec.Command("go", "build", "-o", binOnce.path, ".")
		binOnce.out, binOnce.err = cmd.CombinedOutput()
	})
	if binOnce.err != nil {
		t.Fatalf("go build: %v\n%s", binOnce.err, binOnce.out)
	}
	return binOnce.path
}

// proc is a running loader binary.
type proc struct {
	cmd    *exec.Cmd
	addr   string
	conn   *grpc.ClientConn
	client corelmv1.LoaderServiceClient
	mu     sync.Mutex
	logs   bytes.Buffer
	exited chan struct{}
}

func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// startLoader starts the binary on a loopback port the kernel picks, waits
// until its health check says SERVING and returns a client.
func startLoader(t *testing.T, srcDir, shmDir string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"--listen", "127.0.0.1:0", "--source-dir", srcDir, "--shm-dir", shmDir, "--log-level", "debug"}, extra...)
	p := &proc{cmd: exec.Command(loaderBinary(t), args...), exited: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			p.mu.Lock()
			p.logs.Write(line)
			p.logs.WriteByte('\n')
			p.mu.Unlock()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "serving" {
				addr <- rec.Addr
			}
		}
		io.Copy(io.Discard, stderr)
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("loader logs:\n%s", p.Logs())
		}
	})
	select {
	case p.addr = <-addr:
	case <-p.exited:
		t.Fatalf("loader exited at start:\n%s", p.Logs())
	case <-time.After(60 * time.Second):
		t.Fatalf("loader did not start:\n%s", p.Logs())
	}
	p.conn, err = grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.conn.Close() })
	p.client = corelmv1.NewLoaderServiceClient(p.conn)
	waitServing(t, p.conn)
	return p
}

func waitServing(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: corelmv1.LoaderService_ServiceDesc.ServiceName})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("health watch: %v", err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("loader did not stop on SIGTERM:\n%s", p.Logs())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("loader exited with %d:\n%s", code, p.Logs())
	}
}

// load runs LoadModel to the end and returns every response.
func loadAll(t *testing.T, c corelmv1.LoaderServiceClient, req *corelmv1.LoadModelRequest) ([]*corelmv1.LoadModelResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := c.LoadModel(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []*corelmv1.LoadModelResponse
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, resp)
	}
}

// mustLoad loads and returns the published model.
func mustLoad(t *testing.T, c corelmv1.LoaderServiceClient, id, path string, reload bool) *corelmv1.PublishedModel {
	t.Helper()
	resps, err := loadAll(t, c, &corelmv1.LoadModelRequest{ModelId: id, Path: path, Reload: reload})
	if err != nil {
		t.Fatalf("LoadModel(%s, %s): %v", id, path, err)
	}
	last := resps[len(resps)-1]
	if last.GetStage() != corelmv1.LoadStage_LOAD_STAGE_READY || last.GetModel() == nil {
		t.Fatalf("LoadModel(%s) ended with %v", id, last)
	}
	return last.GetModel()
}

// wantCode checks err's gRPC code and that its message mentions each of
// words.
func wantCode(t *testing.T, err error, code codes.Code, words ...string) {
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

// sourceDir returns a source directory holding the stories model and the
// synthetic quantized model.
func sourceDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "stories.gguf"), models.Stories260K)
	tiny, err := packtest.Tiny.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "tiny.gguf"), tiny)
	return dir
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// comparePacked checks that the published file holds exactly the source's
// metadata and tensors.
func comparePacked(t *testing.T, packedPath, srcPath string) {
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
		got, ok := pf.LookupTensor(st.Name)
		if !ok || got.Type != st.Type || !bytes.Equal(got.Data, src.TensorData(st)) {
			t.Errorf("tensor %s differs", st.Name)
		}
	}
}

// shmFiles lists the shared-memory directory without the loader's lock.
func shmFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != lockName {
			names = append(names, e.Name())
		}
	}
	return names
}

// inProcess runs the loader server in the test process (for the seams) on
// a loopback listener.
func inProcess(t *testing.T, opts Options) corelmv1.LoaderServiceClient {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, lis, opts, 5*time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	waitServing(t, conn)
	return corelmv1.NewLoaderServiceClient(conn)
}
