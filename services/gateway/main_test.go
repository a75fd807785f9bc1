package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/corelm/corelm/internal/fixtures"
	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	inference "github.com/corelm/corelm/services/inference/server"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

func TestFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // in the error; "" for none
	}{
		{"defaults", nil, nil, ""},
		{"env", nil, map[string]string{"CORELM_GATEWAY_LISTEN": "127.0.0.1:0", "CORELM_GATEWAY_MAX_BODY": "2MiB",
			"CORELM_GATEWAY_CORS_ORIGINS": "https://a.example,https://b.example", "CORELM_GATEWAY_PASS_AUTH": "true"}, ""},
		{"bad env", nil, map[string]string{"CORELM_GATEWAY_REQUEST_TIMEOUT": "soon"}, "CORELM_GATEWAY_REQUEST_TIMEOUT"},
		{"bad env overridden", []string{"--request-timeout", "1m"}, map[string]string{"CORELM_GATEWAY_REQUEST_TIMEOUT": "soon"}, ""},
		{"unknown flag", []string{"--nope"}, nil, "nope"},
		{"positional", []string{"x"}, nil, "unexpected arguments"},
		{"bad log format", []string{"--log-format", "xml"}, nil, "xml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--listen", "127.0.0.1:0"}, tt.args...)
			servicetest.CheckRun(t, run, args, tt.env, tt.want)
		})
	}
}

// startGateway runs an in-process inference server on the stories model
// and the gateway binary in front of it; it returns the gateway's base URL
// and a client of inference.
func startGateway(t *testing.T, args ...string) (string, corelmv1.InferenceServiceClient) {
	t.Helper()
	return startGatewayOn(t, inference.EmbeddedModel, "stories", args...)
}

// startGatewayOn is startGateway serving the model file as id.
func startGatewayOn(t *testing.T, file, id string, args ...string) (string, corelmv1.InferenceServiceClient) {
	t.Helper()
	conn, _ := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return inference.Serve(ctx, lis, inference.Config{Options: inference.Options{Threads: 1},
			ModelFile: file, ModelID: id, Grace: 5 * time.Second})
	})
	bin := servicetest.Binary(t, ".")
	cmd := exec.Command(bin, append([]string{"--listen", "127.0.0.1:0", "--inference", conn.Target()}, args...)...)
	p := servicetest.Start(t, cmd, servicetest.ServingAddr)
	return "http://" + p.Addr, corelmv1.NewInferenceServiceClient(conn)
}

// greedy is what a direct gRPC GenerateStream makes of prompt: the chat
// reply (chat true) or the completion.
func greedy(t *testing.T, c corelmv1.InferenceServiceClient, prompt string, maxTokens int32, chat bool) string {
	t.Helper()
	temp := float32(0)
	start := &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: maxTokens, Sampling: &corelmv1.SamplingParams{Temperature: &temp},
		Prompt: &corelmv1.GenerateStart_Text{Text: prompt}}
	if chat {
		start.Prompt = &corelmv1.GenerateStart_Chat{Chat: &corelmv1.ChatPrompt{AddGenerationPrompt: true,
			Messages: []*corelmv1.ChatMessage{{Role: "user", Content: prompt}}}}
	}
	stream, err := c.GenerateStream(t.Context(), start)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := servicetest.RecvAll(stream.Recv, func(m *corelmv1.GenerateResponse) {
		b.WriteString(m.GetToken().GetText())
		b.WriteString(m.GetFinal().GetText())
	}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestOpenAINode runs the official openai npm client (clients/openai-node)
// against the gateway binary, when node and npm are installed: chat and
// completions, whole and streamed, give the text of a direct gRPC
// generation, the usage and the client's NotFoundError.
func TestOpenAINode(t *testing.T) {
	node, dir := servicetest.NodeClient(t, "../../clients/openai-node", "openai")
	url, client := startGateway(t, "--auth-token", "sesame")
	const prompt = "Once upon a time"
	wantChat, wantText := greedy(t, client, prompt, 24, true), greedy(t, client, prompt, 24, false)

	out := servicetest.ClientOutput(t, dir, node, "openai.mjs", "--base-url", url+"/v1", "--model", "stories",
		"--prompt", prompt, "--max-tokens", "24", "--api-key", "sesame")
	type result struct {
		Text         string `json:"text"`
		FinishReason string `json:"finish_reason"`
		Usage        struct {
			PromptTokens        int `json:"prompt_tokens"`
			CompletionTokens    int `json:"completion_tokens"`
			TotalTokens         int `json:"total_tokens"`
			PromptTokensDetails *struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage"`
		Chunks int `json:"chunks"`
	}
	var got struct {
		Chat, ChatStream, Completion, CompletionStream result
		NotFound                                       struct {
			Status int    `json:"status"`
			Code   string `json:"code"`
			Class  string `json:"class"`
		} `json:"not_found"`
		Models     []string `json:"models"`
		Embeddings struct {
			Base64, Float [][]float32
			Usage         struct {
				PromptTokens int `json:"prompt_tokens"`
				TotalTokens  int `json:"total_tokens"`
			}
		}
	}
	if err := json.Unmarshal([]byte(strings.NewReplacer(`"chat_stream"`, `"ChatStream"`, `"completion_stream"`, `"CompletionStream"`).Replace(string(out))), &got); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	for name, tt := range map[string]struct {
		r    result
		want string
	}{"chat": {got.Chat, wantChat}, "chat stream": {got.ChatStream, wantChat},
		"completion": {got.Completion, wantText}, "completion stream": {got.CompletionStream, wantText}} {
		r := tt.r
		if r.Text != tt.want {
			t.Errorf("%s: %q, want %q", name, r.Text, tt.want)
		}
		if r.FinishReason == "" || r.Usage.CompletionTokens == 0 || r.Usage.PromptTokens == 0 ||
			r.Usage.TotalTokens != r.Usage.PromptTokens+r.Usage.CompletionTokens || r.Usage.PromptTokensDetails == nil {
			t.Errorf("%s: %+v", name, r)
		}
		if strings.HasSuffix(name, "stream") && r.Chunks < 3 {
			t.Errorf("%s: %d chunks", name, r.Chunks)
		}
	}
	if got.NotFound.Status != 404 || got.NotFound.Code != "model_not_found" || got.NotFound.Class != "NotFoundError" {
		t.Errorf("unknown model: %+v", got.NotFound)
	}
	if len(got.Models) != 1 || got.Models[0] != "stories" {
		t.Errorf("models %v", got.Models)
	}
	emb, err := client.Embed(t.Context(), &corelmv1.EmbedRequest{ModelId: "stories", Inputs: []*corelmv1.EmbedInput{
		{Input: &corelmv1.EmbedInput_Text{Text: prompt}}, {Input: &corelmv1.EmbedInput_Text{Text: "The cat sat on the mat."}}}})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range emb.GetEmbeddings() {
		for name, got := range map[string][][]float32{"base64": got.Embeddings.Base64, "float": got.Embeddings.Float} {
			if len(got) != 2 || !slices.Equal(got[i], want.GetValues()) {
				t.Errorf("embeddings (%s): vector %d differs from a direct Embed", name, i)
			}
		}
	}
	if u := got.Embeddings.Usage; u.PromptTokens != int(emb.GetPromptTokens()) || u.TotalTokens != u.PromptTokens {
		t.Errorf("embeddings usage %+v, want %d tokens", u, emb.GetPromptTokens())
	}
}

// TestOpenAINodeTools runs clients/openai-node/tools.mjs against the
// gateway binary in front of a synthetic model with Llama-3's vocabulary
// and the real Llama-3.1 template: the client parses the forced call
// whole and streamed (its stream helper accumulating delta.tool_calls)
// into the same call, with arguments valid under the tool's schema, and
// the follow-up turn it builds from its own parsed message and the tool's
// result is the prompt inference makes of that conversation directly.
func TestOpenAINodeTools(t *testing.T) {
	node, dir := servicetest.NodeClient(t, "../../clients/openai-node", "openai")
	if testing.Short() {
		t.Skip("builds a 128k-vocabulary model")
	}
	url, client := startGatewayOn(t, fixtures.WriteVocabModel(t, "llama-bpe", "meta-llama-Llama-3.1-8B-Instruct", 2048), "llama31")
	type call struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
	type turn struct {
		FinishReason string  `json:"finish_reason"`
		Content      *string `json:"content"`
		ToolCalls    []call  `json:"tool_calls"`
		Usage        struct {
			PromptTokens int32 `json:"prompt_tokens"`
		} `json:"usage"`
	}
	var got struct {
		Call         turn `json:"call"`
		CallStream   turn `json:"call_stream"`
		Answer       turn `json:"answer"`
		ToolMessages []struct {
			ToolCallID string `json:"tool_call_id"`
			Content    string `json:"content"`
		} `json:"tool_messages"`
	}
	for seed := 1; ; seed++ {
		out := servicetest.ClientOutput(t, dir, node, "tools.mjs", "--base-url", url+"/v1", "--model", "llama31", "--seed", fmt.Sprint(seed))
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%v in %s", err, out)
		}
		if got.Call.FinishReason == "tool_calls" {
			break
		}
		if got.Call.FinishReason != "length" || seed == 4 {
			t.Fatalf("seed %d: %s", seed, out)
		}
	}
	c := got.Call
	if c.Content != nil || len(c.ToolCalls) != 1 || c.ToolCalls[0].Type != "function" || c.ToolCalls[0].Function.Name != "get_weather" {
		t.Fatalf("call %+v", c)
	}
	var args struct {
		City *string
		Unit *string
	}
	if err := json.Unmarshal([]byte(c.ToolCalls[0].Function.Arguments), &args); err != nil || args.City == nil ||
		utf8.RuneCountInString(*args.City) > 12 || (args.Unit != nil && *args.Unit != "C" && *args.Unit != "F") {
		t.Errorf("arguments %s: %v", c.ToolCalls[0].Function.Arguments, err)
	}
	s := got.CallStream
	if s.FinishReason != "tool_calls" || len(s.ToolCalls) != 1 || s.ToolCalls[0].Function != c.ToolCalls[0].Function ||
		!strings.HasPrefix(s.ToolCalls[0].ID, "call_") || (s.Content != nil && *s.Content != "") {
		t.Errorf("streamed %+v, whole %+v", s, c)
	}
	if len(got.ToolMessages) != 1 || got.ToolMessages[0].ToolCallID != c.ToolCalls[0].ID {
		t.Fatalf("tool messages %+v", got.ToolMessages)
	}
	zero := float32(0)
	stream, err := client.GenerateStream(t.Context(), &corelmv1.GenerateStart{ModelId: "llama31", MaxTokens: 8,
		Sampling: &corelmv1.SamplingParams{Temperature: &zero},
		Prompt: &corelmv1.GenerateStart_Chat{Chat: &corelmv1.ChatPrompt{AddGenerationPrompt: true,
			Tools: []*corelmv1.Tool{{Name: "get_weather", Description: "Current weather in a city.",
				Parameters: `{"type":"object","properties":{"city":{"type":"string","maxLength":12},"unit":{"enum":["C","F"]}},"required":["city"]}`}},
			Messages: []*corelmv1.ChatMessage{
				{Role: "user", Content: "What's the weather in Paris?"},
				{Role: "assistant", ToolCalls: []*corelmv1.ToolCall{{Id: c.ToolCalls[0].ID, Name: "get_weather", Arguments: c.ToolCalls[0].Function.Arguments}}},
				{Role: "tool", Content: got.ToolMessages[0].Content, ToolCallId: c.ToolCalls[0].ID, Name: "get_weather"},
			}}}})
	if err != nil {
		t.Fatal(err)
	}
	var final *corelmv1.GenerateFinal
	var text strings.Builder
	if err := servicetest.RecvAll(stream.Recv, func(m *corelmv1.GenerateResponse) {
		text.WriteString(m.GetToken().GetText())
		if f := m.GetFinal(); f != nil {
			text.WriteString(f.GetText())
			final = f
		}
	}); err != nil {
		t.Fatal(err)
	}
	a := got.Answer
	if a.Usage.PromptTokens != final.GetUsage().GetPromptTokens() || a.Content == nil || *a.Content != text.String() {
		t.Errorf("answer %+v (%d prompt tokens), directly %q (%d)", a, a.Usage.PromptTokens, text.String(), final.GetUsage().GetPromptTokens())
	}
}

// TestCurl runs clients/curl/sse.sh, when curl is installed: raw SSE
// frames, the usage chunk, then data: [DONE].
func TestCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is needed")
	}
	url, _ := startGateway(t)
	cmd := exec.CommandContext(t.Context(), "sh", "../../clients/curl/sse.sh", url, "stories", "Once upon a time")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sse.sh: %v\n%s", err, out)
	}
	frames := strings.Split(strings.TrimSpace(string(out)), "\n\n")
	if len(frames) < 4 || frames[len(frames)-1] != "data: [DONE]" {
		t.Fatalf("frames %q", frames)
	}
	for i, f := range frames[:len(frames)-1] {
		var c struct {
			Object  string `json:"object"`
			Choices []any  `json:"choices"`
			Usage   *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		d, ok := strings.CutPrefix(f, "data: ")
		if !ok || json.Unmarshal([]byte(d), &c) != nil || c.Object != "chat.completion.chunk" {
			t.Fatalf("frame %d: %q", i, f)
		}
		if last := i == len(frames)-2; last != (c.Usage != nil) || last && (len(c.Choices) != 0 || c.Usage.CompletionTokens != 16) {
			t.Errorf("frame %d: %q", i, f)
		}
	}
}

// descriptorSet writes the descriptor set of inference.proto and what it
// imports, dependencies first, for clients that read the service at run
// time.
func descriptorSet(t *testing.T) string {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		for i := range fd.Imports().Len() {
			add(fd.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(corelmv1.File_corelm_v1_inference_proto)
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "corelm.binpb")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestConnectNode streams GenerateStream through the gateway binary with
// @connectrpc/connect-web from npm (clients/connect-node; fetch over
// HTTP/1.1), over Connect (JSON) and gRPC-Web (binary), when node and npm
// are installed: both give the direct gRPC call's text.
func TestConnectNode(t *testing.T) {
	node, dir := servicetest.NodeClient(t, "../../clients/connect-node", "@connectrpc/connect-web")
	url, client := startGateway(t)
	const prompt = "Once upon a time"
	want := greedy(t, client, prompt, 16, false)
	out := servicetest.ClientOutput(t, dir, node, "stream.mjs", "--base-url", url, "--descriptors", descriptorSet(t),
		"--model", "stories", "--prompt", prompt, "--max-tokens", "16")
	type result struct {
		Text             string `json:"text"`
		Tokens           int    `json:"tokens"`
		FinishReason     string `json:"finish_reason"`
		CompletionTokens int    `json:"completion_tokens"`
	}
	var got map[string]result
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	for _, protocol := range []string{"connect", "grpc_web"} {
		r := got[protocol]
		if r.Text != want || r.FinishReason != "FINISH_REASON_LENGTH" || r.CompletionTokens != 16 || r.Tokens != 16 {
			t.Errorf("%s: %+v, want %q", protocol, r, want)
		}
	}
}
