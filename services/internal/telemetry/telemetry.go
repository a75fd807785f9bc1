// Package telemetry is what the corelm services need from OpenTelemetry:
// a tracer and a meter provider set up from the standard OTEL_* environment,
// a Prometheus /metrics endpoint, trace levels (off, request, step, layer),
// an observer that turns the scheduler's hooks into generation, step and
// layer spans and the GenAI server metrics, and a log handler that stamps
// records with the trace and span ids.
//
// It knows nothing of how the gRPC servers are built: GRPCOptions gives the
// otelgrpc options, the services install the handlers. With no OTLP endpoint
// configured nothing is exported and the tracer is a no-op: spans cost next
// to nothing, but an incoming trace context still passes through.
package telemetry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of corelm's own spans and metrics.
const ScopeName = "github.com/corelm/corelm/services"

// Options configure Setup. Zero fields take the defaults in brackets.
type Options struct {
	// ServiceName is the service.name resource attribute
	// (corelm-inference, corelm-loader); OTEL_SERVICE_NAME overrides it.
	ServiceName string
	Version     string // service.version
	// Getenv reads the OTEL_* variables [os.Getenv]. The OTLP exporters
	// also read their other settings (headers, TLS, compression, timeout)
	// from the process environment themselves.
	Getenv func(string) string
	// MetricsListen is where to serve Prometheus metrics on /metrics
	// ("127.0.0.1:9464"; "" = no endpoint).
	MetricsListen string
	// ShareMetrics makes this Telemetry record its metrics through another
	// one's meter provider (and so its /metrics endpoint) instead of
	// building its own: for two services in one process (serve-all).
	ShareMetrics *Telemetry
	// Logger receives the SDK's errors (failed exports), each message at
	// most once a minute [the SDK's default: the standard logger]. The
	// SDK's error handler is process-wide: the last Setup's logger wins.
	Logger *slog.Logger

	// SpanQueue is the most finished spans waiting for export [65536];
	// spans past it are dropped and counted, never waited for.
	SpanQueue int
	SpanBatch int           // spans per export [2048]
	SpanDelay time.Duration // longest wait before a partial batch is exported [200ms]

	// SpanExporter, when set, receives the spans instead of an OTLP
	// exporter, whatever the environment says (tests).
	SpanExporter sdktrace.SpanExporter
	// MetricReader, when set, is added to the meter provider (tests: a
	// manual reader).
	MetricReader sdkmetric.Reader
}

// Telemetry holds one service's tracer and meter providers.
type Telemetry struct {
	service string
	tp      trace.TracerProvider
	mp      metric.MeterProvider
	prop    propagation.TextMapPropagator
	tracer  trace.Tracer
	inst    *instruments
	spans   *spanQueue // nil when spans are not exported

	gatherer  *prometheus.Registry // nil without a Prometheus exporter
	metricsLn net.Listener
	metricsSv *http.Server

	models    sync.Map // *modelStats → struct{}: schedulers whose gauges are observed
	shutdowns []func(context.Context) error
	once      sync.Once
	err       error
}

// Setup builds the providers from o and the environment:
//
//   - OTEL_SDK_DISABLED=true: no spans, no metrics, no /metrics endpoint
//     (the W3C propagator is still installed, so traces pass through);
//   - OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT
//     (OTLP/gRPC, e.g. http://127.0.0.1:4317): spans are exported in
//     batches; without either the tracer provider is a no-op;
//     OTEL_TRACES_EXPORTER=none turns the export off;
//   - OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG choose the sampler
//     [parentbased_always_on];
//   - OTEL_EXPORTER_OTLP_METRICS_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT:
//     metrics are exported over OTLP too, unless OTEL_METRICS_EXPORTER says
//     none or prometheus (Jaeger takes no metrics: set none there);
//   - OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES name the resource.
//
// A value Setup cannot read is an error rather than a silent default.
// The propagator (W3C trace context and baggage) is installed globally;
// the providers are not: pass them on with GRPCOptions, Tracer and Meter.
func Setup(ctx context.Context, o Options) (*Telemetry, error) {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.SpanQueue <= 0 {
		o.SpanQueue = 65536
	}
	if o.SpanBatch <= 0 {
		o.SpanBatch = 2048
	}
	o.SpanBatch = min(o.SpanBatch, o.SpanQueue)
	if o.SpanDelay <= 0 {
		o.SpanDelay = 200 * time.Millisecond
	}
	getenv := func(k string) string { return strings.TrimSpace(o.Getenv(k)) }

	t := &Telemetry{
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}
	otel.SetTextMapPropagator(t.prop)
	if o.Logger != nil {
		otel.SetErrorHandler(newErrorLogger(o.Logger))
	}

	disabled, err := envBool(getenv, "OTEL_SDK_DISABLED")
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"} {
		if v := getenv(k); v != "" && v != "grpc" {
			return nil, fmt.Errorf("telemetry: %s=%q: corelm exports OTLP over grpc only", k, v)
		}
	}
	res, err := newResource(ctx, &o, getenv)
	if err != nil {
		return nil, err
	}
	t.service = serviceName(res)
	if disabled {
		t.tp, t.mp = tracenoop.NewTracerProvider(), metricnoop.NewMeterProvider()
	} else {
		if err := t.setupTraces(ctx, &o, getenv, res); err != nil {
			t.Shutdown(ctx)
			return nil, err
		}
		if err := t.setupMetrics(ctx, &o, getenv, res); err != nil {
			t.Shutdown(ctx)
			return nil, err
		}
	}
	t.tracer = t.tp.Tracer(ScopeName)
	if t.inst, err = newInstruments(t.mp.Meter(ScopeName)); err != nil {
		t.Shutdown(ctx)
		return nil, err
	}
	if err := t.observeGauges(); err != nil {
		t.Shutdown(ctx)
		return nil, err
	}
	return t, nil
}

func (t *Telemetry) setupTraces(ctx context.Context, o *Options, getenv func(string) string, res *resource.Resource) error {
	want, err := exporterWanted(getenv("OTEL_TRACES_EXPORTER"), "OTEL_TRACES_EXPORTER")
	if err != nil {
		return err
	}
	sampler, err := samplerFromEnv(getenv)
	if err != nil {
		return err
	}
	exp := o.SpanExporter
	if exp == nil {
		endpoint := cmp.Or(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
		if !want["otlp"] || endpoint == "" {
			t.tp = tracenoop.NewTracerProvider()
			return nil
		}
		opts := otlpOptions(getenv, "TRACES", endpoint, otlptracegrpc.WithEndpointURL, otlptracegrpc.WithEndpoint, otlptracegrpc.WithInsecure)
		if exp, err = otlptracegrpc.New(ctx, opts...); err != nil {
			return fmt.Errorf("telemetry: OTLP trace exporter for %s: %w", endpoint, err)
		}
	}
	t.spans = newSpanQueue(exp, o)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sampler),
		sdktrace.WithSpanProcessor(t.spans),
	)
	t.tp = tp
	t.shutdowns = append(t.shutdowns, tp.Shutdown)
	return nil
}

// otlpOptions are an OTLP exporter's options for the endpoint of one
// signal (TRACES, METRICS): a URL as given, its scheme saying whether TLS;
// a bare host:port over TLS unless OTEL_EXPORTER_OTLP_<signal>_INSECURE or
// OTEL_EXPORTER_OTLP_INSECURE is true.
func otlpOptions[O any](getenv func(string) string, signal, endpoint string, withURL, withEndpoint func(string) O, withInsecure func() O) []O {
	if strings.Contains(endpoint, "://") {
		return []O{withURL(endpoint)}
	}
	opts := []O{withEndpoint(endpoint)}
	if insecure, _ := envBool(getenv, "OTEL_EXPORTER_OTLP_"+signal+"_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"); insecure {
		opts = append(opts, withInsecure())
	}
	return opts
}

func (t *Telemetry) setupMetrics(ctx context.Context, o *Options, getenv func(string) string, res *resource.Resource) error {
	if o.ShareMetrics != nil {
		t.mp, t.gatherer = o.ShareMetrics.mp, o.ShareMetrics.gatherer
		return nil
	}
	var readers []sdkmetric.Reader
	if o.MetricReader != nil {
		readers = append(readers, o.MetricReader)
	}
	want, err := exporterWanted(getenv("OTEL_METRICS_EXPORTER"), "OTEL_METRICS_EXPORTER")
	if err != nil {
		return err
	}
	if endpoint := cmp.Or(getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_ENDPOINT")); want["otlp"] && endpoint != "" {
		opts := otlpOptions(getenv, "METRICS", endpoint, otlpmetricgrpc.WithEndpointURL, otlpmetricgrpc.WithEndpoint, otlpmetricgrpc.WithInsecure)
		exp, err := otlpmetricgrpc.New(ctx, opts...)
		if err != nil {
			return fmt.Errorf("telemetry: OTLP metric exporter for %s: %w", endpoint, err)
		}
		readers = append(readers, sdkmetric.NewPeriodicReader(exp))
	}
	if o.MetricsListen != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		pe, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			return fmt.Errorf("telemetry: prometheus exporter: %w", err)
		}
		readers = append(readers, pe)
		t.gatherer = reg
	}
	if len(readers) == 0 {
		t.mp = metricnoop.NewMeterProvider()
		return nil
	}
	opts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	for _, r := range readers {
		opts = append(opts, sdkmetric.WithReader(r))
	}
	mp := sdkmetric.NewMeterProvider(opts...)
	t.mp = mp
	t.shutdowns = append(t.shutdowns, mp.Shutdown)
	if o.MetricsListen != "" {
		ln, err := net.Listen("tcp", o.MetricsListen)
		if err != nil {
			return fmt.Errorf("telemetry: metrics endpoint: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(t.gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
		t.metricsLn = ln
		t.metricsSv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go t.metricsSv.Serve(ln)
		// First in line at Shutdown: stop serving before the provider goes.
		t.shutdowns = append([]func(context.Context) error{t.metricsSv.Shutdown}, t.shutdowns...)
	}
	return nil
}

// Nop returns a Telemetry that records nothing and exports nothing, for a
// server built without one (tests, library users). Unlike Setup it touches
// no process-wide state.
func Nop() *Telemetry {
	t := &Telemetry{
		service: "corelm",
		tp:      tracenoop.NewTracerProvider(),
		mp:      metricnoop.NewMeterProvider(),
		prop:    propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}
	t.tracer = t.tp.Tracer(ScopeName)
	t.inst, _ = newInstruments(t.mp.Meter(ScopeName)) // the no-op meter makes no errors
	return t
}

// nop is the no-op Telemetry OrNop hands out.
var nop = Nop()

// OrNop is t, or when t is nil a no-op Telemetry shared by every caller: a
// server configured without telemetry calls through it like any other.
func (t *Telemetry) OrNop() *Telemetry {
	if t != nil {
		return t
	}
	return nop
}

// Shutdown stops the /metrics endpoint, exports what is pending and stops
// the providers. It is safe to call more than once.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.once.Do(func() {
		var errs []error
		for _, f := range t.shutdowns {
			if err := f(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs = append(errs, err)
			}
		}
		t.err = errors.Join(errs...)
	})
	return t.err
}

// ForceFlush exports the spans finished so far (tests; before reading a
// trace back from a collector).
func (t *Telemetry) ForceFlush(ctx context.Context) error {
	if tp, ok := t.tp.(*sdktrace.TracerProvider); ok {
		return tp.ForceFlush(ctx)
	}
	return nil
}

// ServiceName is the service.name the telemetry reports.
func (t *Telemetry) ServiceName() string { return t.service }

// Tracer returns a tracer of this service's provider.
func (t *Telemetry) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return t.tp.Tracer(name, opts...)
}

// Meter returns a meter of this service's provider.
func (t *Telemetry) Meter(name string, opts ...metric.MeterOption) metric.Meter {
	return t.mp.Meter(name, opts...)
}

func (t *Telemetry) TracerProvider() trace.TracerProvider      { return t.tp }
func (t *Telemetry) MeterProvider() metric.MeterProvider       { return t.mp }
func (t *Telemetry) Propagator() propagation.TextMapPropagator { return t.prop }

// PrometheusGatherer is the registry behind /metrics (nil when there is none).
func (t *Telemetry) PrometheusGatherer() prometheus.Gatherer {
	if t.gatherer == nil {
		return nil
	}
	return t.gatherer
}

// MetricsAddr is the address the /metrics endpoint listens on (nil when
// there is none); useful with MetricsListen "127.0.0.1:0".
func (t *Telemetry) MetricsAddr() net.Addr {
	if t.metricsLn == nil {
		return nil
	}
	return t.metricsLn.Addr()
}

// Exporting reports whether spans go anywhere: false means the tracer is a
// no-op and no span is ever recorded.
func (t *Telemetry) Exporting() bool { return t.spans != nil }

// DroppedSpans is how many finished spans were dropped because the export
// queue was full (also the metric corelm.telemetry.spans.dropped).
func (t *Telemetry) DroppedSpans() uint64 {
	if t.spans == nil {
		return 0
	}
	return t.spans.dropped.Load()
}

// GRPCOptions are the otelgrpc options for this service's stats handlers:
//
//	grpc.NewServer(grpc.StatsHandler(otelgrpc.NewServerHandler(tel.GRPCOptions()...)))
//	grpc.NewClient(addr, grpc.WithStatsHandler(otelgrpc.NewClientHandler(tel.GRPCOptions()...)))
//
// Health checks, reflection and the loader's model watch are left out of
// the traces: the watch is one stream for as long as the inference service
// runs, not a request (the mapping of what it announces has its own span).
func (t *Telemetry) GRPCOptions() []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithMeterProvider(t.mp),
		otelgrpc.WithPropagators(t.prop),
		otelgrpc.WithFilter(filters.Not(filters.Any(
			filters.HealthCheck(),
			filters.ServicePrefix("grpc.reflection."),
			filters.FullMethodName("/corelm.v1.LoaderService/WatchModels"),
		))),
	}
}

// samplerFromEnv reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG.
func samplerFromEnv(getenv func(string) string) (sdktrace.Sampler, error) {
	name := strings.ToLower(getenv("OTEL_TRACES_SAMPLER"))
	ratio := func() (float64, error) {
		arg := getenv("OTEL_TRACES_SAMPLER_ARG")
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("telemetry: OTEL_TRACES_SAMPLER_ARG=%q: want a ratio in [0, 1]", arg)
		}
		return r, nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		if name == "traceidratio" {
			return sdktrace.TraceIDRatioBased(r), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	}
	return nil, fmt.Errorf("telemetry: OTEL_TRACES_SAMPLER=%q: want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio", name)
}

// exporterWanted reads an OTEL_*_EXPORTER list ("" = otlp).
func exporterWanted(v, name string) (map[string]bool, error) {
	if v == "" {
		return map[string]bool{"otlp": true}, nil
	}
	want := map[string]bool{}
	for e := range strings.SplitSeq(strings.ToLower(v), ",") {
		switch e = strings.TrimSpace(e); e {
		case "otlp", "none", "prometheus":
			want[e] = true
		default:
			return nil, fmt.Errorf("telemetry: %s=%q: corelm exports with otlp (or none)", name, v)
		}
	}
	if want["none"] && len(want) > 1 {
		return nil, fmt.Errorf("telemetry: %s=%q: none with other exporters", name, v)
	}
	return want, nil
}

// envBool reads the first of keys that is set as a boolean.
func envBool(getenv func(string) string, keys ...string) (bool, error) {
	for _, k := range keys {
		if v := getenv(k); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return false, fmt.Errorf("telemetry: %s=%q: want true or false", k, v)
			}
			return b, nil
		}
	}
	return false, nil
}

// newResource names the service: OTEL_SERVICE_NAME, else service.name in
// OTEL_RESOURCE_ATTRIBUTES, else o.ServiceName.
func newResource(ctx context.Context, o *Options, getenv func(string) string) (*resource.Resource, error) {
	var attrs []attribute.KeyValue
	name := o.ServiceName
	if name == "" {
		name = "corelm"
	}
	if ra := getenv("OTEL_RESOURCE_ATTRIBUTES"); ra != "" {
		for kv := range strings.SplitSeq(ra, ",") {
			k, v, ok := strings.Cut(kv, "=")
			k = strings.TrimSpace(k)
			if !ok || k == "" {
				return nil, fmt.Errorf("telemetry: OTEL_RESOURCE_ATTRIBUTES: %q is not key=value", kv)
			}
			v, err := url.PathUnescape(strings.TrimSpace(v))
			if err != nil {
				return nil, fmt.Errorf("telemetry: OTEL_RESOURCE_ATTRIBUTES: %q: %w", kv, err)
			}
			if k == "service.name" {
				name = v
				continue
			}
			attrs = append(attrs, attribute.String(k, v))
		}
	}
	if v := getenv("OTEL_SERVICE_NAME"); v != "" {
		name = v
	}
	attrs = append(attrs, attribute.String("service.name", name))
	if o.Version != "" {
		attrs = append(attrs, attribute.String("service.version", o.Version))
	}
	// resource.New reads no environment here: Getenv has the last word.
	return resource.New(ctx, resource.WithAttributes(attrs...), resource.WithTelemetrySDK(), resource.WithHost(), resource.WithProcessPID())
}

func serviceName(r *resource.Resource) string {
	v, _ := r.Set().Value("service.name")
	return v.AsString()
}
