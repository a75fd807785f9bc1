package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/corelm/corelm/internal/leakcheck"
	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	inference "github.com/corelm/corelm/services/inference/server"
)

// stack is a gateway in front of an in-process inference server on the
// embedded stories model.
type stack struct {
	url    string
	client corelmv1.InferenceServiceClient // inference, directly
}

func startStack(t *testing.T, cfg Config, opts inference.Options) *stack {
	t.Helper()
	if opts.Threads == 0 {
		opts.Threads = 1
	}
	url, client := serveStack(t, cfg, inference.Config{Options: opts, ModelFile: inference.EmbeddedModel, ModelID: "stories"})
	return &stack{url: url, client: client}
}

// serveStack serves icfg from an in-process inference server behind a
// gateway configured as cfg, and returns the gateway's URL and a direct
// client of inference; both stop at the test's end.
func serveStack(tb testing.TB, cfg Config, icfg inference.Config) (string, corelmv1.InferenceServiceClient) {
	tb.Helper()
	icfg.Grace = 10 * time.Second
	conn, _ := servicetest.Serve(tb, func(ctx context.Context, lis net.Listener) error {
		return inference.Serve(ctx, lis, icfg)
	})
	cfg.Inference = conn.Target()
	return serveGateway(tb, cfg), corelmv1.NewInferenceServiceClient(conn)
}

// serveGateway serves a gateway configured as cfg over HTTP/1.1 and
// cleartext HTTP/2, as Serve does, until the test ends, and returns its
// URL.
func serveGateway(tb testing.TB, cfg Config) string {
	tb.Helper()
	gw, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { gw.Close() })
	ts := httptest.NewUnstartedServer(gw)
	ts.Config.Protocols = new(http.Protocols)
	ts.Config.Protocols.SetHTTP1(true)
	ts.Config.Protocols.SetUnencryptedHTTP2(true)
	ts.Start()
	tb.Cleanup(ts.Close)
	return ts.URL
}

// expectGET checks the status code of a GET of each path below base.
func expectGET(t *testing.T, base string, want map[string]int) {
	t.Helper()
	for path, code := range want {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != code {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, code)
		}
	}
}

// post sends body as JSON and returns the response (closed at the test's
// end).
func post(t *testing.T, url string, body any, header ...string) *http.Response {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func decode[T any](t *testing.T, resp *http.Response) T {
	t.Helper()
	var v T
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	return v
}

// events reads a server-sent event stream: each "data:" payload, in order.
func events(t *testing.T, r io.Reader) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			out = append(out, d)
		} else if line != "" && !strings.HasPrefix(line, ":") {
			t.Errorf("unexpected SSE line %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

const prompt = "Once upon a time"

// greedyStream is the text a direct GenerateStream call makes of prompt.
func greedyStream(t *testing.T, c corelmv1.InferenceServiceClient, start *corelmv1.GenerateStart) (string, *corelmv1.GenerateFinal) {
	t.Helper()
	stream, err := c.GenerateStream(t.Context(), start)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	var final *corelmv1.GenerateFinal
	err = servicetest.RecvAll(stream.Recv, func(m *corelmv1.GenerateResponse) {
		b.WriteString(m.GetToken().GetText())
		if f := m.GetFinal(); f != nil {
			b.WriteString(f.GetText())
			final = f
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String(), final
}

func TestCompletionsMatchGRPC(t *testing.T) {
	leakcheck.Check(t)
	st := startStack(t, Config{}, inference.Options{})
	temp := float32(0)
	want, wantFinal := greedyStream(t, st.client, &corelmv1.GenerateStart{ModelId: "stories",
		Prompt: &corelmv1.GenerateStart_Text{Text: prompt}, MaxTokens: 24, Sampling: &corelmv1.SamplingParams{Temperature: &temp}})
	_, _, reference := servicetest.Greedy(t, prompt, 24)
	if want != reference {
		t.Fatalf("direct gRPC %q, reference %q", want, reference)
	}

	resp := post(t, st.url+"/v1/completions", map[string]any{"model": "stories", "prompt": prompt, "max_tokens": 24, "temperature": 0})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := decode[textCompletion](t, resp)
	if got.Object != "text_completion" || !strings.HasPrefix(got.ID, "cmpl-") || got.Model != "stories" || len(got.Choices) != 1 {
		t.Fatalf("completion %+v", got)
	}
	if got.Choices[0].Text != want || *got.Choices[0].FinishReason != "length" {
		t.Errorf("text %q (%s), want %q (length)", got.Choices[0].Text, *got.Choices[0].FinishReason, want)
	}
	u := got.Usage.(map[string]any)
	if int32(u["completion_tokens"].(float64)) != wantFinal.GetUsage().GetCompletionTokens() ||
		int32(u["prompt_tokens"].(float64)) != wantFinal.GetUsage().GetPromptTokens() ||
		u["prompt_tokens_details"].(map[string]any)["cached_tokens"] == nil {
		t.Errorf("usage %v, want %v", u, wantFinal.GetUsage())
	}

	// Streamed: the same text in pieces, a finish chunk, the usage chunk,
	// then [DONE].
	resp = post(t, st.url+"/v1/completions", map[string]any{"model": "stories", "prompt": prompt, "max_tokens": 24, "temperature": 0,
		"stream": true, "stream_options": map[string]any{"include_usage": true}})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	evs := events(t, resp.Body)
	if len(evs) < 3 || evs[len(evs)-1] != "[DONE]" {
		t.Fatalf("events %q", evs)
	}
	var text strings.Builder
	var reason string
	for i, e := range evs[:len(evs)-2] {
		var c textCompletion
		if err := json.Unmarshal([]byte(e), &c); err != nil || c.Object != "text_completion" || len(c.Choices) != 1 {
			t.Fatalf("chunk %d: %v %s", i, err, e)
		}
		if !strings.Contains(e, `"usage":null`) {
			t.Errorf("chunk %d lacks usage null with include_usage: %s", i, e)
		}
		text.WriteString(c.Choices[0].Text)
		if c.Choices[0].FinishReason != nil {
			reason = *c.Choices[0].FinishReason
		}
	}
	if text.String() != want || reason != "length" {
		t.Errorf("streamed %q (%s), want %q (length)", text.String(), reason, want)
	}
	var last struct {
		Choices []any `json:"choices"`
		Usage   usage `json:"usage"`
	}
	if err := json.Unmarshal([]byte(evs[len(evs)-2]), &last); err != nil || len(last.Choices) != 0 ||
		last.Usage.CompletionTokens != wantFinal.GetUsage().GetCompletionTokens() ||
		last.Usage.TotalTokens != last.Usage.PromptTokens+last.Usage.CompletionTokens {
		t.Errorf("usage chunk %s", evs[len(evs)-2])
	}
}

func TestChat(t *testing.T) {
	leakcheck.Check(t)
	st := startStack(t, Config{}, inference.Options{})
	msgs := []map[string]any{
		{"role": "system", "content": "You tell stories."},
		{"role": "user", "content": []map[string]any{{"type": "text", "text": "Tell me "}, {"type": "text", "text": "a story."}}},
	}
	temp := float32(0)
	want, _ := greedyStream(t, st.client, &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 20,
		Sampling: &corelmv1.SamplingParams{Temperature: &temp},
		Prompt: &corelmv1.GenerateStart_Chat{Chat: &corelmv1.ChatPrompt{AddGenerationPrompt: true, Messages: []*corelmv1.ChatMessage{
			{Role: "system", Content: "You tell stories."}, {Role: "user", Content: "Tell me a story."}}}}})

	resp := post(t, st.url+"/v1/chat/completions", map[string]any{"model": "stories", "messages": msgs, "max_completion_tokens": 20,
		"temperature": 0, "logprobs": true, "top_logprobs": 2})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := decode[chatCompletion](t, resp)
	if got.Object != "chat.completion" || !strings.HasPrefix(got.ID, "chatcmpl-") || len(got.Choices) != 1 {
		t.Fatalf("chat %+v", got)
	}
	ch := got.Choices[0]
	if ch.Message.Role != "assistant" || *ch.Message.Content != want {
		t.Errorf("message %+v %q, want %q", ch.Message, *ch.Message.Content, want)
	}
	if ch.Logprobs == nil || len(ch.Logprobs.Content) == 0 || len(ch.Logprobs.Content[0].TopLogprobs) != 2 {
		t.Errorf("logprobs %+v", ch.Logprobs)
	}

	resp = post(t, st.url+"/v1/chat/completions", map[string]any{"model": "stories", "messages": msgs, "max_tokens": 20,
		"temperature": 0, "stream": true})
	evs := events(t, resp.Body)
	if len(evs) < 3 || evs[len(evs)-1] != "[DONE]" {
		t.Fatalf("events %q", evs)
	}
	var text strings.Builder
	for i, e := range evs[:len(evs)-1] {
		var c chatCompletion
		if err := json.Unmarshal([]byte(e), &c); err != nil || c.Object != "chat.completion.chunk" || len(c.Choices) != 1 || c.ID != evsID(t, evs[0]) {
			t.Fatalf("chunk %d: %v %s", i, err, e)
		}
		if strings.Contains(e, `"usage"`) {
			t.Errorf("chunk %d has usage without include_usage: %s", i, e)
		}
		d := c.Choices[0].Delta
		switch {
		case i == 0:
			if d.Role != "assistant" || d.Content == nil || *d.Content != "" {
				t.Errorf("first chunk %s", e)
			}
		case i == len(evs)-2:
			if c.Choices[0].FinishReason == nil || d.Content != nil {
				t.Errorf("last chunk %s", e)
			}
		default:
			if d.Content == nil || c.Choices[0].FinishReason != nil {
				t.Errorf("chunk %d: %s", i, e)
			}
			text.WriteString(*d.Content)
		}
	}
	if text.String() != want {
		t.Errorf("streamed %q, want %q", text.String(), want)
	}
}

func evsID(t *testing.T, e string) string {
	var c struct{ ID string }
	json.Unmarshal([]byte(e), &c)
	return c.ID
}

func TestModels(t *testing.T) {
	leakcheck.Check(t)
	st := startStack(t, Config{}, inference.Options{})
	resp, err := http.Get(st.url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	list := decode[modelList](t, resp)
	resp.Body.Close()
	if list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != "stories" || list.Data[0].Object != "model" {
		t.Errorf("models %+v", list)
	}
	resp, err = http.Get(st.url + "/v1/models/stories")
	if err != nil {
		t.Fatal(err)
	}
	if m := decode[modelObject](t, resp); resp.StatusCode != 200 || m.ID != "stories" || m.MaxModelLen == 0 {
		t.Errorf("model %d %+v", resp.StatusCode, m)
	}
	resp.Body.Close()
	expectGET(t, st.url, map[string]int{"/v1/models/nope": 404, "/healthz": 200, "/readyz": 200, "/v1/nothing": 404})
}

// TestRequestErrors: what inference refuses and what the gateway refuses
// itself come back as OpenAI error bodies with their HTTP status.
func TestRequestErrors(t *testing.T) {
	leakcheck.Check(t)
	st := startStack(t, Config{MaxBody: 4096}, inference.Options{})
	chat := func(extra map[string]any) map[string]any {
		m := map[string]any{"model": "stories", "messages": []map[string]any{{"role": "user", "content": "hi"}}, "max_tokens": 4}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name   string
		path   string
		body   any
		status int
		param  string
		code   string
	}{
		{"unknown model", "/v1/chat/completions", chat(map[string]any{"model": "nope"}), 404, "model", "model_not_found"},
		{"unknown model streaming", "/v1/chat/completions", chat(map[string]any{"model": "nope", "stream": true}), 404, "model", "model_not_found"},
		{"n=2", "/v1/chat/completions", chat(map[string]any{"n": 2}), 400, "n", ""},
		{"no model", "/v1/chat/completions", chat(map[string]any{"model": ""}), 400, "model", ""},
		{"no messages", "/v1/chat/completions", chat(map[string]any{"messages": []any{}}), 400, "messages", ""},
		{"image part", "/v1/chat/completions", chat(map[string]any{"messages": []map[string]any{{"role": "user",
			"content": []map[string]any{{"type": "image_url", "image_url": map[string]any{"url": "x"}}}}}}), 400, "messages[0].content", ""},
		{"bad temperature", "/v1/chat/completions", chat(map[string]any{"temperature": -1}), 400, "", ""},
		{"bad top_p", "/v1/completions", map[string]any{"model": "stories", "prompt": "a", "top_p": 2}, 400, "", ""},
		{"two prompts", "/v1/completions", map[string]any{"model": "stories", "prompt": []string{"a", "b"}}, 400, "prompt", ""},
		{"bad logit_bias", "/v1/completions", map[string]any{"model": "stories", "prompt": "a", "logit_bias": map[string]any{"x": 1}}, 400, "logit_bias", ""},
		{"not json", "/v1/completions", "{", 400, "", ""},
		{"too large", "/v1/completions", map[string]any{"model": "stories", "prompt": strings.Repeat("a", 5000)}, 413, "", "request_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var resp *http.Response
			if s, ok := tt.body.(string); ok {
				var err error
				resp, err = http.Post(st.url+tt.path, "application/json", strings.NewReader(s))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
			} else {
				resp = post(t, st.url+tt.path, tt.body)
			}
			if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("status %d %s, want %d", resp.StatusCode, resp.Header.Get("Content-Type"), tt.status)
			}
			e := decode[apiError](t, resp)
			if e.Error.Message == "" || e.Error.Type == "" {
				t.Errorf("error %+v", e)
			}
			if tt.param != "" && (e.Error.Param == nil || *e.Error.Param != tt.param) {
				t.Errorf("param %v, want %s (%s)", e.Error.Param, tt.param, e.Error.Message)
			}
			if tt.code != "" && (e.Error.Code == nil || *e.Error.Code != tt.code) {
				t.Errorf("code %v, want %s", e.Error.Code, tt.code)
			}
		})
	}
}

// TestDisconnectCancels: a client that closes the connection mid-stream
// stops its generation: inference shows no active sequence and no KV in
// use soon after, long before the generation would have ended.
func TestDisconnectCancels(t *testing.T) {
	leakcheck.Check(t)
	st := startStack(t, Config{}, inference.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	b, _ := json.Marshal(map[string]any{"model": "stories", "prompt": prompt, "max_tokens": 0, "stream": true,
		"temperature": 0, "logit_bias": map[string]float32{"2": -100}}) // no EOS: runs to the full context
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, st.url+"/v1/completions", bytes.NewReader(b))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	for n := 0; n < 3; {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "data: ") {
			n++
		}
	}
	status, err := st.client.GetStatus(t.Context(), &corelmv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if status.GetActiveSequences() != 1 {
		t.Fatalf("status while streaming: %v", status)
	}
	cancel() // the HTTP client goes away
	servicetest.WaitIdle(t, st.client, 2*time.Second)
}

func TestAuth(t *testing.T) {
	leakcheck.Check(t)
	st := startStack(t, Config{AuthToken: "sesame"}, inference.Options{})
	body := map[string]any{"model": "stories", "prompt": "a", "max_tokens": 1}
	if resp := post(t, st.url+"/v1/completions", body); resp.StatusCode != 401 {
		t.Errorf("no token: %d", resp.StatusCode)
	} else if e := decode[apiError](t, resp); e.Error.Type != "authentication_error" {
		t.Errorf("no token: %+v", e)
	}
	if resp := post(t, st.url+"/v1/completions", body, "Authorization", "Bearer wrong"); resp.StatusCode != 401 {
		t.Errorf("wrong token: %d", resp.StatusCode)
	}
	if resp := post(t, st.url+"/v1/completions", body, "Authorization", "Bearer sesame"); resp.StatusCode != 200 {
		t.Errorf("token: %d", resp.StatusCode)
	}
	if resp, err := http.Get(st.url + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("healthz without token: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

func TestCORS(t *testing.T) {
	gw, err := New(Config{Inference: "127.0.0.1:1", CORSOrigins: []string{"https://app.example"}})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	for origin, want := range map[string]string{"https://app.example": "https://app.example", "https://evil.example": ""} {
		req := httptest.NewRequest(http.MethodOptions, "/v1/chat/completions", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		rec := httptest.NewRecorder()
		gw.ServeHTTP(rec, req)
		if got := rec.Header().Get("Access-Control-Allow-Origin"); got != want {
			t.Errorf("origin %s: allowed %q, want %q", origin, got, want)
		}
		if want != "" && (rec.Code != 204 || rec.Header().Get("Access-Control-Allow-Headers") != "authorization, content-type") {
			t.Errorf("preflight %d %v", rec.Code, rec.Header())
		}
	}
	// Off by default.
	gw2, _ := New(Config{Inference: "127.0.0.1:1"})
	defer gw2.Close()
	req := httptest.NewRequest(http.MethodGet, "/healthz", nil)
	req.Header.Set("Origin", "https://app.example")
	rec := httptest.NewRecorder()
	gw2.ServeHTTP(rec, req)
	if rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS headers without --cors-origins: %v", rec.Header())
	}
}

// TestHeldBackText: output the stream decoder holds back to the end (here
// a prefix of a stop string that the generation never completes) comes in
// GenerateFinal.text, every token frame is a real token, and the gateway's
// completion, whole and streamed, includes it.
func TestHeldBackText(t *testing.T) {
	leakcheck.Check(t)
	st := startStack(t, Config{}, inference.Options{})
	_, _, full := servicetest.Greedy(t, prompt, 12)
	if len(full) < 4 {
		t.Fatalf("greedy output %q too short", full)
	}
	tail := full[len(full)-3:]
	stop := tail + "\x01never"
	temp := float32(0)
	stream, err := st.client.GenerateStream(t.Context(), &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 12,
		Prompt: &corelmv1.GenerateStart_Text{Text: prompt}, Sampling: &corelmv1.SamplingParams{Temperature: &temp}, Stop: []string{stop}})
	if err != nil {
		t.Fatal(err)
	}
	var tokens strings.Builder
	var final *corelmv1.GenerateFinal
	if err := servicetest.RecvAll(stream.Recv, func(m *corelmv1.GenerateResponse) {
		if tk := m.GetToken(); tk != nil {
			if tk.GetId() < 0 {
				t.Errorf("token frame without a token: %v", tk)
			}
			tokens.WriteString(tk.GetText())
		}
		if f := m.GetFinal(); f != nil {
			final = f
		}
	}); err != nil {
		t.Fatal(err)
	}
	if final.GetText() != tail || tokens.String()+final.GetText() != full {
		t.Errorf("tokens %q + final %q, want %q + %q", tokens.String(), final.GetText(), full[:len(full)-3], tail)
	}
	for _, streamed := range []bool{false, true} {
		resp := post(t, st.url+"/v1/completions", map[string]any{"model": "stories", "prompt": prompt, "max_tokens": 12,
			"temperature": 0, "stop": stop, "stream": streamed})
		var text string
		if streamed {
			for _, e := range events(t, resp.Body) {
				var c textCompletion
				if json.Unmarshal([]byte(e), &c) == nil && len(c.Choices) == 1 {
					text += c.Choices[0].Text
				}
			}
		} else {
			text = decode[textCompletion](t, resp).Choices[0].Text
		}
		if text != full {
			t.Errorf("stream %v: %q, want %q", streamed, text, full)
		}
	}
}

// TestNotReady: while inference lacks a model it must serve, /readyz is
// 503 and a request for that model is 503 with Retry-After (inference's
// Unavailable with RetryInfo), while the process is alive (/healthz).
func TestNotReady(t *testing.T) {
	leakcheck.Check(t)
	// ServeAt, not Serve: Serve waits for a health this server never reaches.
	addr := servicetest.ServeAt(t, func(ctx context.Context, lis net.Listener) error {
		return inference.Serve(ctx, lis, inference.Config{Options: inference.Options{Threads: 1}, ModelFile: inference.EmbeddedModel,
			ModelID: "stories", RequireModels: []string{"later"}, Grace: time.Second})
	})
	url := serveGateway(t, Config{Inference: addr})
	expectGET(t, url, map[string]int{"/healthz": 200, "/readyz": 503})
	resp := post(t, url+"/v1/completions", map[string]any{"model": "later", "prompt": "a"})
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a model still loading: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if e := decode[apiError](t, resp); e.Error.Type != "service_unavailable_error" {
		t.Errorf("error %+v", e)
	}
}
