package jaegertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Trace is a trace as Jaeger's query API returns it (/api/traces, the v1
// JSON model).
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
}

// Span is one span of a Trace. Times are microseconds since the epoch.
type Span struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []Reference `json:"references"`
	StartTime     int64       `json:"startTime"`
	Duration      int64       `json:"duration"`
	Tags          []KeyValue  `json:"tags"`
	Logs          []Log       `json:"logs"`
	ProcessID     string      `json:"processID"`
	Warnings      []string    `json:"warnings"`
}

// Reference ties a span to another: CHILD_OF for its parent, FOLLOWS_FROM
// for an OpenTelemetry link.
type Reference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// KeyValue is a tag or a log field. Numbers are json.Number.
type KeyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Log is a span event.
type Log struct {
	Timestamp int64      `json:"timestamp"`
	Fields    []KeyValue `json:"fields"`
}

// Process is the service a span came from.
type Process struct {
	ServiceName string     `json:"serviceName"`
	Tags        []KeyValue `json:"tags"`
}

// Trace fetches a trace by its id (32 hex digits), polling until it has
// at least minSpans spans: Jaeger stores spans a little after it receives
// them, and a trace's spans may arrive in several batches. It gives up when
// ctx ends, or after 30 seconds if ctx has no deadline.
func (j *Jaeger) Trace(ctx context.Context, traceID string, minSpans int) (*Trace, error) {
	var last *Trace
	err := j.poll(ctx, func() (bool, error) {
		var resp struct {
			Data []Trace `json:"data"`
		}
		found, err := j.get(ctx, "/api/traces/"+url.PathEscape(traceID), &resp)
		if err != nil || !found || len(resp.Data) == 0 {
			return false, err
		}
		last = &resp.Data[0]
		return len(last.Spans) >= max(minSpans, 1), nil
	})
	if err != nil {
		n := 0
		if last != nil {
			n = len(last.Spans)
		}
		return last, fmt.Errorf("jaegertest: trace %s: %d spans, want %d: %w", traceID, n, minSpans, err)
	}
	return last, nil
}

// Traces returns the recent traces of a service, polling until there are
// at least minTraces (same deadline as Trace).
func (j *Jaeger) Traces(ctx context.Context, service string, minTraces int) ([]Trace, error) {
	var last []Trace
	q := url.Values{"service": {service}, "limit": {"1000"}, "lookback": {"1h"}}
	err := j.poll(ctx, func() (bool, error) {
		var resp struct {
			Data []Trace `json:"data"`
		}
		if _, err := j.get(ctx, "/api/traces?"+q.Encode(), &resp); err != nil {
			return false, err
		}
		last = resp.Data
		return len(last) >= max(minTraces, 1), nil
	})
	if err != nil {
		return last, fmt.Errorf("jaegertest: traces of %s: %d, want %d: %w", service, len(last), minTraces, err)
	}
	return last, nil
}

// poll calls try every 100ms until it reports done or fails.
func (j *Jaeger) poll(ctx context.Context, try func() (bool, error)) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		done, err := try()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-j.exited:
			return fmt.Errorf("jaeger exited (%v)", j.cmd.ProcessState)
		case <-tick.C:
		}
	}
}

// get decodes the JSON at path into v; a 404 is not an error but found false.
func (j *Jaeger) get(ctx context.Context, path string, v any) (found bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.QueryURL()+path, nil)
	if err != nil {
		return false, err
	}
	resp, err := j.http.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return false, nil
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return false, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	return true, dec.Decode(v)
}

// SpanByID returns the span with the given id, or nil.
func (t *Trace) SpanByID(id string) *Span {
	for i := range t.Spans {
		if t.Spans[i].SpanID == id {
			return &t.Spans[i]
		}
	}
	return nil
}

// Named returns the spans with the given operation name.
func (t *Trace) Named(name string) []*Span {
	return t.Find(func(s *Span) bool { return s.OperationName == name })
}

// Find returns the spans for which keep is true, in the trace's order.
func (t *Trace) Find(keep func(*Span) bool) []*Span {
	var out []*Span
	for i := range t.Spans {
		if keep(&t.Spans[i]) {
			out = append(out, &t.Spans[i])
		}
	}
	return out
}

// Children returns the spans whose parent is the span with id parent.
func (t *Trace) Children(parent string) []*Span {
	return t.Find(func(s *Span) bool { return s.Parent() == parent })
}

// Service is the service name of s's process.
func (t *Trace) Service(s *Span) string { return t.Processes[s.ProcessID].ServiceName }

// Parent is the id of s's parent span ("" for a root).
func (s *Span) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Links are s's FOLLOWS_FROM references: its OpenTelemetry links.
func (s *Span) Links() []Reference {
	var out []Reference
	for _, r := range s.References {
		if r.RefType == "FOLLOWS_FROM" {
			out = append(out, r)
		}
	}
	return out
}

// Tag returns the value of the tag key.
func (s *Span) Tag(key string) (any, bool) {
	for _, kv := range s.Tags {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// TagString returns a tag as a string (numbers and booleans formatted).
func (s *Span) TagString(key string) string {
	v, ok := s.Tag(key)
	if !ok {
		return ""
	}
	if str, ok := v.(string); ok {
		return str
	}
	return fmt.Sprint(v)
}

// TagInt returns an integer tag; ok is false when it is absent or not an
// integer.
func (s *Span) TagInt(key string) (int64, bool) {
	v, ok := s.Tag(key)
	if !ok {
		return 0, false
	}
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case string:
		i, err := strconv.ParseInt(n, 10, 64)
		return i, err == nil
	}
	return 0, false
}

// Event returns the first log (span event) whose "event" field is name.
func (s *Span) Event(name string) *Log {
	for i, l := range s.Logs {
		for _, f := range l.Fields {
			if f.Key == "event" && f.Value == name {
				return &s.Logs[i]
			}
		}
	}
	return nil
}

// Start is when s started.
func (s *Span) Start() time.Time { return time.UnixMicro(s.StartTime) }

// Elapsed is how long s lasted.
func (s *Span) Elapsed() time.Duration { return time.Duration(s.Duration) * time.Microsecond }
