package main

import (
	"os/exec"
	"testing"

	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

// proc is a running loader binary.
type proc struct {
	*servicetest.Proc
	client corelmv1.LoaderServiceClient
}

// startLoader starts the real loader, built once per test run, on a
// loopback port the kernel picks and returns it once it serves.
func startLoader(t *testing.T, srcDir, shmDir string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"--listen", "127.0.0.1:0", "--source-dir", srcDir, "--shm-dir", shmDir, "--log-level", "debug"}, extra...)
	p := servicetest.Start(t, exec.Command(servicetest.Binary(t, "."), args...), servicetest.ServingAddr)
	return &proc{Proc: p, client: corelmv1.NewLoaderServiceClient(p.Conn)}
}
