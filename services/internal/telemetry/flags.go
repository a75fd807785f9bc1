package telemetry

import (
	"io"
	"log/slog"

	"github.com/corelm/corelm/internal/envflag"
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
