package tlsconfig

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/corelm/corelm/internal/tlsconfig/tlstest"
)

// TestConfigErrors: half-given or unreadable files are errors naming the
// flags; nothing given is plaintext (nil).
func TestConfigErrors(t *testing.T) {
	ca := tlstest.NewCA(t, "test")
	p := ca.Server("server")
	if c, err := (Server{}).Config(); c != nil || err != nil {
		t.Errorf("no files: %v, %v; want plaintext", c, err)
	}
	if c, err := (Client{}).Config(); c != nil || err != nil {
		t.Errorf("no client files: %v, %v; want plaintext", c, err)
	}
	tests := []struct {
		name string
		cfg  func() (*tls.Config, error)
		want string
	}{
		{"cert without key", Server{Cert: p.CertFile}.Config, "--tls-cert and --tls-key"},
		{"client CA alone", Server{ClientCA: ca.CertFile}.Config, "--tls-client-ca needs"},
		{"client CA not PEM", Server{Cert: p.CertFile, Key: p.KeyFile, ClientCA: p.KeyFile}.Config, "--tls-client-ca"},
		{"key is not the cert's", Server{Cert: p.CertFile, Key: ca.CertFile}.Config, "--tls-cert/--tls-key"},
		{"client cert without key", Client{CA: ca.CertFile, Cert: p.CertFile}.Config, "--tls-cert and --tls-key"},
		{"client CA missing", Client{CA: "/nonexistent.pem"}.Config, "--tls-ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cfg()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	c, err := Server{Cert: p.CertFile, Key: p.KeyFile, ClientCA: ca.CertFile}.Config()
	if err != nil || c.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("with a client CA: %v, %v; want client certificates required", c, err)
	}
}
