package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/internal/tlsconfig"
	"github.com/corelm/corelm/internal/tlsconfig/tlstest"
	inference "github.com/corelm/corelm/services/inference/server"
)

// TestTLS: the gateway serves HTTPS and reaches an inference service that
// requires client certificates (mTLS); plain HTTP is refused.
func TestTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "corelm")
	infPair, gwPair, gwClient := ca.Server("inference"), ca.Server("gateway"), ca.Client("gateway-client")
	infTLS, err := tlsconfig.Server{Cert: infPair.CertFile, Key: infPair.KeyFile, ClientCA: ca.CertFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	addr := servicetest.ServeAt(t, func(ctx context.Context, lis net.Listener) error {
		return inference.Serve(ctx, lis, inference.Config{Options: inference.Options{Threads: 1}, TLS: infTLS,
			ModelFile: inference.EmbeddedModel, ModelID: "stories", Grace: 5 * time.Second})
	})

	cmd := exec.Command(servicetest.Binary(t, "."), "--listen", "127.0.0.1:0", "--inference", addr,
		"--tls-cert", gwPair.CertFile, "--tls-key", gwPair.KeyFile,
		"--inference-tls-ca", ca.CertFile, "--inference-client-cert", gwClient.CertFile, "--inference-client-key", gwClient.KeyFile)
	p := servicetest.Start(t, cmd, servicetest.ServingAddr)

	pem, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
	// /readyz asks inference's health over the mTLS link.
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := client.Get("https://" + p.Addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			if resp.ProtoMajor != 2 {
				t.Errorf("HTTPS answered over %s, want HTTP/2", resp.Proto)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz over HTTPS: %s", resp.Status)
		}
		time.Sleep(50 * time.Millisecond) // polling a readiness endpoint, as a probe does
	}
	resp, err := client.Get("https://" + p.Addr + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/v1/models over HTTPS and mTLS: %s", resp.Status)
	}
	if resp, err := http.Get("http://" + p.Addr + "/v1/models"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP answered %s", resp.Status)
		}
	}
}
