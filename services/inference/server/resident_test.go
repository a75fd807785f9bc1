package server

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/services/internal/telemetry"
)

// TestResidentGauges: a model served from a file, packed or GGUF, has the
// resident gauges of its mapping, and stops having them when it closes;
// the embedded model, which no file maps, has none. (The published path
// is TestE2EMetrics's.)
func TestResidentGauges(t *testing.T) {
	tel, err := telemetry.Setup(context.Background(), telemetry.Options{
		Getenv: func(string) string { return "" }, MetricsListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	url := "http://" + tel.MetricsAddr().String() + "/metrics"

	dir := t.TempDir()
	ggufPath := filepath.Join(dir, "stories.gguf")
	if err := os.WriteFile(ggufPath, models.Stories, 0o444); err != nil {
		t.Fatal(err)
	}
	src, err := gguf.Parse(models.Stories)
	if err != nil {
		t.Fatal(err)
	}
	packed, err := pack.Bytes(context.Background(), src, pack.Options{Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	packPath := filepath.Join(dir, "stories.1.clm")
	if err := os.WriteFile(packPath, packed, 0o444); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		id, path string
		size     int
	}{
		{"gguf", ggufPath, len(models.Stories)},
		{"packed", packPath, len(packed)},
		{"embedded", EmbeddedModel, 0},
	} {
		e, err := openFile(tt.path, tt.id, modelConfig{threads: 1, tel: tel})
		if err != nil {
			t.Fatalf("%s: %v", tt.id, err)
		}
		m := servicetest.Scrape(t, url)
		resident, n := m.Value("corelm_model_resident_bytes", "gen_ai_request_model", tt.id)
		_, nh := m.Value("corelm_model_resident_huge_pages_bytes", "gen_ai_request_model", tt.id)
		switch {
		case tt.size == 0 && (n != 0 || nh != 0):
			t.Errorf("%s: %d and %d resident series for a model no file maps", tt.id, n, nh)
		case tt.size > 0 && (n != 1 || nh != 1 || resident <= 0 || resident > float64(tt.size+os.Getpagesize())):
			t.Errorf("%s: resident %v bytes (%d series, %d huge-page series) of a %d-byte file", tt.id, resident, n, nh, tt.size)
		}
		e.unobserve()
		e.close()
		if _, n := servicetest.Scrape(t, url).Value("corelm_model_resident_bytes", "gen_ai_request_model", tt.id); n != 0 {
			t.Errorf("%s: resident gauge still reported after close", tt.id)
		}
	}
}
