package server

import (
	"fmt"
	"time"

	"github.com/corelm/corelm/internal/envflag"
	"github.com/corelm/corelm/internal/tlsconfig"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/sched"
	"github.com/corelm/corelm/services/internal/grpcserver"
	"github.com/corelm/corelm/services/internal/telemetry"
)

// BindFlags binds the service's knobs to flags, with their defaults: the
// flags the inference binary and `corelm serve-all` share. Where to listen,
// what to serve, the logger and the telemetry itself (telemetry.Flags:
// --metrics-listen, --log-format, --log-level) are the caller's.
func (c *Config) BindFlags(fs *envflag.Set) {
	o := &c.Options
	fs.Int(&o.Threads, "threads", 0, "kernel threads per model (0: the CPUs this process may use)")
	fs.Int(&o.MaxSeqs, "max-seqs", 8, "sequences per model decoded together")
	fs.Int(&o.MaxQueue, "max-queue", 0, "requests waiting for a slot per model (0: twice --max-seqs)")
	fs.Int(&o.Context, "ctx", 0, "context length per sequence (0: the largest that --memory-budget holds for one sequence, up to the model's and 8192; "+
		"a larger one than fits is an error)")
	fs.Int(&o.StepTokens, "step-tokens", sched.DefaultStepTokens, "most tokens one forward step processes (prefill chunking)")
	envflag.Parsed(fs, &o.KVType, "kv-type", "f16", kvcache.ParseType, "KV cache type: f16 or q8_0")
	envflag.Parsed(fs, &o.MemoryBudget, "memory-budget", "auto", parseMemoryBudget,
		"memory for every model's weights, KV cache and compute buffers, e.g. 6GiB; auto: the cgroup memory limit, else physical memory, less 256 MiB + 1/32; none: no limit")
	fs.Bytes(&o.Budget, "budget", "0", "KV cache cap per model, e.g. 2GiB (0: what --memory-budget leaves after the weights and compute buffers, "+
		"at most --max-seqs full-context sequences)")
	fs.String(&o.KVCacheDir, "kv-cache-dir", "", "keep each model's prefix cache here across restarts (keyed by the weights' digest and the KV type; "+
		"a corrupt or stale entry is logged and ignored); empty: in memory only")
	fs.String(&o.PackCache, "pack-cache", "auto", "where a --model-file GGUF is packed for this CPU's kernels, once, and kept for later starts "+
		"(auto: $"+runtime.PackCacheEnv+", else /dev/shm/corelm-packed, else the user cache directory; off: serve the GGUF file as it is; "+
		"the least recently used copies go to keep it within $"+runtime.PackCacheMaxEnv+", default half its filesystem)")
	fs.Duration(&o.Drain, "drain-timeout", 5*time.Minute, "how long a superseded model generation may finish its requests before they are cancelled")
	fs.String(&c.AuthToken, "auth-token", "", "require this bearer token on every call but health checks")
	c.files.tls.Bind(fs)
	c.Limits.Bind(fs)
	fs.Int(&o.MaxPromptBytes, "max-prompt-bytes", DefaultMaxPromptBytes, "largest prompt in bytes (text, token ids at 4 bytes each, or chat messages): larger is InvalidArgument")
	fs.Int(&o.MaxStreamGenerations, "max-stream-generations", DefaultMaxStreamGenerations, "most generations running at once on one Generate stream: more are refused (ResourceExhausted) for that request only")
	fs.Duration(&c.Grace, "shutdown-grace", 10*time.Second, "how long SIGTERM waits for running generations")
	t := &o.Tracing
	envflag.Parsed(fs, &t.Level, "trace-level", "request", telemetry.ParseLevel,
		"how much of a generation is traced unless its call asks (metadata "+telemetry.MetadataKey+"): off, request, step or layer")
	envflag.Parsed(fs, &t.Max, "trace-level-max", "layer", telemetry.ParseLevel,
		"the most a call may ask for: off, request, step or layer")
	fs.Bool(&t.Content, "trace-content", false,
		"record every traced generation's prompt and output on its span (else only calls with metadata "+ContentMetadataKey+": true)")
}

// transportFiles are the files of the TLS flags, read by Serve.
type transportFiles struct {
	tls tlsconfig.Server
}

// LoadTLS builds c.TLS from the flags' files unless it is set, and checks
// the prompt limit against the message limit. Serve calls it; a caller
// that needs c.TLS first (serve-all's gateway) may too.
func (c *Config) LoadTLS() error {
	if c.TLS == nil {
		var err error
		if c.TLS, err = c.files.tls.Config(); err != nil {
			return err
		}
	}
	max := c.Limits.MaxRecvMsgSize
	if max <= 0 {
		max = grpcserver.DefaultLimits.MaxRecvMsgSize
	}
	if int64(c.MaxPromptBytes) > max {
		return fmt.Errorf("--max-prompt-bytes %d exceeds --max-recv-msg-size %d: no message could carry such a prompt", c.MaxPromptBytes, max)
	}
	return nil
}

// parseMemoryBudget reads --memory-budget: "auto" (0), "none" (-1) or a
// size.
func parseMemoryBudget(v string) (int64, error) {
	switch v {
	case "auto", "":
		return 0, nil
	case "none":
		return -1, nil
	}
	n, err := runtime.ParseBytes(v)
	if err == nil && n == 0 {
		err = fmt.Errorf("--memory-budget 0: give a size, auto or none")
	}
	return n, err
}

// BindTelemetryFlags binds a process's telemetry knobs, the same in the
// inference binary, the loader binary and `corelm serve-all`:
// --metrics-listen (metricsListen is its default), --log-format and
// --log-level. The returned flags set up the logger and the telemetry
// (Logger, Setup) once parsed. (Here so that serve-all, outside services/,
// binds them too.)
func BindTelemetryFlags(fs *envflag.Set, metricsListen string) *telemetry.Flags {
	tf := &telemetry.Flags{}
	tf.Bind(fs, metricsListen)
	return tf
}
