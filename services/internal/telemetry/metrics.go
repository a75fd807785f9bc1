package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/corelm/corelm/pkg/runtime/sched"
)

// instruments are the metrics of both services. The gen_ai.server.* names
// and buckets are the GenAI semantic conventions' (buckets extended for CPU
// generations, which run longer). Tokens are a counter in corelm's own
// namespace: the conventions' gen_ai.client.token.usage is a client-side
// histogram, and a rate of tokens is what an operator of a server wants.
type instruments struct {
	requestDuration metric.Float64Histogram // gen_ai.server.request.duration
	ttft            metric.Float64Histogram // gen_ai.server.time_to_first_token
	tpot            metric.Float64Histogram // gen_ai.server.time_per_output_token
	tokens          metric.Int64Counter     // corelm.tokens, by gen_ai.token.type
	stepDuration    metric.Float64Histogram // corelm.scheduler.step.duration

	queued, active, kvInUse, kvBudget metric.Int64ObservableGauge
	rejected                          metric.Int64ObservableCounter

	cacheBytes                                    metric.Int64ObservableGauge
	resident, residentHuge                        metric.Int64ObservableGauge
	cacheHits, cacheMisses, cacheEvicted, preempt metric.Int64ObservableCounter

	spansDropped, spansExported, spansFailed metric.Int64ObservableCounter

	loadDuration metric.Float64Histogram // corelm.loader.load.duration
	loadBytes    metric.Int64Counter     // corelm.loader.load.bytes
}

func newInstruments(m metric.Meter) (*instruments, error) {
	var in instruments
	var errs []error
	hist := func(h *metric.Float64Histogram, name, desc string, buckets ...float64) {
		var err error
		*h, err = m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(buckets...))
		errs = append(errs, err)
	}
	counter := func(c *metric.Int64Counter, name, unit, desc string) {
		var err error
		*c, err = m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
	}
	gauge := func(g *metric.Int64ObservableGauge, name, unit, desc string) {
		var err error
		*g, err = m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
	}
	observedCounter := func(c *metric.Int64ObservableCounter, name, unit, desc string) {
		var err error
		*c, err = m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
	}
	hist(&in.requestDuration, "gen_ai.server.request.duration", "Generation time from the request's arrival to its end.",
		0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84, 327.68, 655.36)
	hist(&in.ttft, "gen_ai.server.time_to_first_token", "Time from the request's arrival to its first output token, for successful generations.",
		0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80)
	hist(&in.tpot, "gen_ai.server.time_per_output_token", "Time per output token after the first, for successful generations.",
		0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5)
	counter(&in.tokens, "corelm.tokens", "{token}", "Tokens read (input) and generated (output).")
	hist(&in.stepDuration, "corelm.scheduler.step.duration", "Duration of one forward step of the scheduler.",
		0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
	gauge(&in.queued, "corelm.scheduler.queue.depth", "{request}", "Requests admitted and waiting for a slot.")
	gauge(&in.active, "corelm.scheduler.active_sequences", "{sequence}", "Sequences holding a slot.")
	gauge(&in.kvInUse, "corelm.kv_cache.usage", "By", "KV cache bytes held by the sequences holding a slot.")
	gauge(&in.kvBudget, "corelm.kv_cache.budget", "By", "KV cache bytes all sequences may hold (0: unlimited).")
	gauge(&in.resident, "corelm.model.resident", "By", "Bytes of the model's mapped weights file in the process's resident set (the pages it has touched).")
	gauge(&in.residentHuge, "corelm.model.resident.huge_pages", "By",
		"Of corelm.model.resident, the bytes mapped in 2 MiB pages: below it, decode reads the weights through 4 KiB pages and slows.")
	observedCounter(&in.rejected, "corelm.scheduler.rejected", "{request}", "Requests turned away as overload.")
	gauge(&in.cacheBytes, "corelm.kv_cache.prefix.usage", "By", "KV cache bytes kept only for prefix reuse (within the KV budget).")
	observedCounter(&in.cacheHits, "corelm.kv_cache.prefix.hits", "{request}", "Requests that reused a cached prompt prefix.")
	observedCounter(&in.cacheMisses, "corelm.kv_cache.prefix.misses", "{request}", "Requests that found no cached prompt prefix.")
	observedCounter(&in.cacheEvicted, "corelm.kv_cache.prefix.evictions", "{block}", "Cached KV blocks evicted.")
	observedCounter(&in.preempt, "corelm.scheduler.preempted", "{sequence}", "Sequences preempted for want of KV blocks (resumed later).")
	observedCounter(&in.spansDropped, "corelm.telemetry.spans.dropped", "{span}", "Finished spans dropped because the export queue was full.")
	observedCounter(&in.spansExported, "corelm.telemetry.spans.exported", "{span}", "Spans the exporter accepted.")
	observedCounter(&in.spansFailed, "corelm.telemetry.spans.failed", "{span}", "Spans whose export failed.")
	hist(&in.loadDuration, "corelm.loader.load.duration", "Time to validate, pack and publish a model.",
		0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500)
	counter(&in.loadBytes, "corelm.loader.load.bytes", "By", "Bytes of packed model files published.")
	return &in, errors.Join(errs...)
}

// modelStats is one scheduler whose state the gauges report.
type modelStats struct {
	stats func() sched.Stats
	pages func() (resident, huge int64)
	opt   metric.ObserveOption
}

// RegisterModel has the queue, slot and KV gauges report a scheduler's
// Stats under the model's name until unregister is called (when the
// scheduler is replaced or shut down), and, unless pages is nil, the
// resident gauges the bytes of the model's mapped weights file in the
// process's resident set and of those in 2 MiB pages. stats and pages are
// called from the metric reader's goroutine at each collection.
func (t *Telemetry) RegisterModel(model string, stats func() sched.Stats, pages func() (resident, huge int64)) (unregister func()) {
	m := &modelStats{stats: stats, pages: pages, opt: metric.WithAttributes(keyRequestModel.String(model))}
	t.models.Store(m, struct{}{})
	return func() { t.models.Delete(m) }
}

// observeGauges registers the callback of the observable instruments.
func (t *Telemetry) observeGauges() error {
	in := t.inst
	svc := metric.WithAttributes(attribute.String("service.name", t.service))
	reg, err := t.mp.Meter(ScopeName).RegisterCallback(func(_ context.Context, o metric.Observer) error {
		t.models.Range(func(k, _ any) bool {
			m := k.(*modelStats)
			s := m.stats()
			o.ObserveInt64(in.queued, int64(s.Queued), m.opt)
			o.ObserveInt64(in.active, int64(s.Active), m.opt)
			o.ObserveInt64(in.kvInUse, s.KVBytesInUse, m.opt)
			o.ObserveInt64(in.kvBudget, s.KVBudget, m.opt)
			o.ObserveInt64(in.rejected, int64(s.Rejected), m.opt)
			o.ObserveInt64(in.cacheBytes, s.CacheBytes, m.opt)
			o.ObserveInt64(in.cacheHits, int64(s.CacheHits), m.opt)
			o.ObserveInt64(in.cacheMisses, int64(s.CacheMisses), m.opt)
			o.ObserveInt64(in.cacheEvicted, int64(s.CacheEvictions), m.opt)
			o.ObserveInt64(in.preempt, int64(s.Preempted), m.opt)
			if m.pages != nil {
				resident, huge := m.pages()
				o.ObserveInt64(in.resident, resident, m.opt)
				o.ObserveInt64(in.residentHuge, huge, m.opt)
			}
			return true
		})
		if q := t.spans; q != nil {
			o.ObserveInt64(in.spansDropped, int64(q.dropped.Load()), svc)
			o.ObserveInt64(in.spansExported, int64(q.exported.Load()), svc)
			o.ObserveInt64(in.spansFailed, int64(q.failed.Load()), svc)
		}
		return nil
	}, in.queued, in.active, in.kvInUse, in.kvBudget, in.rejected, in.cacheBytes, in.cacheHits, in.cacheMisses, in.cacheEvicted, in.preempt,
		in.resident, in.residentHuge, in.spansDropped, in.spansExported, in.spansFailed)
	if err != nil {
		return err
	}
	// Unregistered first: the meter provider may be another Telemetry's.
	t.shutdowns = append([]func(context.Context) error{func(context.Context) error { return reg.Unregister() }}, t.shutdowns...)
	return nil
}

// RecordLoad records one model load of the loader: its duration, and the
// bytes it published when it succeeded.
func (t *Telemetry) RecordLoad(ctx context.Context, model string, d time.Duration, bytes int64, err error) {
	attrs := []attribute.KeyValue{keyModel.String(model)}
	if err != nil {
		attrs = append(attrs, keyErrorType.String(errorType(err)))
	}
	t.inst.loadDuration.Record(ctx, d.Seconds(), metric.WithAttributes(attrs...))
	if err == nil && bytes > 0 {
		t.inst.loadBytes.Add(ctx, bytes, metric.WithAttributes(attrs...))
	}
}

// errorLogger logs the SDK's errors, each distinct message at most once a
// minute: an unreachable collector fails every export, and the log should
// say so without being flooded.
type errorLogger struct {
	log        *slog.Logger
	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

func newErrorLogger(l *slog.Logger) *errorLogger {
	return &errorLogger{log: l, last: map[string]time.Time{}, suppressed: map[string]int{}}
}

func (e *errorLogger) Handle(err error) {
	msg := err.Error()
	now := time.Now()
	e.mu.Lock()
	if t, ok := e.last[msg]; ok && now.Sub(t) < time.Minute {
		e.suppressed[msg]++
		e.mu.Unlock()
		return
	}
	if len(e.last) >= 256 {
		clear(e.last)
		clear(e.suppressed)
	}
	e.last[msg] = now
	n := e.suppressed[msg]
	delete(e.suppressed, msg)
	e.mu.Unlock()
	e.log.Warn("opentelemetry", "err", err, "repeated", n)
}
