package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"

	"github.com/corelm/corelm/internal/servicetest"
)

// TestServeAllMetrics: serve-all has one /metrics for both services: after
// a generation it has the generation's metrics and the loader's load of
// the model it serves.
func TestServeAllMetrics(t *testing.T) {
	p, _ := startServeAll(t, "")
	wantGreedy(t, p, storiesID)

	var url string
	sc := bufio.NewScanner(strings.NewReader(p.Logs()))
	for sc.Scan() {
		var rec struct{ Msg, Addr, Service string }
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "serving metrics" {
			if url != "" {
				t.Fatalf("two metrics endpoints:\n%s", p.Logs())
			}
			url = rec.Addr
		}
	}
	if url == "" {
		t.Fatalf("no \"serving metrics\" line:\n%s", p.Logs())
	}
	m := servicetest.Scrape(t, url)
	if count, _, n := m.Histogram("gen_ai_server_request_duration_seconds", "gen_ai_request_model", storiesID); count != 1 || n != 1 {
		t.Errorf("request duration: count %d in %d series, want one generation", count, n)
	}
	if v, _ := m.Value("corelm_tokens_total", "gen_ai_request_model", storiesID, "gen_ai_token_type", "output"); v != 32 {
		t.Errorf("output tokens %v, want 32", v)
	}
	if count, _, n := m.Histogram("corelm_loader_load_duration_seconds", "corelm_model", storiesID); count != 1 || n != 1 {
		t.Errorf("loader load duration: count %d in %d series, want the load of %s", count, n, storiesID)
	}
	if v, _ := m.Value("corelm_loader_load_bytes_total", "corelm_model", storiesID); v <= 0 {
		t.Errorf("loader bytes %v", v)
	}
}
