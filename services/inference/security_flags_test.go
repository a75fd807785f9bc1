package main

import (
	"testing"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/internal/tlsconfig/tlstest"
)

// TestSecurityFlags: the TLS files, the loader link's TLS and token and
// the limits reach the service from flags and CORELM_ variables; bad ones
// are errors naming the flag.
func TestSecurityFlags(t *testing.T) {
	ca := tlstest.NewCA(t, "test")
	p, c := ca.Server("inference"), ca.Client("inference-client")
	base := []string{"--listen", "127.0.0.1:0", "--model-file", "stories", "--threads", "1"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"TLS from the environment", base, map[string]string{"CORELM_TLS_CERT": p.CertFile, "CORELM_TLS_KEY": p.KeyFile,
			"CORELM_TLS_CLIENT_CA": ca.CertFile, "CORELM_AUTH_TOKEN": "t"}, ""},
		{"loader link", append(base, "--loader-tls-ca", ca.CertFile, "--loader-client-cert", c.CertFile, "--loader-client-key", c.KeyFile),
			map[string]string{"CORELM_LOADER_AUTH_TOKEN": "t"}, ""},
		{"loader client cert without key", append(base, "--loader-client-cert", c.CertFile), nil, "--loader-client-key"},
		{"loader CA missing", base, map[string]string{"CORELM_LOADER_TLS_CA": "/nonexistent.pem"}, "--loader-tls-ca"},
		{"limits", append(base, "--max-recv-msg-size", "8MiB", "--max-prompt-bytes", "4194304", "--max-stream-generations", "4",
			"--max-concurrent-streams", "10"), nil, ""},
		{"prompt limit above the message limit", append(base, "--max-prompt-bytes", "8388608"), nil, "--max-recv-msg-size"},
		{"server key missing", append(base, "--tls-cert", p.CertFile), nil, "--tls-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { servicetest.CheckRun(t, run, tt.args, tt.env, tt.wantErr) })
	}
}
