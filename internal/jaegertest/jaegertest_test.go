package jaegertest

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestRoundTrip(t *testing.T) {
	j := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(j.OTLPEndpoint()))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "jaegertest"))),
	)
	tr := tp.Tracer("jaegertest")
	_, other := tr.Start(ctx, "other")
	other.End()
	rctx, root := tr.Start(ctx, "root", trace.WithAttributes(attribute.Int64("answer", 42), attribute.String("kind", "test")))
	t0 := time.Now()
	_, child := tr.Start(rctx, "child", trace.WithTimestamp(t0), trace.WithLinks(trace.Link{SpanContext: other.SpanContext()}))
	child.AddEvent("half", trace.WithTimestamp(t0.Add(time.Millisecond)))
	child.End(trace.WithTimestamp(t0.Add(2 * time.Millisecond)))
	root.End()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	id := root.SpanContext().TraceID().String()
	got, err := j.Trace(ctx, id, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got.TraceID != id || len(got.Spans) != 2 {
		t.Fatalf("trace %s with %d spans", got.TraceID, len(got.Spans))
	}
	r, c := got.Named("root"), got.Named("child")
	if len(r) != 1 || len(c) != 1 {
		t.Fatalf("root %d, child %d", len(r), len(c))
	}
	if r[0].Parent() != "" || c[0].Parent() != r[0].SpanID || len(got.Children(r[0].SpanID)) != 1 {
		t.Errorf("child's parent %q, root %q", c[0].Parent(), r[0].SpanID)
	}
	if n, ok := r[0].TagInt("answer"); !ok || n != 42 || r[0].TagString("kind") != "test" {
		t.Errorf("root tags %+v", r[0].Tags)
	}
	if got.Service(r[0]) != "jaegertest" {
		t.Errorf("service %q", got.Service(r[0]))
	}
	links := c[0].Links()
	if len(links) != 1 || links[0].SpanID != other.SpanContext().SpanID().String() || links[0].TraceID != other.SpanContext().TraceID().String() {
		t.Errorf("child's links %+v", links)
	}
	if c[0].Elapsed() != 2*time.Millisecond || c[0].Start().UnixMicro() != t0.UnixMicro() {
		t.Errorf("child %v from %v", c[0].Elapsed(), c[0].Start())
	}
	if e := c[0].Event("half"); e == nil || e.Timestamp != t0.Add(time.Millisecond).UnixMicro() {
		t.Errorf("child's event %+v", e)
	}
	traces, err := j.Traces(ctx, "jaegertest", 2)
	if err != nil || len(traces) != 2 {
		t.Errorf("Traces: %d, %v", len(traces), err)
	}

	// An unknown trace: Trace gives up when ctx does.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, err := j.Trace(short, hex.EncodeToString(make([]byte, 16)), 1); err == nil {
		t.Error("an unknown trace was found")
	}

	// Metrics over OTLP go to the same endpoint without being refused.
	mexp, err := otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpointURL(j.OTLPEndpoint()))
	if err != nil {
		t.Fatal(err)
	}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	c1, _ := mp.Meter("jaegertest").Int64Counter("things")
	c1.Add(ctx, 1)
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	if err := mexp.Export(ctx, &rm); err != nil {
		t.Errorf("metrics export: %v", err)
	}
	mexp.Shutdown(ctx)
}

// TestLoopbackOnly checks that every socket Jaeger listens on is bound to
// 127.0.0.1.
func TestLoopbackOnly(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	j := Start(t)
	pid := j.cmd.Process.Pid
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	listening := 0
	for _, table := range []string{"tcp", "tcp6", "udp", "udp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			state, local := fields[3], fields[1]
			if strings.HasPrefix(table, "tcp") && state != "0A" { // LISTEN
				continue
			}
			listening++
			if !strings.HasPrefix(local, "0100007F:") { // 127.0.0.1, little-endian hex
				t.Errorf("jaeger listens on %s %s (not 127.0.0.1)", table, local)
			}
		}
		f.Close()
	}
	if listening != 6 {
		t.Errorf("jaeger listens on %d sockets, want the 6 configured", listening)
	}
}
