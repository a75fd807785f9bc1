package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/fixtures"
	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/pkg/runtime/chat"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// chatTestdata holds the real templates and the tool rendering cases
// checked against @huggingface/jinja.
var chatTestdata = fixtures.ChatTestdata()

var testTools = []*corelmv1.Tool{
	{Name: "get_weather", Description: "Weather in a city.", Parameters: `{"type":"object","properties":{"city":{"type":"string","maxLength":12},"unit":{"enum":["C","F"]}},"required":["city"]}`},
	{Name: "add", Description: "Adds two integers.", Parameters: `{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}`},
}

// reply is what a client makes of a generation's frames.
type reply struct {
	text  string // token and final text
	ids   []int32
	final *corelmv1.GenerateFinal
}

func generateReply(t *testing.T, client corelmv1.InferenceServiceClient, req *corelmv1.GenerateStart) (reply, error) {
	t.Helper()
	stream, err := client.GenerateStream(t.Context(), req)
	if err != nil {
		return reply{}, err
	}
	var r reply
	var b strings.Builder
	err = servicetest.RecvAll(stream.Recv, func(m *corelmv1.GenerateResponse) {
		if tok := m.GetToken(); tok != nil {
			b.WriteString(tok.GetText())
			r.ids = append(r.ids, tok.GetId())
		}
		if f := m.GetFinal(); f != nil {
			b.WriteString(f.GetText())
			r.final = f
		}
	})
	r.text = b.String()
	return r, err
}

func toolRequest(model, user string, choice *corelmv1.ToolChoice, seed uint64) *corelmv1.GenerateStart {
	temp := float32(1)
	sp := &corelmv1.SamplingParams{Temperature: &temp, TopK: new(int32), Seed: &seed}
	*sp.TopK = 40
	if seed == 0 {
		zero := float32(0)
		sp = &corelmv1.SamplingParams{Temperature: &zero}
	}
	return &corelmv1.GenerateStart{ModelId: model, MaxTokens: 250, Sampling: sp,
		Prompt: &corelmv1.GenerateStart_Chat{Chat: &corelmv1.ChatPrompt{AddGenerationPrompt: true,
			Messages: []*corelmv1.ChatMessage{{Role: "user", Content: user}}, Tools: testTools, ToolChoice: choice}}}
}

// toolTemplates are the templates tool calling is tested with, and the
// model id each is served as.
var toolTemplates = map[string]string{
	"llama31": "meta-llama-Llama-3.1-8B-Instruct",
	"qwen25":  "Qwen-Qwen2.5-7B-Instruct",
}

// TestToolCallsForced: with tool choice REQUIRED (and FUNCTION), on a
// synthetic model with Llama-3's vocabulary and the real Llama-3.1 and
// Qwen2.5 templates, every reply that stops ends with TOOL_CALLS, and its
// calls name the tools (the named one) with arguments valid under the
// tool's schema; no token frame carries the call's text.
func TestToolCallsForced(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 128k-vocabulary models")
	}
	schemas := map[string]*fixtures.Schema{}
	for _, tl := range testTools {
		schemas[tl.Name] = fixtures.JSONSchema(t, tl.Parameters)
	}
	for id, tmpl := range toolTemplates {
		t.Run(id, func(t *testing.T) {
			client, _ := serveFile(t, Options{Threads: 1}, fixtures.WriteVocabModel(t, "llama-bpe", tmpl, 2048), id)
			calls := 0
			for _, choice := range []*corelmv1.ToolChoice{
				{Mode: corelmv1.ToolChoice_MODE_REQUIRED},
				{Mode: corelmv1.ToolChoice_MODE_FUNCTION, Function: "add"},
			} {
				for seed := range uint64(3) {
					r, err := generateReply(t, client, toolRequest(id, "What is 2+3?", choice, seed))
					if err != nil {
						t.Fatal(err)
					}
					f := r.final
					t.Logf("%v seed %d: %v %q %v", choice.GetMode(), seed, f.GetFinishReason(), r.text, f.GetToolCalls())
					if f.GetFinishReason() == corelmv1.FinishReason_FINISH_REASON_LENGTH {
						continue // a partial call, returned as text
					}
					if f.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_TOOL_CALLS || len(f.GetToolCalls()) == 0 {
						t.Fatalf("%v seed %d: finish %v, calls %v, text %q", choice.GetMode(), seed, f.GetFinishReason(), f.GetToolCalls(), r.text)
					}
					if r.text != "" {
						t.Errorf("%v seed %d: text %q beside the calls", choice.GetMode(), seed, r.text)
					}
					for _, c := range f.GetToolCalls() {
						sch, ok := schemas[c.GetName()]
						if !ok || (choice.GetFunction() != "" && c.GetName() != choice.GetFunction()) {
							t.Fatalf("%v seed %d: called %q", choice.GetMode(), seed, c.GetName())
						}
						if !strings.HasPrefix(c.GetId(), "call_") || len(c.GetId()) != 29 {
							t.Errorf("call id %q", c.GetId())
						}
						if err := sch.Validate(c.GetArguments()); err != nil {
							t.Fatalf("%s(%s): %v", c.GetName(), c.GetArguments(), err)
						}
						calls++
					}
				}
			}
			if calls == 0 {
				t.Error("no generation completed a call")
			}
		})
	}
}

// TestToolCallsAuto: with AUTO, a reply that is a call (here made one by a
// grammar the client sets, since the random model would not write one)
// ends with TOOL_CALLS and its text is held back; a reply that is not a
// call is all text, as without tools, with the same tokens.
func TestToolCallsAuto(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 128k-vocabulary models")
	}
	tools := make([]chat.Tool, len(testTools))
	for i, tl := range testTools {
		tools[i] = chat.Tool{Name: tl.Name, Description: tl.Description, Parameters: tl.Parameters}
	}
	for id, tmpl := range toolTemplates {
		t.Run(id, func(t *testing.T) {
			path := fixtures.WriteVocabModel(t, "llama-bpe", tmpl, 2048)
			client, _ := serveFile(t, Options{Threads: 1}, path, id)
			src, _ := os.ReadFile(filepath.Join(chatTestdata, tmpl+".jinja"))
			ct, err := chat.Compile(string(src))
			if err != nil {
				t.Fatal(err)
			}
			grammar, err := ct.ToolFormat().CallGrammar(tools, "get_weather")
			if err != nil {
				t.Fatal(err)
			}
			auto := &corelmv1.ToolChoice{Mode: corelmv1.ToolChoice_MODE_AUTO}
			called := false
			for seed := range uint64(3) {
				req := toolRequest(id, "Weather in Paris?", auto, seed)
				req.Constraint = &corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_Grammar{Grammar: grammar}}
				r, err := generateReply(t, client, req)
				if err != nil {
					t.Fatal(err)
				}
				f := r.final
				t.Logf("seed %d: %v %q %v", seed, f.GetFinishReason(), r.text, f.GetToolCalls())
				if f.GetFinishReason() == corelmv1.FinishReason_FINISH_REASON_LENGTH {
					continue
				}
				if f.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_TOOL_CALLS || len(f.GetToolCalls()) == 0 ||
					f.GetToolCalls()[0].GetName() != "get_weather" || r.text != "" {
					t.Fatalf("seed %d: finish %v, calls %v, text %q", seed, f.GetFinishReason(), f.GetToolCalls(), r.text)
				}
				called = true
			}
			if !called {
				t.Error("no generation completed a call")
			}

			// Unconstrained, the random model writes no call: the reply is
			// text, every byte of it, and the same tokens as a request
			// whose tools are not called (NONE renders none: a different
			// prompt, so only AUTO is compared with itself here).
			for seed := range uint64(2) {
				r, err := generateReply(t, client, toolRequest(id, "Weather in Paris?", auto, seed+1))
				if err != nil {
					t.Fatal(err)
				}
				if r.final.GetFinishReason() == corelmv1.FinishReason_FINISH_REASON_TOOL_CALLS {
					t.Skipf("the random model wrote a call: %v", r.final.GetToolCalls())
				}
				d, err := client.Detokenize(t.Context(), &corelmv1.DetokenizeRequest{ModelId: id, Ids: r.ids})
				if err != nil {
					t.Fatal(err)
				}
				// The stream and Detokenize may spell invalid bytes
				// with different numbers of U+FFFD.
				if noFFFD(r.text) != noFFFD(d.GetText()) {
					t.Errorf("seed %d: text %q, tokens say %q", seed, r.text, d.GetText())
				}
			}
		})
	}
}

func noFFFD(s string) string { return strings.ReplaceAll(s, "\uFFFD", "") }

// TestToolRoundTrip: a follow-up request carrying the assistant's calls
// and the tool results is the prompt the template makes of them (the
// expected prompts of the chat package's cases, made by
// @huggingface/jinja): usage counts its tokens and the greedy reply
// equals the reply to those tokens sent as ids.
func TestToolRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 128k-vocabulary models")
	}
	data, err := os.ReadFile(filepath.Join(chatTestdata, "tools", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name     string
		Template string
		Tools    []struct{ Name, Description, Parameters string }
		Messages []struct {
			Role, Content string
			ToolCalls     []struct{ ID, Name, Arguments string } `json:"tool_calls"`
			ToolCallID    string                                 `json:"tool_call_id"`
			Name          string
		}
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	clients := map[string]corelmv1.InferenceServiceClient{}
	zero := float32(0)
	for _, tc := range cases {
		if !strings.HasSuffix(tc.Name, "round-trip") {
			continue
		}
		t.Run(tc.Name, func(t *testing.T) {
			client := clients[tc.Template]
			if client == nil {
				client, _ = serveFile(t, Options{Threads: 1}, fixtures.WriteVocabModel(t, "llama-bpe", tc.Template, 2048), "m")
				clients[tc.Template] = client
			}
			cp := &corelmv1.ChatPrompt{AddGenerationPrompt: true}
			for _, tl := range tc.Tools {
				cp.Tools = append(cp.Tools, &corelmv1.Tool{Name: tl.Name, Description: tl.Description, Parameters: tl.Parameters})
			}
			for _, m := range tc.Messages {
				pm := &corelmv1.ChatMessage{Role: m.Role, Content: m.Content, ToolCallId: m.ToolCallID, Name: m.Name}
				for _, c := range m.ToolCalls {
					pm.ToolCalls = append(pm.ToolCalls, &corelmv1.ToolCall{Id: c.ID, Name: c.Name, Arguments: c.Arguments})
				}
				cp.Messages = append(cp.Messages, pm)
			}
			want, err := os.ReadFile(filepath.Join(chatTestdata, "tools", tc.Name+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			ids, err := client.Tokenize(t.Context(), &corelmv1.TokenizeRequest{ModelId: "m", Text: string(want),
				AddBos: new(bool), ParseSpecial: true})
			if err != nil {
				t.Fatal(err)
			}
			sp := &corelmv1.SamplingParams{Temperature: &zero}
			got, err := generateReply(t, client, &corelmv1.GenerateStart{ModelId: "m", MaxTokens: 8, Sampling: sp,
				Prompt: &corelmv1.GenerateStart_Chat{Chat: cp}})
			if err != nil {
				t.Fatal(err)
			}
			direct, err := generateReply(t, client, &corelmv1.GenerateStart{ModelId: "m", MaxTokens: 8, Sampling: sp,
				Prompt: &corelmv1.GenerateStart_TokenIds{TokenIds: &corelmv1.TokenIds{Ids: ids.GetIds()}}})
			if err != nil {
				t.Fatal(err)
			}
			if n := got.final.GetUsage().GetPromptTokens(); int(n) != len(ids.GetIds()) {
				t.Errorf("prompt of %d tokens, the expected prompt has %d", n, len(ids.GetIds()))
			}
			if !slices.Equal(got.ids, direct.ids) {
				t.Errorf("reply %v, to the expected prompt %v", got.ids, direct.ids)
			}
		})
	}
}

// TestToolsRefused: malformed tools and choices, schemas a forced call
// cannot enforce, a forced call with a constraint, and tools on a model
// whose template takes none are refused with InvalidArgument saying what.
func TestToolsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 128k-vocabulary model")
	}
	client, _ := serveFile(t, Options{Threads: 1}, fixtures.WriteVocabModel(t, "llama-bpe", toolTemplates["qwen25"], 2048), "qwen25")
	stories, _ := serveInProcess(t, Options{Threads: 1})
	required := &corelmv1.ToolChoice{Mode: corelmv1.ToolChoice_MODE_REQUIRED}
	tests := []struct {
		name   string
		client corelmv1.InferenceServiceClient
		tools  []*corelmv1.Tool
		choice *corelmv1.ToolChoice
		edit   func(*corelmv1.GenerateStart)
		want   string
	}{
		{"unsupported keyword", client, []*corelmv1.Tool{{Name: "f", Parameters: `{"type":"object","properties":{"x":{"type":"string","format":"hostname"}}}`}},
			required, nil, `tool "f" parameters`},
		{"not keyword", client, []*corelmv1.Tool{{Name: "g", Parameters: `{"type":"object","properties":{"x":{"not":{"type":"null"}}}}`}},
			&corelmv1.ToolChoice{Mode: corelmv1.ToolChoice_MODE_FUNCTION, Function: "g"}, nil, `not`},
		{"parameters not JSON", client, []*corelmv1.Tool{{Name: "f", Parameters: `{"type":`}}, nil, nil, `parameters must be a JSON Schema object`},
		{"no name", client, []*corelmv1.Tool{{Parameters: `{}`}}, nil, nil, `needs a name`},
		{"twice", client, []*corelmv1.Tool{{Name: "f"}, {Name: "f"}}, nil, nil, `given twice`},
		{"unknown function", client, testTools, &corelmv1.ToolChoice{Mode: corelmv1.ToolChoice_MODE_FUNCTION, Function: "nope"}, nil, `"nope" is not among the tools`},
		{"required without tools", client, nil, required, nil, `no tools`},
		{"function without mode", client, testTools, &corelmv1.ToolChoice{Function: "add"}, nil, `MODE_FUNCTION`},
		{"forced with a constraint", client, testTools, required, func(r *corelmv1.GenerateStart) {
			r.Constraint = &corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_JsonObject{JsonObject: true}}
		}, `set one or the other`},
		{"call arguments not JSON", client, testTools, nil, func(r *corelmv1.GenerateStart) {
			c := r.GetChat()
			c.Messages = append(c.Messages, &corelmv1.ChatMessage{Role: "assistant", ToolCalls: []*corelmv1.ToolCall{{Id: "1", Name: "add", Arguments: `{"a":`}}})
		}, `arguments`},
		{"template without tools", stories, testTools, nil, nil, `does not take tools`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			model := "qwen25"
			if tt.client == stories {
				model = "stories"
			}
			req := &corelmv1.GenerateStart{ModelId: model, MaxTokens: 4, Prompt: &corelmv1.GenerateStart_Chat{Chat: &corelmv1.ChatPrompt{
				AddGenerationPrompt: true, Messages: []*corelmv1.ChatMessage{{Role: "user", Content: "hi"}}, Tools: tt.tools, ToolChoice: tt.choice}}}
			if tt.edit != nil {
				tt.edit(req)
			}
			_, err := generateReply(t, tt.client, req)
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.want) {
				t.Errorf("%v, want InvalidArgument with %q", err, tt.want)
			}
		})
	}
	// NONE on a template without tools: rendered without them.
	r, err := generateReply(t, stories, &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 4, Prompt: &corelmv1.GenerateStart_Chat{Chat: &corelmv1.ChatPrompt{
		AddGenerationPrompt: true, Messages: []*corelmv1.ChatMessage{{Role: "user", Content: "hi"}}, Tools: testTools,
		ToolChoice: &corelmv1.ToolChoice{Mode: corelmv1.ToolChoice_MODE_NONE}}}})
	if err != nil || r.final.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_LENGTH || r.text == "" {
		t.Errorf("NONE: %v, %v %q", err, r.final, r.text)
	}
}

// TestCallStream: what of a reply is sent as it comes, and what the end
// makes of what was held.
func TestCallStream(t *testing.T) {
	hermes := `<tool_call>` + "\n" + `{"name": "f", "arguments": {"x": 1}}` + "\n" + `</tool_call>`
	tests := []struct {
		name    string
		plan    toolPlan
		tokens  []string
		stopped bool
		sent    []string // per token
		final   string
		calls   int
	}{
		{"hermes call after text", toolPlan{format: chat.HermesTools}, []string{"Sure", " <tool", hermes[5:]}, true,
			[]string{"Sure", " ", ""}, "", 1},
		{"hermes prefix that is not a call", toolPlan{format: chat.HermesTools}, []string{"a <to", "day"}, true,
			[]string{"a ", "<today"}, "", 0},
		{"hermes text after the call", toolPlan{format: chat.HermesTools}, []string{hermes, " done"}, true,
			[]string{"", ""}, "done", 1},
		{"hermes malformed block", toolPlan{format: chat.HermesTools}, []string{"<tool_call>{", "}</tool_call>"}, true,
			[]string{"", ""}, "<tool_call>{}</tool_call>", 0},
		{"llama3 call", toolPlan{format: chat.Llama3Tools}, []string{"  ", `{"name": "f", `, `"parameters": {"x": 1}}`}, true,
			[]string{"", "", ""}, "", 1},
		{"llama3 python tag", toolPlan{format: chat.Llama3Tools}, []string{"<|python", "_tag|>", `{"name": "f", "parameters": {}}`}, true,
			[]string{"", "", ""}, "", 1},
		{"llama3 text", toolPlan{format: chat.Llama3Tools}, []string{" ", "Hello", " {"}, true,
			[]string{"", " Hello", " {"}, "", 0},
		{"llama3 brace, not a call", toolPlan{format: chat.Llama3Tools}, []string{"{", " not json"}, true,
			[]string{"", ""}, "{ not json", 0},
		{"cut short", toolPlan{format: chat.Llama3Tools}, []string{`{"name": "f", "parameters": {}}`}, false,
			[]string{""}, `{"name": "f", "parameters": {}}`, 0},
		{"forced", toolPlan{format: chat.HermesTools, forced: true}, []string{hermes[:4], hermes[4:]}, true,
			[]string{"", ""}, "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &callStream{p: &tt.plan}
			for i, tok := range tt.tokens {
				if got := c.token(tok); got != tt.sent[i] {
					t.Errorf("token %d %q: sent %q, want %q", i, tok, got, tt.sent[i])
				}
			}
			final, calls := c.finish("", tt.stopped)
			if final != tt.final || len(calls) != tt.calls {
				t.Errorf("final %q, %d calls %v; want %q, %d", final, len(calls), calls, tt.final, tt.calls)
			}
		})
	}
}
