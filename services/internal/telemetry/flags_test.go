package telemetry

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/corelm/corelm/internal/envflag"
	"github.com/corelm/corelm/pkg/runtime/sched"
)

// TestFlags: the flags bind to the environment with the caller's metrics
// default, a bad log format is refused, and Setup serves /metrics at the
// address it logs; a Telemetry sharing another's metrics opens none.
func TestFlags(t *testing.T) {
	fs := envflag.New("test", "T_", func(k string) string { return map[string]string{"T_LOG_LEVEL": "debug"}[k] })
	var f Flags
	f.Bind(fs, "127.0.0.1:0")
	if err := fs.Parse([]string{"--log-format", "text"}); err != nil {
		t.Fatal(err)
	}
	if f.MetricsListen != "127.0.0.1:0" || f.LogFormat != "text" || f.LogLevel != slog.LevelDebug {
		t.Fatalf("flags %+v", f)
	}
	var logs bytes.Buffer
	log, err := f.Logger(&logs)
	if err != nil {
		t.Fatal(err)
	}
	tel, err := f.Setup(t.Context(), "corelm-test", env(), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tel.ShutdownWithin(0)
	if tel.MetricsAddr() == nil || !strings.Contains(logs.String(), "msg=\"serving metrics\" addr=http://"+tel.MetricsAddr().String()+"/metrics") {
		t.Fatalf("metrics at %v; log:\n%s", tel.MetricsAddr(), logs.String())
	}
	resp, err := http.Get("http://" + tel.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	shared, err := f.Setup(t.Context(), "corelm-loader", env(), log, tel)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.ShutdownWithin(0)
	if shared.MetricsAddr() != nil {
		t.Errorf("a Telemetry sharing metrics opened %v", shared.MetricsAddr())
	}

	bad := envflag.New("test", "T_", env())
	(&Flags{}).Bind(bad, "")
	if err := bad.Parse([]string{"--log-format", "xml"}); err == nil || !strings.Contains(err.Error(), "xml") {
		t.Errorf("--log-format xml: %v", err)
	}
}

// TestNop: a Nop Telemetry takes a whole generation and records nothing.
func TestNop(t *testing.T) {
	tel := Nop()
	if tel.Exporting() {
		t.Error("Nop exports")
	}
	fs := newFakeSched(tel.SchedulerHooks("m"))
	defer tel.RegisterModel("m", func() sched.Stats { return sched.Stats{} }, nil)()
	_, g := tel.StartGeneration(context.Background(), GenerationStart{Model: "m", Level: LevelLayer})
	if g.Span().IsRecording() || g.TraceLayers() {
		t.Error("Nop records")
	}
	id := fs.submit(g, 4, 0)
	fs.step(0, 4, 0, stepTrace(2), id)
	fs.finish(id, sched.Final{})
	g.End()
}
