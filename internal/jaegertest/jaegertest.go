// Package jaegertest runs a real Jaeger (v2 all-in-one, in-memory storage)
// for a test and reads traces back through its query API.
//
// The binary is built once, outside the clone, from the pinned tool modfile:
//
//	go build -modfile=tools/jaeger.mod -o ~/.cache/corelm/jaeger-v1.75.0 github.com/jaegertracing/jaeger/cmd/jaeger
//
// (about 17 minutes on 2 cores). Start finds it through CORELM_JAEGER_BIN,
// else at that cache path ($XDG_CACHE_HOME instead of ~/.cache when set).
// Without it a test skips, or fails when CORELM_REQUIRE_JAEGER=1 (CI).
//
// Every endpoint Jaeger opens is on 127.0.0.1 at a free port: the OTLP
// receivers, the query HTTP and gRPC servers, the health check and the
// collector's own metrics. The extensions that open other ports (remote
// sampling, expvar, zpages, pprof) and the Jaeger and Zipkin receivers are
// left out, and the query service's self-tracing (on by default, sending
// Jaeger's own spans to localhost:4317) is off.
package jaegertest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corelm/corelm/internal/syncbuf"
)

// Version is the Jaeger release the harness is written for.
const Version = "v1.75.0"

// Binary returns the path of the Jaeger binary: CORELM_JAEGER_BIN, else
// the default cache path. It does not check that the file exists.
func Binary() (string, error) {
	if p := os.Getenv("CORELM_JAEGER_BIN"); p != "" {
		return p, nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "corelm", "jaeger-"+Version), nil
}

// Jaeger is a running Jaeger process.
type Jaeger struct {
	ports  ports
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	log    syncbuf.Buffer
	http   *http.Client
}

type ports struct {
	otlpGRPC, otlpHTTP, queryHTTP, queryGRPC, health, metrics int
}

// Start runs Jaeger for the rest of the test; it is stopped at cleanup,
// and its log is printed if the test failed.
func Start(t testing.TB) *Jaeger {
	t.Helper()
	return startWith(t, config)
}

// StartConfig runs Jaeger with a deployment's own configuration file (such
// as deploy/jaeger/config.yaml), moved onto loopback: each endpoint
// "0.0.0.0:PORT" on one of Jaeger's standard ports (OTLP 4317 and 4318,
// query 16686 and 16685, health 13133) is rewritten to 127.0.0.1 and a free
// port. Any other 0.0.0.0 endpoint fails the test, as does an endpoint
// missing for OTLP/gRPC, the query API or the health check.
func StartConfig(t testing.TB, yaml string) *Jaeger {
	t.Helper()
	for _, std := range []string{"4317", "16686", "13133"} {
		if !strings.Contains(yaml, "0.0.0.0:"+std) {
			t.Fatalf("jaegertest: the configuration has no endpoint 0.0.0.0:%s", std)
		}
	}
	return startWith(t, func(p ports) string {
		out := strings.NewReplacer(
			"0.0.0.0:4317", fmt.Sprintf("127.0.0.1:%d", p.otlpGRPC),
			"0.0.0.0:4318", fmt.Sprintf("127.0.0.1:%d", p.otlpHTTP),
			"0.0.0.0:16686", fmt.Sprintf("127.0.0.1:%d", p.queryHTTP),
			"0.0.0.0:16685", fmt.Sprintf("127.0.0.1:%d", p.queryGRPC),
			"0.0.0.0:13133", fmt.Sprintf("127.0.0.1:%d", p.health),
		).Replace(yaml)
		if strings.Contains(out, "0.0.0.0:") {
			t.Fatalf("jaegertest: the configuration listens on a port this harness does not know:\n%s", out)
		}
		return out
	})
}

func startWith(t testing.TB, render func(ports) string) *Jaeger {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("jaegertest: %v", err)
	}
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("jaegertest: no Jaeger binary at %s (%v); build it once (about 17 min on 2 cores) with\n"+
			"\tgo build -modfile=tools/jaeger.mod -o %s github.com/jaegertracing/jaeger/cmd/jaeger\n"+
			"or point CORELM_JAEGER_BIN at one", bin, err, bin)
		if os.Getenv("CORELM_REQUIRE_JAEGER") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	// A port found free may be taken before Jaeger binds it: try again
	// with new ones.
	for attempt := 1; ; attempt++ {
		j, err := start(bin, dir, render)
		if err == nil {
			t.Cleanup(func() {
				if err := j.stop(); err != nil {
					t.Errorf("jaegertest: stopping Jaeger: %v", err)
				}
				if t.Failed() {
					t.Logf("jaegertest: Jaeger's log:\n%s", j.Log())
				}
			})
			return j
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("jaegertest: %v", err)
		}
	}
}

func start(bin, dir string, render func(ports) string) (*Jaeger, error) {
	var p ports
	for _, port := range []*int{&p.otlpGRPC, &p.otlpHTTP, &p.queryHTTP, &p.queryGRPC, &p.health, &p.metrics} {
		n, err := freePort()
		if err != nil {
			return nil, err
		}
		*port = n
	}
	cfg := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfg, []byte(render(p)), 0o644); err != nil {
		return nil, err
	}
	j := &Jaeger{ports: p, exited: make(chan struct{}), http: &http.Client{Timeout: 10 * time.Second}}
	j.cmd = exec.Command(bin, "--config", cfg)
	j.cmd.Dir = dir
	j.cmd.Stdout, j.cmd.Stderr = &j.log, &j.log
	// The test's own OTEL_* settings (an endpoint for the code under
	// test) are not Jaeger's.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") {
			j.cmd.Env = append(j.cmd.Env, kv)
		}
	}
	if err := j.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		j.cmd.Wait()
		close(j.exited)
	}()
	if err := j.waitReady(60 * time.Second); err != nil {
		j.stop()
		return nil, fmt.Errorf("%w\nJaeger's log:\n%s", err, j.Log())
	}
	return j, nil
}

// waitReady polls the health check until Jaeger says it is ready, the
// process exits, or the deadline passes.
func (j *Jaeger) waitReady(timeout time.Duration) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/status", j.ports.health)
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := j.http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-j.exited:
			return fmt.Errorf("jaeger exited before it was ready (%v)", j.cmd.ProcessState)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("jaeger not ready after %v (last: %v)", timeout, err)
		}
	}
}

// stop ends the process: SIGTERM, then SIGKILL if it has not exited within
// 10 seconds.
func (j *Jaeger) stop() error {
	select {
	case <-j.exited:
		return nil
	default:
	}
	j.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.exited:
		return nil
	case <-time.After(10 * time.Second):
		j.cmd.Process.Kill()
		<-j.exited
		return errors.New("jaeger ignored SIGTERM for 10s and was killed")
	}
}

// OTLPEndpoint is the OTLP/gRPC receiver, as a URL for
// OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:PORT".
func (j *Jaeger) OTLPEndpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", j.ports.otlpGRPC) }

// OTLPHTTPEndpoint is the OTLP/HTTP receiver's base URL.
func (j *Jaeger) OTLPHTTPEndpoint() string {
	return fmt.Sprintf("http://127.0.0.1:%d", j.ports.otlpHTTP)
}

// QueryURL is the base URL of the query service (the HTTP API; the UI
// assets are not in a plain build of the binary).
func (j *Jaeger) QueryURL() string { return fmt.Sprintf("http://127.0.0.1:%d", j.ports.queryHTTP) }

// QueryGRPCAddr is the query service's gRPC address (api_v2, api_v3).
func (j *Jaeger) QueryGRPCAddr() string { return fmt.Sprintf("127.0.0.1:%d", j.ports.queryGRPC) }

// Log is what Jaeger has written so far.
func (j *Jaeger) Log() string { return j.log.String() }

// config is the Jaeger v2 configuration: one traces pipeline from the OTLP
// receiver into memory, and a metrics pipeline that drops what it gets, so
// that services exporting metrics over OTLP to the same endpoint are not
// refused.
func config(p ports) string {
	return fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
    metrics:
      receivers: [otlp]
      exporters: [nop]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: basic
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: %[6]d
    logs:
      level: info

extensions:
  jaeger_query:
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:%[3]d
    grpc:
      endpoint: 127.0.0.1:%[4]d
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:%[5]d

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%[1]d
      http:
        endpoint: 127.0.0.1:%[2]d

processors:
  batch:
    timeout: 100ms

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
  nop:
`, p.otlpGRPC, p.otlpHTTP, p.queryHTTP, p.queryGRPC, p.health, p.metrics)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
