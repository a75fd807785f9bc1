// Package servicetest runs corelm's servers for tests: as processes (the
// service binaries, `corelm serve-all`) or in the test process, waits for
// their health, reads streams to the end, and gives the reference output
// the served model must reproduce.
package servicetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
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
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// stopWait is how long a process gets to exit after SIGTERM.
const stopWait = 20 * time.Second

var bins struct {
	sync.Mutex
	dir   string
	built map[string]string // by absolute package directory
}

// Binary builds the main package in directory pkg (relative to the test's
// directory, as `go build` takes it) once per test binary and returns the
// executable. A package that calls it runs its tests through Main.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	abs, err := filepath.Abs(pkg)
	if err != nil {
		t.Fatal(err)
	}
	bins.Lock()
	defer bins.Unlock()
	if path, ok := bins.built[abs]; ok {
		return path
	}
	if bins.dir == "" {
		if bins.dir, err = os.MkdirTemp("", "corelm-test-bin-"); err != nil {
			t.Fatal(err)
		}
		bins.built = map[string]string{}
	}
	path := filepath.Join(bins.dir, filepath.Base(abs))
	if out, err := exec.Command("go", "build", "-o", path, abs).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	bins.built[abs] = path
	return path
}

// Main runs the tests, removes what Binary built and exits.
func Main(m *testing.M) {
	// GGUF files the tests serve are packed into a cache of the run's own
	// (runtime.PackCacheEnv), not the machine's.
	packed, err := os.MkdirTemp("", "corelm-packed-")
	if err == nil {
		os.Setenv("CORELM_PACK_CACHE", packed)
	}
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	if packed != "" {
		os.RemoveAll(packed)
	}
	os.Exit(code)
}

// RunOnce runs a service binary's run function as its main would, with
// args and env as the command line and environment, on a context that has
// already ended: the server starts and stops at once. It returns run's
// error.
func RunOnce(run func(ctx context.Context, args []string, getenv func(string) string) error, args []string, env map[string]string) error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return run(ctx, args, func(k string) string { return env[k] })
}

// CheckRun runs run through RunOnce and fails the test unless its error
// contains wantErr ("": unless it returns nil).
func CheckRun(t testing.TB, run func(ctx context.Context, args []string, getenv func(string) string) error, args []string, env map[string]string, wantErr string) {
	t.Helper()
	err := RunOnce(run, args, env)
	if wantErr == "" && err != nil || wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)) {
		t.Errorf("run: %v, want an error with %q", err, wantErr)
	}
}

// Proc is a server process started by Start.
type Proc struct {
	// Addr is the address it serves on; Conn is a client connection to
	// it, closed at the test's end.
	Addr string
	Conn *grpc.ClientConn

	cmd    *exec.Cmd
	name   string
	mu     sync.Mutex
	logs   bytes.Buffer
	exited chan struct{} // closed when the process has exited
}

// Logs is what the process wrote to its standard error so far.
func (p *Proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// ServingAddr finds the address in a service's "serving" log record (the
// JSON lines the loader and the inference binaries write).
func ServingAddr(line string) (addr string, ok bool) {
	var rec struct{ Msg, Addr string }
	if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "serving" || rec.Addr == "" {
		return "", false
	}
	return rec.Addr, true
}

// Start runs cmd and reads its standard error until a line gives ready
// the address the process serves on, then connects to it. The process gets
// SIGTERM when the test ends (failing the test if it then does not exit),
// and its log is shown when the test has failed.
func Start(t testing.TB, cmd *exec.Cmd, ready func(line string) (addr string, ok bool)) *Proc {
	t.Helper()
	p := &Proc{cmd: cmd, name: filepath.Base(cmd.Path), exited: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			if !found {
				if a, ok := ready(line); ok {
					found = true
					addr <- a
				}
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(stopWait):
			cmd.Process.Kill()
			<-p.exited
			t.Errorf("%s did not stop on SIGTERM", p.name)
		}
		if t.Failed() {
			t.Logf("%s logs:\n%s", p.name, p.Logs())
		}
	})
	select {
	case p.Addr = <-addr:
	case <-p.exited:
		t.Fatalf("%s exited at start:\n%s", p.name, p.Logs())
	case <-time.After(time.Minute):
		t.Fatalf("%s did not start:\n%s", p.name, p.Logs())
	}
	if p.Conn, err = grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Conn.Close() })
	return p
}

// Stop sends SIGTERM and fails the test unless the process exits with
// status 0 in time.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopWait):
		t.Fatalf("%s did not stop on SIGTERM", p.name)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("%s exited with status %d", p.name, code)
	}
}

// Kill sends SIGKILL, as a crash would, and waits for the process to be
// gone: nothing of its shutdown path runs.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(stopWait):
		t.Fatalf("%s did not die on SIGKILL", p.name)
	}
}

// Signal sends sig and returns at once; Exited tells when the process has
// gone and ExitCode how.
func (p *Proc) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Exited is closed once the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// ExitCode is the process's exit status once Exited is closed (-1 when a
// signal ended it).
func (p *Proc) ExitCode() int { return p.cmd.ProcessState.ExitCode() }

// Serve runs serve in the test process on a loopback listener until stop
// is called or the test ends, and returns a connection to it once its
// health says SERVING. stop ends serve's context, waits for it and fails
// the test if it returned an error.
func Serve(t testing.TB, serve func(ctx context.Context, lis net.Listener) error) (conn *grpc.ClientConn, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	var serveErr error
	go func() {
		serveErr = serve(ctx, lis)
		close(served)
	}()
	if conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-served
			conn.Close()
			if serveErr != nil {
				t.Errorf("serve: %v", serveErr)
			}
		})
	}
	t.Cleanup(stop)

	waitCtx, waitCancel := context.WithTimeout(context.Background(), time.Minute)
	defer waitCancel()
	go func() { // a server that fails at start stops the wait
		select {
		case <-served:
			waitCancel()
		case <-waitCtx.Done():
		}
	}()
	if err := waitStatus(waitCtx, conn, "", healthpb.HealthCheckResponse_SERVING); err != nil {
		select {
		case <-served:
			t.Fatalf("serve: %v", serveErr)
		default:
			t.Fatalf("not serving: %v", err)
		}
	}
	return conn, stop
}

// ServeAt runs serve in the test process on a loopback listener until the
// test ends and returns its address at once. Unlike Serve it neither dials
// nor waits for health: for servers that take TLS, or that are not meant
// to become ready. The test fails if serve returns an error.
func ServeAt(t testing.TB, serve func(ctx context.Context, lis net.Listener) error) (addr string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// ServeGRPC runs a bare gRPC server on a loopback port with the services
// register registers (fakes, a health server), until the test ends, and
// returns its address. Unlike Serve it waits for no health.
func ServeGRPC(t testing.TB, register func(*grpc.Server)) (addr string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	register(gs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// WaitServing blocks until the health of service ("" for the whole
// server) on conn says SERVING; the server need not listen yet.
func WaitServing(t testing.TB, conn *grpc.ClientConn, service string) {
	t.Helper()
	WaitStatus(t, conn, service, healthpb.HealthCheckResponse_SERVING, time.Minute)
}

// WaitStatus watches the health of service on conn until it reports want,
// failing the test when it has not within that time.
func WaitStatus(t testing.TB, conn *grpc.ClientConn, service string, want healthpb.HealthCheckResponse_ServingStatus, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := waitStatus(ctx, conn, service, want); err != nil {
		t.Fatalf("health of %q at %s not %v within %v: %v", service, conn.Target(), want, within, err)
	}
}

func waitStatus(ctx context.Context, conn *grpc.ClientConn, service string, want healthpb.HealthCheckResponse_ServingStatus) error {
	stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: service}, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if resp.GetStatus() == want {
			return nil
		}
	}
}

// WaitIdle polls an inference server's GetStatus until no sequence is
// active or queued and no KV memory is in use, failing the test when that
// has not happened within that time.
func WaitIdle(t testing.TB, c corelmv1.InferenceServiceClient, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s, err := c.GetStatus(t.Context(), &corelmv1.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if s.GetActiveSequences() == 0 && s.GetQueuedRequests() == 0 && s.GetKvBytesInUse() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server still busy after %v: %v", within, s)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// RecvAll receives from a stream until it ends, handing each message to
// each: nil when the stream ended well (io.EOF), else the error.
func RecvAll[T any](recv func() (T, error), each func(T)) error {
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		each(m)
	}
}

// Greedy is what runtime.Generate makes of text on the embedded stories
// model with greedy sampling: the prompt's ids, up to maxTokens generated
// ids and their text. Served greedy generations must equal it.
func Greedy(t testing.TB, text string, maxTokens int) (prompt, ids []int32, out string) {
	t.Helper()
	pool := kernels.NewPool(1)
	defer pool.Close()
	l, err := runtime.ParseGGUF(models.Stories, model.Env{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.New(l.Source)
	if err != nil {
		t.Fatal(err)
	}
	if prompt, err = tok.Encode(text, tokenizer.EncodeOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = runtime.Generate(context.Background(), l.Model, runtime.GenerateRequest{Prompt: prompt, MaxTokens: maxTokens, IsEOG: tok.IsEOG},
		func(id int32) error { ids = append(ids, id); return nil })
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	d := tok.NewDecoder()
	for _, id := range ids {
		s, _ := d.Push(id)
		b.WriteString(s)
	}
	b.WriteString(d.Flush())
	return prompt, ids, b.String()
}
