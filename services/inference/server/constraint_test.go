package server

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// TestConstraint: a JSON Schema constraint over gRPC yields a document that
// parses and has the schema's shape, and constraints the server does not
// support are refused with InvalidArgument naming the construct.
func TestConstraint(t *testing.T) {
	client, _ := serveInProcess(t, Options{Threads: 1})
	ctx := t.Context()
	temp := float32(1)
	seed := uint64(7)
	schema := `{"type":"object","properties":{"name":{"type":"string","maxLength":8},"n":{"type":"integer","minimum":1,"maximum":9}},"required":["name","n"]}`
	stream, err := client.GenerateStream(ctx, &corelmv1.GenerateStart{
		ModelId: "stories", MaxTokens: 120, Sampling: &corelmv1.SamplingParams{Temperature: &temp, Seed: &seed},
		Prompt:     &corelmv1.GenerateStart_Text{Text: "Once upon a time"},
		Constraint: &corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_JsonSchema{JsonSchema: schema}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	var final *corelmv1.GenerateFinal
	servicetest.RecvAll(stream.Recv, func(resp *corelmv1.GenerateResponse) {
		text.WriteString(resp.GetToken().GetText())
		if f := resp.GetFinal(); f != nil {
			final = f
		}
	})
	if final.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_STOP {
		t.Fatalf("finish %v after %q", final, text.String())
	}
	var doc struct {
		Name *string
		N    *int
	}
	if err := json.Unmarshal([]byte(text.String()), &doc); err != nil || doc.Name == nil || doc.N == nil || *doc.N < 1 || *doc.N > 9 {
		t.Fatalf("output %q: %v", text.String(), err)
	}

	refused := []struct {
		c    *corelmv1.OutputConstraint
		name string
	}{
		{&corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_JsonSchema{JsonSchema: `{"type":"string","format":"email"}`}}, `"format"`},
		{&corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_Regex{Regex: `a(?=b)`}}, `(?=`},
		{&corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_Grammar{Grammar: `root ::= root "a"`}}, `left recursion`},
		{&corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_JsonObject{JsonObject: false}}, `json_object`},
		{&corelmv1.OutputConstraint{}, `one of`},
	}
	for _, tt := range refused {
		stream, err := client.GenerateStream(ctx, &corelmv1.GenerateStart{
			ModelId: "stories", MaxTokens: 4, Prompt: &corelmv1.GenerateStart_Text{Text: "x"}, Constraint: tt.c,
		})
		if err == nil {
			_, err = stream.Recv()
		}
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.name) {
			t.Errorf("%v: %v, want InvalidArgument naming %s", tt.c, err, tt.name)
		}
	}
}
