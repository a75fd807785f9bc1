package main

import (
	"testing"

	"github.com/corelm/corelm/internal/servicetest"
)

// TestRun: the command line and the environment reach the server; what is
// missing or malformed is an error naming the flag or variable.
func TestRun(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string // "" for none
	}{
		{"environment", nil, map[string]string{"CORELM_LISTEN": "127.0.0.1:0", "CORELM_MODEL_FILE": "stories", "CORELM_THREADS": "1"}, ""},
		{"command line", []string{"--listen", "127.0.0.1:0", "--model-file", "stories", "--threads", "1", "--kv-type", "q8_0"}, nil, ""},
		{"nothing to serve", []string{"--listen", "127.0.0.1:0"}, nil, "--model-file"},
		{"bad variable", []string{"--model-file", "stories"}, map[string]string{"CORELM_KV_TYPE": "f8"}, "CORELM_KV_TYPE"},
		{"bad flag", []string{"--model-file", "stories", "--budget", "lots"}, nil, "budget"},
		{"telemetry", []string{"--listen", "127.0.0.1:0", "--model-file", "stories", "--trace-level", "layer", "--trace-level-max", "step",
			"--trace-content", "--log-format", "text", "--metrics-listen", "127.0.0.1:0"}, map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}, ""},
		{"bad trace level", []string{"--model-file", "stories"}, map[string]string{"CORELM_TRACE_LEVEL": "verbose"}, "CORELM_TRACE_LEVEL"},
		{"bad log format", []string{"--model-file", "stories", "--log-format", "xml"}, nil, "log-format"},
		{"bad OTEL variable", []string{"--listen", "127.0.0.1:0", "--model-file", "stories"}, map[string]string{"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { servicetest.CheckRun(t, run, tt.args, tt.env, tt.wantErr) })
	}
}
