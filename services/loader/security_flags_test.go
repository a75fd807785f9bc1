package main

import (
	"testing"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/internal/tlsconfig/tlstest"
)

// TestSecurityFlags: --auth-token, the TLS files and the limits reach the
// loader from flags and CORELM_LOADER_ variables; half-given or bad TLS
// files are errors naming the flag.
func TestSecurityFlags(t *testing.T) {
	src, shm := t.TempDir(), t.TempDir()
	ca := tlstest.NewCA(t, "test")
	p := ca.Server("loader")
	base := []string{"--listen", "127.0.0.1:0", "--source-dir", src, "--shm-dir", shm}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"mTLS and token from the environment", base, map[string]string{"CORELM_LOADER_AUTH_TOKEN": "t", "CORELM_LOADER_TLS_CERT": p.CertFile,
			"CORELM_LOADER_TLS_KEY": p.KeyFile, "CORELM_LOADER_TLS_CLIENT_CA": ca.CertFile}, ""},
		{"limits", append(base, "--max-recv-msg-size", "1MiB", "--max-concurrent-streams", "10", "--keepalive-min-time", "30s",
			"--max-connection-idle", "1m", "--keepalive-time", "1m", "--keepalive-timeout", "5s"), nil, ""},
		{"bad limit variable", base, map[string]string{"CORELM_LOADER_MAX_RECV_MSG_SIZE": "big"}, "CORELM_LOADER_MAX_RECV_MSG_SIZE"},
		{"cert without key", append(base, "--tls-cert", p.CertFile), nil, "--tls-key"},
		{"client CA without cert", append(base, "--tls-client-ca", ca.CertFile), nil, "--tls-client-ca"},
		{"key that is not the cert's", append(base, "--tls-cert", p.CertFile, "--tls-key", ca.CertFile), nil, "--tls-cert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { servicetest.CheckRun(t, run, tt.args, tt.env, tt.wantErr) })
	}
}
