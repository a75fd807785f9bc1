package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/loader/internal/loadertest"
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
	loadertest.WaitServing(t, p.conn)
	return p
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
