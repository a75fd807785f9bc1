package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/corelm/corelm/internal/tlsconfig"
)

// runHealth is a gRPC health check for container health checks and
// scripts: `corelm health ADDR [--service NAME] [--timeout 5s]` prints the
// status and exits 0 when it is SERVING, 1 otherwise (NOT_SERVING, an
// unknown service, no answer in time). Distroless images have no shell and
// no grpc-health-probe: the image's own corelm binary is the probe.
func runHealth(ctx context.Context, args []string) error {
	fs := newFlags("health")
	service := fs.String("service", "", `the service to ask about ("": the whole server), e.g. corelm.v1.InferenceService`)
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer, connecting included")
	var tf tlsconfig.Client
	fs.BoolVar(&tf.Enable, "tls", false, "connect over TLS, verifying the server with the system's roots (or --tls-ca)")
	fs.StringVar(&tf.CA, "tls-ca", "", "connect over TLS, verifying the server with these PEM CA certificates")
	fs.StringVar(&tf.Cert, "tls-cert", "", "present this PEM client certificate (a server with --tls-client-ca asks for one)")
	fs.StringVar(&tf.Key, "tls-key", "", "the PEM private key of --tls-cert")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("usage: corelm health ADDR [--service NAME] [--timeout 5s]")
	}
	addr := fs.Arg(0)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	tc, err := tf.Config()
	if err != nil {
		return usagef("%v", err)
	}
	cc, err := dial(addr, "", tc) // health needs no token
	if err != nil {
		return err
	}
	defer cc.Close()
	// WaitForReady: a server still starting (connection refused) is retried
	// until the timeout rather than failing at the first attempt.
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: *service}, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	fmt.Println(resp.GetStatus())
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%s: %s", addr, resp.GetStatus())
	}
	return nil
}
