package telemetry

import (
	"cmp"
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/pkg/runtime/sched"
)

// GenerationStart describes a generation as the server receives it.
type GenerationStart struct {
	Model     string // gen_ai.request.model
	Operation string // OperationChat or OperationTextCompletion [text_completion]
	RequestID string // the client's request id (corelm.request_id)
	Level     Level  // the request's trace level (LevelFromIncoming)
}

// Generation is one generation's telemetry: its span (when its level is
// request or more and the sampler keeps it) and the timings its metrics
// need. The server makes it before Submit and hands it to the scheduler in
// Request.Tag (Attach); the hooks of SchedulerHooks fill it in as the
// scheduler goes. The life of one:
//
//	ctx, gen := tel.StartGeneration(ctx, telemetry.GenerationStart{...})
//	defer gen.End()
//	gen.Attach(&req)
//	h, err := s.Submit(ctx, req)
//	gen.Submitted(err)
//
// Its span ends when both the server has called End and the scheduler has
// finished the request, so the server may add to it (Span) until End.
type Generation struct {
	t         *Telemetry
	span      trace.Span // nil below LevelRequest
	recording bool
	level     Level
	start     time.Time
	attrs     attribute.Set // gen_ai.operation.name, provider, model: the metrics' attributes

	// Written by the scheduler's hooks, on its goroutine.
	first time.Time
	steps int

	mu                                      sync.Mutex
	submitted, schedDone, serverDone, ended bool
}

// StartGeneration starts a generation's telemetry, and its span as a child
// of ctx's when s.Level is request or more. The returned context carries
// the span (for logs and for the calls the generation makes).
func (t *Telemetry) StartGeneration(ctx context.Context, s GenerationStart) (context.Context, *Generation) {
	if s.Operation == "" {
		s.Operation = OperationTextCompletion
	}
	g := &Generation{
		t:     t,
		level: s.Level,
		start: time.Now(),
		attrs: attribute.NewSet(keyOperationName.String(s.Operation), keyProviderName.String(providerName),
			keyRequestModel.String(s.Model)),
	}
	if s.Level >= LevelRequest {
		ctx, g.span = t.tracer.Start(ctx, s.Operation+" "+s.Model, trace.WithTimestamp(g.start),
			trace.WithAttributes(g.attrs.ToSlice()...))
		g.recording = g.span.IsRecording()
		if g.recording {
			g.span.SetAttributes(keyTraceLevel.String(s.Level.String()))
			if s.RequestID != "" {
				g.span.SetAttributes(keyRequestID.String(s.RequestID))
			}
		}
	}
	return ctx, g
}

// Level is the generation's trace level.
func (g *Generation) Level() Level { return g.level }

// Span is the generation's span (a no-op span below LevelRequest): the
// server may add the prompt or the output to it when asked to.
func (g *Generation) Span() trace.Span {
	if g.span == nil {
		return trace.SpanFromContext(context.Background())
	}
	return g.span
}

// TraceLayers reports whether the scheduler should time the layers of the
// steps this generation takes part in.
func (g *Generation) TraceLayers() bool { return g.recording && g.level >= LevelLayer }

// Attach puts g in req.Tag, asks for layer timings when g needs them, and
// records req's parameters on the span.
func (g *Generation) Attach(req *sched.Request) {
	req.Tag = g
	req.TraceLayers = req.TraceLayers || g.TraceLayers()
	if !g.recording {
		return
	}
	p := &req.Sampling
	attrs := []attribute.KeyValue{
		keyRequestTemperature.Float64(float64(p.Temperature)),
		keyRequestSeed.Int64(int64(p.Seed)),
	}
	if req.MaxTokens > 0 {
		attrs = append(attrs, keyRequestMaxTokens.Int(req.MaxTokens))
	}
	if p.TopP > 0 && p.TopP < 1 {
		attrs = append(attrs, keyRequestTopP.Float64(float64(p.TopP)))
	}
	if p.TopK > 0 {
		attrs = append(attrs, keyRequestTopK.Int(p.TopK))
	}
	g.span.SetAttributes(attrs...)
}

// Constrained records the kind of the request's output constraint
// (json_schema, json_object, grammar, regex) and the GenAI output type it
// implies ("json" for the JSON kinds, else "text").
func (g *Generation) Constrained(kind string) {
	if !g.recording {
		return
	}
	out := "text"
	if strings.HasPrefix(kind, "json") {
		out = "json"
	}
	g.span.SetAttributes(keyConstraint.String(kind), keyOutputType.String(out))
}

// Submitted records the outcome of Submit: with an error the generation is
// over (Fail).
func (g *Generation) Submitted(err error) {
	if err != nil {
		g.Fail(err)
		return
	}
	g.mu.Lock()
	g.submitted = true
	g.mu.Unlock()
}

// Fail ends a generation that never reached the scheduler (a Submit error,
// or one before it): its duration is recorded with error.type, its span
// ended with an error status.
func (g *Generation) Fail(err error) {
	g.mu.Lock()
	if g.ended || g.submitted {
		g.mu.Unlock()
		return
	}
	g.ended = true
	g.mu.Unlock()
	et := errorType(err)
	g.t.inst.requestDuration.Record(context.Background(), time.Since(g.start).Seconds(),
		metric.WithAttributeSet(withError(g.attrs, et)))
	if g.recording {
		g.span.SetAttributes(keyErrorType.String(et))
		g.span.SetStatus(otelcodes.Error, err.Error())
		g.span.End()
	}
}

// End says the server is done with the generation. The span ends now if the
// scheduler has finished the request too (or it was never submitted), else
// when it does.
func (g *Generation) End() {
	g.mu.Lock()
	if g.ended {
		g.mu.Unlock()
		return
	}
	g.serverDone = true
	end := !g.submitted || g.schedDone
	g.ended = end
	g.mu.Unlock()
	if end && g.span != nil {
		g.span.End()
	}
}

// finish is the scheduler's end of the generation (RequestFinished): usage
// and timings on the span, the request metrics.
func (g *Generation) finish(f *sched.Final) {
	now := time.Now()
	ctx := context.Background()
	var et string
	switch f.Reason {
	case sched.FinishError:
		et = cmp.Or(errorType(f.Err), "error")
	case sched.FinishCancelled:
		et = cmp.Or(errorType(f.Err), "cancelled")
	}
	in := g.t.inst
	in.requestDuration.Record(ctx, now.Sub(g.start).Seconds(), metric.WithAttributeSet(withError(g.attrs, et)))
	in.tokens.Add(ctx, int64(f.Usage.PromptTokens), metric.WithAttributeSet(withToken(g.attrs, tokenInput)))
	in.tokens.Add(ctx, int64(f.Usage.CompletionTokens), metric.WithAttributeSet(withToken(g.attrs, tokenOutput)))
	if et == "" && !g.first.IsZero() {
		in.ttft.Record(ctx, g.first.Sub(g.start).Seconds(), metric.WithAttributeSet(g.attrs))
		if n := f.Usage.CompletionTokens; n > 1 {
			in.tpot.Record(ctx, now.Sub(g.first).Seconds()/float64(n-1), metric.WithAttributeSet(g.attrs))
		}
	}
	if g.recording {
		g.span.SetAttributes(
			keyUsageInputTokens.Int(f.Usage.PromptTokens),
			keyUsageOutputTokens.Int(f.Usage.CompletionTokens),
			keyUsageCacheReadTokens.Int(f.Usage.CachedTokens),
			keyCachedTokens.Int(f.Usage.CachedTokens),
			keyFinishReasons.StringSlice([]string{f.Reason.String()}),
			keyQueueNS.Int64(int64(f.Timings.Queue)),
			keyPrefillNS.Int64(int64(f.Timings.Prefill)),
			keyDecodeNS.Int64(int64(f.Timings.Decode)),
			keySteps.Int(g.steps),
		)
		if f.Timings.TTFT > 0 {
			g.span.SetAttributes(keyTTFTNS.Int64(int64(f.Timings.TTFT)))
		}
		if f.StopSequence != "" {
			g.span.SetAttributes(keyStopSequence.String(f.StopSequence))
		}
		if et != "" {
			g.span.SetAttributes(keyErrorType.String(et))
		}
		if f.Reason == sched.FinishError && f.Err != nil {
			g.span.SetStatus(otelcodes.Error, f.Err.Error())
		}
	}
	g.mu.Lock()
	g.schedDone = true
	end := g.serverDone && !g.ended
	g.ended = g.ended || end
	g.mu.Unlock()
	if end && g.span != nil {
		g.span.End(trace.WithTimestamp(now))
	}
}

func withError(s attribute.Set, et string) attribute.Set {
	if et == "" {
		return s
	}
	return attribute.NewSet(append(s.ToSlice(), keyErrorType.String(et))...)
}

func withToken(s attribute.Set, kv attribute.KeyValue) attribute.Set {
	return attribute.NewSet(append(s.ToSlice(), kv)...)
}

// errorType is the low-cardinality error.type of err: the scheduler's and
// the context's errors by name, a gRPC status by its code, else _OTHER.
func errorType(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	case errors.Is(err, sched.ErrOverloaded):
		return "overloaded"
	case errors.Is(err, sched.ErrInvalidRequest):
		return "invalid_request"
	case errors.Is(err, sched.ErrPromptTooLong):
		return "prompt_too_long"
	case errors.Is(err, sched.ErrClosed):
		return "shutting_down"
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return s.Code().String()
	}
	return "_OTHER"
}
