package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/internal/telemetry"
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
		{&corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_JsonSchema{JsonSchema: `{"type":"string","format":"hostname"}`}}, `format hostname`},
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

// TestConstraintTraced: a constrained generation's span says which kind of
// constraint and the GenAI output type.
func TestConstraintTraced(t *testing.T) {
	x := newTraced(t, Tracing{Level: telemetry.LevelRequest, Max: telemetry.LevelLayer})
	tid := trace.TraceID{0xc0, 0x19}
	ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", fmt.Sprintf("00-%s-%s-01", tid, trace.SpanID{0xc1, 0x19}))
	stream, err := x.client.GenerateStream(ctx, &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 4,
		Prompt:     &corelmv1.GenerateStart_Text{Text: "Once upon a time"},
		Constraint: &corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_JsonObject{JsonObject: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if f := lastFinal(stream); f == nil || f.GetErrorCode() != 0 {
		t.Fatalf("final %v", f)
	}
	for _, s := range x.trace(t, tid) {
		if s.Name != "text_completion stories" {
			continue
		}
		attrs := map[string]string{}
		for _, kv := range s.Attributes {
			attrs[string(kv.Key)] = kv.Value.String()
		}
		if attrs["corelm.constraint"] != "json_object" || attrs["gen_ai.output.type"] != "json" {
			t.Errorf("span attributes %v", attrs)
		}
		return
	}
	t.Fatal("no generation span")
}

// TestConstraintConcurrent: generations under one schema at once share
// the compiled grammar and pooled matchers, and each output is its own
// valid document.
func TestConstraintConcurrent(t *testing.T) {
	client, _ := serveInProcess(t, Options{Threads: 1, MaxSeqs: 4})
	schema := `{"type":"object","properties":{"n":{"type":"integer","minimum":0,"maximum":99},"ok":{"type":"boolean"}},"required":["n","ok"]}`
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			temp, seed := float32(1), uint64(i)
			stream, err := client.GenerateStream(t.Context(), &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 60,
				Sampling: &corelmv1.SamplingParams{Temperature: &temp, Seed: &seed}, Prompt: &corelmv1.GenerateStart_Text{Text: "Once"},
				Constraint: &corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_JsonSchema{JsonSchema: schema}}})
			if err != nil {
				errs <- err
				return
			}
			var text strings.Builder
			var final *corelmv1.GenerateFinal
			servicetest.RecvAll(stream.Recv, func(resp *corelmv1.GenerateResponse) {
				text.WriteString(resp.GetToken().GetText())
				if f := resp.GetFinal(); f != nil {
					final = f
				}
			})
			var doc struct {
				N  *int
				OK *bool
			}
			if final.GetFinishReason() != corelmv1.FinishReason_FINISH_REASON_STOP ||
				json.Unmarshal([]byte(text.String()), &doc) != nil || doc.N == nil || doc.OK == nil {
				errs <- fmt.Errorf("seed %d: %q (%v)", i, text.String(), final)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
