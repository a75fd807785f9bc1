package main

import (
	"path/filepath"
	"testing"

	"github.com/corelm/corelm/internal/servicetest"
)

// TestRun: the command line and the environment reach the server; what is
// missing or malformed is an error naming the flag or variable.
func TestRun(t *testing.T) {
	src, shm := t.TempDir(), t.TempDir()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string // "" for none
	}{
		{"environment", nil, map[string]string{"CORELM_LOADER_LISTEN": "127.0.0.1:0", "CORELM_LOADER_SOURCE_DIR": src, "CORELM_LOADER_SHM_DIR": shm}, ""},
		{"command line", []string{"--listen", "127.0.0.1:0", "--source-dir", src, "--shm-dir", shm, "--budget", "1MiB"}, nil, ""},
		{"no source", []string{"--listen", "127.0.0.1:0"}, nil, "CORELM_LOADER_SOURCE_DIR"},
		{"models named, no source", []string{"--listen", "127.0.0.1:0", "--shm-dir", shm, "--model", "m=" + filepath.Join(src, "m.gguf")}, nil, ""},
		{"models in the environment", nil, map[string]string{"CORELM_LOADER_LISTEN": "127.0.0.1:0", "CORELM_LOADER_SHM_DIR": shm,
			"CORELM_LOADER_MODEL": "a=a.gguf,b=/b.gguf", "CORELM_LOADER_WATCH_INTERVAL": "1s"}, ""},
		{"bad model", []string{"--source-dir", src, "--model", "m"}, nil, "ID=PATH"},
		{"model named twice", []string{"--source-dir", src, "--model", "m=a.gguf", "--model", "m=b.gguf"}, nil, "twice"},
		{"bad variable", []string{"--source-dir", src}, map[string]string{"CORELM_LOADER_BUDGET": "lots"}, "CORELM_LOADER_BUDGET"},
		{"positional", []string{"--source-dir", src, "model.gguf"}, nil, "unexpected arguments"},
		{"telemetry", []string{"--listen", "127.0.0.1:0", "--source-dir", src, "--shm-dir", shm, "--metrics-listen", "127.0.0.1:0", "--log-format", "text"}, nil, ""},
		{"bad log format", []string{"--source-dir", src}, map[string]string{"CORELM_LOADER_LOG_FORMAT": "xml"}, "CORELM_LOADER_LOG_FORMAT"},
		{"bad OTEL variable", []string{"--listen", "127.0.0.1:0", "--source-dir", src, "--shm-dir", shm}, map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { servicetest.CheckRun(t, run, tt.args, tt.env, tt.wantErr) })
	}
}
