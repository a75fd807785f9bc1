package grpcserver

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/tlsconfig"
	"github.com/corelm/corelm/internal/tlsconfig/tlstest"
)

// serveTLS serves health with the TLS of files on loopback and returns
// the address.
func serveTLS(t *testing.T, files tlsconfig.Server) string {
	t.Helper()
	tc, err := files.Config()
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{TLS: tc})
	s.SetServing()
	return listen(t, s)
}

// check is a health check of addr over a new connection with dial's
// transport: nil when it is answered.
func check(t *testing.T, addr string, dial grpc.DialOption) error {
	t.Helper()
	cc, err := grpc.NewClient(addr, dial)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{})
	return err
}

func clientTLS(t *testing.T, c tlsconfig.Client) grpc.DialOption {
	t.Helper()
	tc, err := c.Config()
	if err != nil {
		t.Fatal(err)
	}
	return tlsconfig.DialOption(tc)
}

// TestTLS: a TLS server answers TLS clients that trust its CA and
// refuses plaintext and clients that do not trust it.
func TestTLS(t *testing.T) {
	ca, other := tlstest.NewCA(t, "test"), tlstest.NewCA(t, "other")
	srv := ca.Server("server")
	addr := serveTLS(t, tlsconfig.Server{Cert: srv.CertFile, Key: srv.KeyFile})

	if err := check(t, addr, clientTLS(t, tlsconfig.Client{CA: ca.CertFile})); err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	if err := check(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials())); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client: %v, want Unavailable", err)
	}
	if err := check(t, addr, clientTLS(t, tlsconfig.Client{CA: other.CertFile})); status.Code(err) != codes.Unavailable {
		t.Errorf("client trusting another CA: %v, want Unavailable", err)
	}
}

// TestMutualTLS: with a client CA the server answers only clients with a
// certificate that CA signed.
func TestMutualTLS(t *testing.T) {
	ca, other := tlstest.NewCA(t, "test"), tlstest.NewCA(t, "other")
	srv := ca.Server("server")
	addr := serveTLS(t, tlsconfig.Server{Cert: srv.CertFile, Key: srv.KeyFile, ClientCA: ca.CertFile})

	good, bad := ca.Client("client"), other.Client("stranger")
	tests := []struct {
		name   string
		client tlsconfig.Client
		ok     bool
	}{
		{"client certificate from the CA", tlsconfig.Client{CA: ca.CertFile, Cert: good.CertFile, Key: good.KeyFile}, true},
		{"no client certificate", tlsconfig.Client{CA: ca.CertFile}, false},
		{"client certificate from another CA", tlsconfig.Client{CA: ca.CertFile, Cert: bad.CertFile, Key: bad.KeyFile}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := check(t, addr, clientTLS(t, tt.client))
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok && status.Code(err) != codes.Unavailable {
				t.Fatalf("got %v, want refused (Unavailable)", err)
			}
		})
	}
	if err := check(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials())); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client: %v, want Unavailable", err)
	}
}
