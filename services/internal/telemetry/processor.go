package telemetry

import (
	"context"
	"sync/atomic"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// spanQueue bounds the spans waiting for export and counts the ones it turns
// away. The SDK's batch processor drops spans when its queue is full but
// keeps the count to itself (its own self-observability is an experimental,
// process-wide switch that also costs on every span start), so this sits in
// front of it: pending counts spans handed to the batch processor and not
// yet through the exporter, which is at least the processor's queue length;
// capping pending below the queue's capacity means the processor never
// drops, and every span dropped is dropped — and counted — here. It costs two
// atomic adds per span and never blocks.
type spanQueue struct {
	next  sdktrace.SpanProcessor // the SDK's batch processor, exporting through counter
	limit int64

	pending  atomic.Int64
	dropped  atomic.Uint64
	exported atomic.Uint64
	failed   atomic.Uint64
}

var _ sdktrace.SpanProcessor = (*spanQueue)(nil)

// newSpanQueue returns a processor batching to exp, holding at most queue
// spans, exporting up to batch at a time, at least every delay.
func newSpanQueue(exp sdktrace.SpanExporter, o *Options) *spanQueue {
	q := &spanQueue{limit: int64(o.SpanQueue)}
	q.next = sdktrace.NewBatchSpanProcessor(&countingExporter{SpanExporter: exp, q: q},
		// Room beyond the limit for ForceFlush's marker spans.
		sdktrace.WithMaxQueueSize(o.SpanQueue+64),
		sdktrace.WithMaxExportBatchSize(o.SpanBatch),
		sdktrace.WithBatchTimeout(o.SpanDelay))
	return q
}

// OnStart does nothing: the batch processor ignores span starts.
func (q *spanQueue) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (q *spanQueue) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return // the batch processor skips these too
	}
	if q.pending.Add(1) > q.limit {
		q.pending.Add(-1)
		q.dropped.Add(1)
		return
	}
	q.next.OnEnd(s)
}

func (q *spanQueue) ForceFlush(ctx context.Context) error { return q.next.ForceFlush(ctx) }
func (q *spanQueue) Shutdown(ctx context.Context) error   { return q.next.Shutdown(ctx) }

// countingExporter releases the queue's places once a batch is through.
type countingExporter struct {
	sdktrace.SpanExporter
	q *spanQueue
}

func (e *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	n := len(spans)
	e.q.pending.Add(-int64(n))
	if err != nil {
		e.q.failed.Add(uint64(n))
	} else {
		e.q.exported.Add(uint64(n))
	}
	return err
}
