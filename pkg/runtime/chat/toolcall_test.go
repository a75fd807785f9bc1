package chat

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/corelm/corelm/internal/fixtures"
	"github.com/corelm/corelm/pkg/runtime/grammar"
)

var weatherTools = []Tool{
	{Name: "get_weather", Description: "Weather in a city.", Parameters: `{"type":"object","properties":{"city":{"type":"string","maxLength":12},"unit":{"enum":["C","F"]}},"required":["city"]}`},
	{Name: "get_time", Description: "Local time.", Parameters: `{"type":"object","properties":{"tz":{"type":"string","pattern":"^[A-Z][a-z]+/[A-Z][a-z]+$"}},"required":["tz"]}`},
	{Name: "ping", Description: "No arguments."},
}

func TestToolFormatOf(t *testing.T) {
	tests := map[string]ToolFormat{
		"meta-llama-Llama-3.1-8B-Instruct": Llama3Tools,
		"meta-llama-Llama-3.2-3B-Instruct": Llama3Tools,
		"Qwen-Qwen2.5-7B-Instruct":         HermesTools,
		"google-gemma-2-2b-it":             NoTools,
		"microsoft-Phi-3.5-mini-instruct":  NoTools,
	}
	for name, want := range tests {
		tmpl, err := Compile(readTemplate(t, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := tmpl.ToolFormat(); got != want {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
	if ChatML().ToolFormat() != NoTools {
		t.Error("ChatML fallback claims a tool format")
	}
}

func TestParseCalls(t *testing.T) {
	tests := []struct {
		f       ToolFormat
		reply   string
		content string
		calls   []ToolCall
	}{
		{Llama3Tools, `{"name": "get_weather", "parameters": {"city": "Paris"}}`, "", []ToolCall{{Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
		{Llama3Tools, `<|python_tag|>{"name": "ping", "parameters": {}}`, "", []ToolCall{{Name: "ping", Arguments: `{}`}}},
		{Llama3Tools, `The weather is fine.`, `The weather is fine.`, nil},
		{Llama3Tools, `{"name": "x", "parameters": [1]}`, `{"name": "x", "parameters": [1]}`, nil},
		{HermesTools, "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"Europe/Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>", "",
			[]ToolCall{{Name: "get_time", Arguments: `{"tz":"Europe/Paris"}`}, {Name: "ping", Arguments: `{}`}}},
		{HermesTools, "Let me check.\n<tool_call>\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>", "Let me check.", []ToolCall{{Name: "ping", Arguments: `{}`}}},
		{HermesTools, "<tool_call>\nnot json\n</tool_call>", "<tool_call>\nnot json\n</tool_call>", nil},
	}
	for _, tt := range tests {
		content, calls := tt.f.ParseCalls(tt.reply)
		if content != tt.content || len(calls) != len(tt.calls) {
			t.Errorf("%v %q: content %q calls %v", tt.f, tt.reply, content, calls)
			continue
		}
		for i := range calls {
			if calls[i] != tt.calls[i] {
				t.Errorf("%v %q: call %d = %+v, want %+v", tt.f, tt.reply, i, calls[i], tt.calls[i])
			}
		}
	}
}

// TestCallGrammar: every sentence of a forced-call grammar parses as calls
// of the allowed tools whose arguments validate against their schemas.
func TestCallGrammar(t *testing.T) {
	schemas := map[string]*fixtures.Schema{}
	for _, tl := range weatherTools {
		src := tl.Parameters
		if src == "" {
			src = `{"type":"object"}`
		}
		schemas[tl.Name] = fixtures.JSONSchema(t, src)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, f := range []ToolFormat{Llama3Tools, HermesTools} {
		for _, only := range []string{"", "get_time"} {
			src, err := f.CallGrammar(weatherTools, only)
			if err != nil {
				t.Fatal(err)
			}
			g, err := grammar.Parse(src)
			if err != nil {
				t.Fatalf("%v: %v\n%s", f, err, src)
			}
			done := 0
			for range 100 {
				reply, ok := walk(g, rng, 1500)
				if !ok {
					continue
				}
				done++
				content, calls := f.ParseCalls(reply)
				if content != "" || len(calls) == 0 {
					t.Fatalf("%v: %q: content %q, %d calls", f, reply, content, len(calls))
				}
				for _, c := range calls {
					if only != "" && c.Name != only {
						t.Fatalf("%v: called %s, want %s", f, c.Name, only)
					}
					if err := schemas[c.Name].Validate(c.Arguments); err != nil {
						t.Fatalf("%v: %s arguments %s: %v", f, c.Name, c.Arguments, err)
					}
				}
			}
			if done < 20 {
				t.Errorf("%v: only %d of 100 walks completed", f, done)
			}
		}
	}
	if _, err := Llama3Tools.CallGrammar(weatherTools, "nope"); !errors.Is(err, ErrToolFormat) {
		t.Errorf("unknown tool: %v", err)
	}
	bad := []Tool{{Name: "f", Parameters: `{"type":"object","properties":{"d":{"type":"string","format":"uri"}}}`}}
	if _, err := HermesTools.CallGrammar(bad, ""); !errors.Is(err, grammar.ErrUnsupported) || !strings.Contains(err.Error(), `format uri`) || !strings.Contains(err.Error(), `tool "f"`) {
		t.Errorf("unsupported keyword in a tool's schema: %v", err)
	}
	if _, err := NoTools.CallGrammar(weatherTools, ""); !errors.Is(err, ErrToolFormat) {
		t.Errorf("no tool format: %v", err)
	}
}

// walk draws a random sentence of g, favouring closing characters.
func walk(g *grammar.Grammar, rng *rand.Rand, limit int) (string, bool) {
	m := grammar.NewMatcher(g)
	var out []byte
	for len(out) < limit {
		if m.Complete() && rng.IntN(3) == 0 {
			return string(out), true
		}
		var allowed []byte
		for b := range 256 {
			if m.Next(m.State(), byte(b)) != grammar.Dead {
				allowed = append(allowed, byte(b))
			}
		}
		if len(allowed) == 0 {
			return string(out), m.Complete()
		}
		pick := allowed[rng.IntN(len(allowed))]
		if rng.IntN(2) == 0 {
			for _, b := range []byte(`"}]<`) {
				if strings.IndexByte(string(allowed), b) >= 0 {
					pick = b
					break
				}
			}
		}
		m.Accept([]byte{pick})
		out = append(out, pick)
	}
	return string(out), false
}
