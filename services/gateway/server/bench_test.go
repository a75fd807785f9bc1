package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	inference "github.com/corelm/corelm/services/inference/server"
)

// BenchmarkGatewayVsDirect measures what the gateway costs a streamed
// generation: time to first token and decode tokens/s of the same greedy
// request made directly with gRPC GenerateStream and through the gateway's
// /v1/completions with stream=true (SSE), the two paths alternating so that
// drift in the machine's load falls on both. It reports the medians per
// path, and the gateway's cost: the medians of gateway minus direct (time
// to first token, whole request) and gateway over direct (tokens/s) of the
// pairs.
//
// The stories model always runs; a 1B-shaped model runs when
// CORELM_BENCH_1B names its file:
//
//	go run ./cmd/corelm synth --like llama-3.2-1b --type Q4_K_M /tmp/l1b.gguf
//	CORELM_BENCH_1B=/tmp/l1b.gguf go test -run '^$' -bench GatewayVsDirect -benchtime 20x ./services/gateway/server
func BenchmarkGatewayVsDirect(b *testing.B) {
	models := []struct {
		name, file string
		maxTokens  int32
	}{{"stories", inference.EmbeddedModel, 64}}
	if f := os.Getenv("CORELM_BENCH_1B"); f != "" {
		models = append(models, struct {
			name, file string
			maxTokens  int32
		}{"llama-3.2-1b", f, 32})
	}
	for _, m := range models {
		b.Run(m.name, func(b *testing.B) {
			url, client := benchStack(b, m.file)
			start := func() *corelmv1.GenerateStart {
				temp := float32(0)
				return &corelmv1.GenerateStart{ModelId: "bench", Prompt: &corelmv1.GenerateStart_Text{Text: prompt},
					MaxTokens: m.maxTokens, Sampling: &corelmv1.SamplingParams{Temperature: &temp}}
			}
			body, err := json.Marshal(map[string]any{"model": "bench", "prompt": prompt, "max_tokens": m.maxTokens,
				"temperature": 0, "stream": true, "stream_options": map[string]any{"include_usage": true}})
			if err != nil {
				b.Fatal(err)
			}
			hc := &http.Client{}
			paths := []struct {
				name string
				run  func(ctx context.Context) (timing, error)
			}{
				{"direct", func(ctx context.Context) (timing, error) { return directTiming(ctx, client, start()) }},
				{"gateway", func(ctx context.Context) (timing, error) { return gatewayTiming(ctx, hc, url, body) }},
			}
			waitReady(b, client, start())
			for _, p := range paths { // warm: connections, first-use allocations
				if _, err := p.run(b.Context()); err != nil {
					b.Fatalf("%s: %v", p.name, err)
				}
			}
			samples := map[string][]timing{}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range paths {
					p := paths[(i+j)%len(paths)] // alternate which path goes first
					t, err := p.run(b.Context())
					if err != nil {
						b.Fatalf("%s: %v", p.name, err)
					}
					samples[p.name] = append(samples[p.name], t)
				}
			}
			b.StopTimer()
			med := map[string]timing{}
			for name, ts := range samples {
				med[name] = medianTiming(ts)
				b.ReportMetric(ms(med[name].ttft), name+"-ttft-ms")
				b.ReportMetric(med[name].tokPerSec, name+"-tok/s")
			}
			// The gateway's cost: medians of the differences within each
			// iteration's pair, which the host's drift between pairs
			// does not reach.
			var added []timing
			for i, g := range samples["gateway"] {
				d := samples["direct"][i]
				added = append(added, timing{ttft: g.ttft - d.ttft, total: g.total - d.total, tokPerSec: g.tokPerSec / d.tokPerSec})
			}
			a := medianTiming(added)
			b.ReportMetric(ms(a.ttft), "added-ttft-ms")
			b.ReportMetric(ms(a.total), "added-total-ms")
			b.ReportMetric(a.tokPerSec, "tok/s-ratio")
		})
	}
}

// timing is one streamed generation as its client saw it.
type timing struct {
	ttft      time.Duration // request sent → first token's text received
	total     time.Duration // request sent → stream ended
	tokPerSec float64       // tokens after the first / (last token - first token)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// medianTiming takes the median of each field on its own.
func medianTiming(ts []timing) timing {
	median := func(f func(timing) float64) float64 {
		v := make([]float64, len(ts))
		for i, t := range ts {
			v[i] = f(t)
		}
		slices.Sort(v)
		if n := len(v); n%2 == 0 {
			return (v[n/2-1] + v[n/2]) / 2
		}
		return v[len(v)/2]
	}
	return timing{
		ttft:      time.Duration(median(func(t timing) float64 { return float64(t.ttft) })),
		total:     time.Duration(median(func(t timing) float64 { return float64(t.total) })),
		tokPerSec: median(func(t timing) float64 { return t.tokPerSec }),
	}
}

func newTiming(t0, first, last, end time.Time, tokens int) timing {
	t := timing{ttft: first.Sub(t0), total: end.Sub(t0)}
	if d := last.Sub(first); tokens > 1 && d > 0 {
		t.tokPerSec = float64(tokens-1) / d.Seconds()
	}
	return t
}

func directTiming(ctx context.Context, c corelmv1.InferenceServiceClient, start *corelmv1.GenerateStart) (timing, error) {
	t0 := time.Now()
	stream, err := c.GenerateStream(ctx, start)
	if err != nil {
		return timing{}, err
	}
	var first, last time.Time
	tokens := 0
	for {
		m, err := stream.Recv()
		if err != nil {
			return timing{}, fmt.Errorf("stream ended without a final frame: %w", err)
		}
		if m.GetToken() != nil {
			last = time.Now()
			if tokens == 0 {
				first = last
			}
			tokens++
		}
		if f := m.GetFinal(); f != nil {
			if err := finalError(f); err != nil {
				return timing{}, err
			}
			return newTiming(t0, first, last, time.Now(), tokens), nil
		}
	}
}

// gatewayTiming streams /v1/completions. Tokens are counted by the usage
// chunk, as a token whose text is held back sends no chunk of its own.
func gatewayTiming(ctx context.Context, hc *http.Client, url string, body []byte) (timing, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/completions", bytes.NewReader(body))
	if err != nil {
		return timing{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return timing{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return timing{}, fmt.Errorf("HTTP %s", resp.Status)
	}
	var first, last time.Time
	tokens := -1
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			end := time.Now()
			if tokens < 0 {
				return timing{}, fmt.Errorf("no usage chunk")
			}
			// Read to EOF, so that the client reuses the connection.
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return timing{}, err
			}
			return newTiming(t0, first, last, end, tokens), nil
		}
		var chunk struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
			Error any `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return timing{}, fmt.Errorf("%w in %q", err, data)
		}
		if chunk.Error != nil {
			return timing{}, fmt.Errorf("error event %s", data)
		}
		if len(chunk.Choices) > 0 && chunk.Choices[0].Text != "" {
			last = time.Now()
			if first.IsZero() {
				first = last
			}
		}
		if chunk.Usage != nil {
			tokens = chunk.Usage.CompletionTokens
		}
	}
	if err := sc.Err(); err != nil {
		return timing{}, err
	}
	return timing{}, fmt.Errorf("stream ended without [DONE]")
}

// benchStack serves file as model "bench" from an in-process inference
// server behind a gateway, and returns the gateway's URL and a direct
// client of inference. Inference gets one kernel thread so that a core is
// left for the clients and the gateway (on two cores, kernels on both would
// make every goroutine wait for a kernel thread and measure the scheduler).
func benchStack(b *testing.B, file string) (string, corelmv1.InferenceServiceClient) {
	b.Helper()
	return serveStack(b, Config{}, inference.Config{Options: inference.Options{Threads: 1}, ModelFile: file, ModelID: "bench"})
}

// waitReady retries start until the model has loaded (a large file is
// refused with Unavailable while it loads).
func waitReady(b *testing.B, c corelmv1.InferenceServiceClient, start *corelmv1.GenerateStart) {
	b.Helper()
	start.MaxTokens = 1
	deadline := time.Now().Add(5 * time.Minute)
	for {
		_, err := directTiming(b.Context(), c, start)
		if err == nil {
			return
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			b.Fatalf("model not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
