package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/corelm/corelm/internal/envflag"
	"github.com/corelm/corelm/internal/version"
)

// LogFormats are the values of --log-format; the first is the default, the
// same in both service binaries and serve-all: one record a line that log
// collectors read without a parser per service, and that an operator greps
// for a trace_id.
var LogFormats = []string{"json", "text"}

// Flags are a process's telemetry knobs, bound the same way by the loader,
// the inference binary and `corelm serve-all` (Bind). The trace levels are
// the inference service's own (its BindFlags).
type Flags struct {
	MetricsListen string     // --metrics-listen: Prometheus /metrics address ("": none)
	LogFormat     string     // --log-format: json or text
	LogLevel      slog.Level // --log-level
}

// Bind binds --metrics-listen (its default: metricsListen), --log-format
// and --log-level to fs.
func (f *Flags) Bind(fs *envflag.Set, metricsListen string) {
	fs.String(&f.MetricsListen, "metrics-listen", metricsListen,
		"serve Prometheus metrics on http://ADDR/metrics, host:port (empty: no endpoint)")
	envflag.Parsed(fs, &f.LogFormat, "log-format", LogFormats[0], parseLogFormat, "log records as json or text")
	fs.LogLevel(&f.LogLevel)
}

func parseLogFormat(s string) (string, error) {
	_, err := NewLogger(io.Discard, s, slog.LevelInfo)
	return s, err
}

// Logger is NewLogger with the flags' format and level.
func (f *Flags) Logger(w io.Writer) (*slog.Logger, error) {
	return NewLogger(w, f.LogFormat, f.LogLevel)
}

// Setup is Setup for a server process: service is its default name, getenv
// its environment, log gets the SDK's errors and the /metrics address;
// share, when not nil, is the Telemetry whose metrics it shares (the
// loader in serve-all). ctx only bounds the setup.
func (f *Flags) Setup(ctx context.Context, service string, getenv func(string) string, log *slog.Logger, share *Telemetry) (*Telemetry, error) {
	o := Options{ServiceName: service, Version: version.Read().Module, Getenv: getenv, Logger: log, ShareMetrics: share}
	if share == nil {
		o.MetricsListen = f.MetricsListen
	}
	t, err := Setup(context.WithoutCancel(ctx), o)
	if err != nil {
		return nil, err
	}
	if addr := t.MetricsAddr(); addr != nil {
		log.Info("serving metrics", "addr", "http://"+addr.String()+"/metrics")
	}
	return t, nil
}

// Process is what a service binary starts before it serves: its log (to
// standard error), its listener and its telemetry.
type Process struct {
	Log       *slog.Logger
	Listener  net.Listener
	Telemetry *Telemetry
}

// Start is the start the service binaries share: the log the flags ask
// for, a TCP listener on addr, then Setup for service. Setup comes last so
// that an address in use fails before any exporter or /metrics starts.
// Shutdown the process once it has served.
func (f *Flags) Start(ctx context.Context, service, addr string, getenv func(string) string) (*Process, error) {
	log, err := f.Logger(os.Stderr)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	tel, err := f.Setup(ctx, service, getenv, log, nil)
	if err != nil {
		lis.Close()
		return nil, err
	}
	return &Process{Log: log, Listener: lis, Telemetry: tel}, nil
}

// Shutdown exports the process's last spans, giving up after five seconds.
func (p *Process) Shutdown() { p.Telemetry.ShutdownWithin(5 * time.Second) }

// ShutdownWithin is Shutdown with a deadline of d from now: the last spans
// are exported, or given up after d (an unreachable collector).
func (t *Telemetry) ShutdownWithin(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return t.Shutdown(ctx)
}
