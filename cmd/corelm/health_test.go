package main

import (
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/corelm/corelm/internal/servicetest"
)

// TestHealth runs `corelm health` against a health server on loopback: exit
// 0 only when the service asked about is SERVING.
func TestHealth(t *testing.T) {
	hs := health.NewServer() // "" is SERVING
	hs.SetServingStatus("corelm.v1.InferenceService", healthpb.HealthCheckResponse_NOT_SERVING)
	addr := servicetest.ServeGRPC(t, func(gs *grpc.Server) { healthpb.RegisterHealthServer(gs, hs) })
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close() // nothing listens there now

	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string
		stderrIn string
	}{
		{"serving", []string{addr}, 0, "SERVING\n", ""},
		{"not serving", []string{addr, "--service", "corelm.v1.InferenceService"}, 1, "NOT_SERVING\n", "NOT_SERVING"},
		{"unknown service", []string{addr, "--service", "nope"}, 1, "", "NotFound"},
		{"nobody listening", []string{closed.Addr().String(), "--timeout", "300ms"}, 1, "", "DeadlineExceeded"},
		{"no address", nil, 2, "", "usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := corelm(t, append([]string{"health"}, tt.args...)...)
			if code != tt.code || stdout != tt.stdout || !strings.Contains(stderr, tt.stderrIn) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, stderr with %q", code, stdout, stderr, tt.code, tt.stdout, tt.stderrIn)
			}
		})
	}
}

// TestVersion: --version prints the build and exits 0, before anything
// else runs (a bad CORELM_KERNELS does not stop it).
func TestVersion(t *testing.T) {
	t.Setenv("CORELM_KERNELS", "nope")
	stdout, stderr, code := corelm(t, "--version")
	if code != 0 || !strings.HasPrefix(stdout, "corelm ") || !strings.Contains(stdout, " go1.") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
