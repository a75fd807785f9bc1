package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// NewLogger returns a logger writing text or JSON records at level and
// above to w, each record of a traced context stamped with trace_id and
// span_id. Callers add request_id and model_id with Logger.With.
func NewLogger(w io.Writer, format string, level slog.Leveler) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
	return slog.New(NewLogHandler(h)), nil
}

// NewLogHandler wraps h so that a record logged with a context holding a
// valid span context (a span of ours, or a client's traceparent) carries
// trace_id and span_id, the keys an operator joins with the traces. They are
// added to the record, so they land in the handler's current group, if any.
func NewLogHandler(h slog.Handler) slog.Handler { return &logHandler{h} }

type logHandler struct{ next slog.Handler }

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.next.Handle(ctx, r)
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler { return &logHandler{h.next.WithAttrs(as)} }
func (h *logHandler) WithGroup(name string) slog.Handler    { return &logHandler{h.next.WithGroup(name)} }
