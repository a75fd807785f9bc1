package main

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/corelm/corelm/internal/tlsconfig/tlstest"
)

// TestServeAllTLS: serve-all with --tls-cert and --tls-client-ca serves
// TLS on its gRPC and HTTP listeners and requires client certificates on
// both; its gateway reaches its inference service over mTLS; the CLI's
// --server calls work with --tls-ca/--tls-cert/--tls-key and fail without
// the client certificate or over plaintext.
func TestServeAllTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "corelm")
	srv, client := ca.Both("serve-all"), ca.Client("operator")
	p, _ := startServeAll(t, "", "--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--tls-client-ca", ca.CertFile, "--auth-token", "tok")
	withTLS := []string{"--server", p.Addr, "--auth-token", "tok", "--tls-ca", ca.CertFile, "--tls-cert", client.CertFile, "--tls-key", client.KeyFile}

	if out, errb, code := corelm(t, "health", p.Addr, "--tls-ca", ca.CertFile, "--tls-cert", client.CertFile, "--tls-key", client.KeyFile); code != 0 || out != "SERVING\n" {
		t.Errorf("corelm health over mTLS: exit %d, %q %q", code, out, errb)
	}
	if _, _, code := corelm(t, "health", p.Addr, "--timeout", "1s"); code == 0 {
		t.Error("corelm health over plaintext: exit 0")
	}
	out, errb, code := corelm(t, append([]string{"generate", "--prompt", "Once upon a time", "--temperature", "0", "--max-tokens", "8"}, withTLS...)...)
	if code != 0 || strings.TrimSpace(out) == "" {
		t.Errorf("generate over mTLS: exit %d, %q %q", code, out, errb)
	}
	if _, errb, code := corelm(t, "models", "--server", p.Addr, "--auth-token", "tok", "--tls-ca", ca.CertFile); code == 0 {
		t.Errorf("models without a client certificate: exit 0 (%q)", errb)
	}
	if _, errb, code := corelm(t, "models", "--server", p.Addr, "--auth-token", "tok"); code == 0 {
		t.Errorf("models over plaintext: exit 0 (%q)", errb)
	}

	// The gateway: HTTPS with a client certificate, and its own mTLS call
	// to the inference service behind /v1/models.
	m := regexp.MustCompile(`OpenAI API on https://(\S+)/v1`).FindStringSubmatch(p.Logs())
	if m == nil {
		t.Fatalf("no https gateway in the banner:\n%s", p.Logs())
	}
	pem, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	pair, err := tls.LoadX509KeyPair(client.CertFile, client.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}}}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", "https://"+m[1]+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/v1/models over HTTPS: %s", resp.Status)
	}
}
