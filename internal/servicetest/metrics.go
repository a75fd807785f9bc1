package servicetest

import (
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of a Prometheus /metrics endpoint: the metric
// families by name.
type Metrics map[string]*dto.MetricFamily

// Scrape reads the Prometheus text at url.
func Scrape(t testing.TB, url string) Metrics {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	return fams
}

// ScrapeUntil scrapes url until ready accepts the scrape or within has
// passed, and returns the last scrape. It is for what a service records
// after the client has its answer: otelgrpc records a server call's
// duration only once the status is on the wire.
func ScrapeUntil(t testing.TB, url string, within time.Duration, ready func(Metrics) bool) Metrics {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		m := Scrape(t, url)
		if ready(m) || time.Now().After(deadline) {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// series returns the samples of family name whose labels include every
// name/value pair of labels.
func (m Metrics) series(name string, labels []string) []*dto.Metric {
	f := m[name]
	if f == nil {
		return nil
	}
	var out []*dto.Metric
next:
	for _, s := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range s.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		out = append(out, s)
	}
	return out
}

// Value is the sum of the counter, gauge or untyped samples of family name
// whose labels include the pairs in labels ("name", "value", ...), and how
// many series matched.
func (m Metrics) Value(name string, labels ...string) (v float64, n int) {
	for _, s := range m.series(name, labels) {
		switch {
		case s.Counter != nil:
			v += s.GetCounter().GetValue()
		case s.Gauge != nil:
			v += s.GetGauge().GetValue()
		case s.Untyped != nil:
			v += s.GetUntyped().GetValue()
		default:
			continue
		}
		n++
	}
	return v, n
}

// Histogram is the total count and sum of the histogram family name's
// series whose labels include the pairs in labels, and how many matched.
func (m Metrics) Histogram(name string, labels ...string) (count uint64, sum float64, n int) {
	for _, s := range m.series(name, labels) {
		if h := s.GetHistogram(); h != nil {
			count += h.GetSampleCount()
			sum += h.GetSampleSum()
			n++
		}
	}
	return count, sum, n
}
