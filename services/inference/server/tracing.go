package server

import (
	"context"
	"encoding/json"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/internal/telemetry"
)

// Tracing is how the server reports its generations: spans, metrics and
// the levels of detail (docs/tracing.md).
type Tracing struct {
	// Telemetry makes the spans and metrics [telemetry.Nop(): none].
	Telemetry *telemetry.Telemetry
	// Level is a generation's trace level unless its call's metadata asks
	// for another (telemetry.MetadataKey); a call may not ask for more than
	// Max. Zero values are LevelOff.
	Level, Max telemetry.Level
	// Content records every traced generation's prompt and output on its
	// span; without it only those of calls whose metadata asks with
	// ContentMetadataKey do.
	Content bool
}

// ContentMetadataKey is the gRPC metadata key with which a call asks for
// its prompts and outputs on its generation spans ("true").
const ContentMetadataKey = "corelm-trace-content"

// The attributes of the prompt and the output (GenAI semantic conventions,
// opt-in content): JSON arrays of messages with text parts.
const (
	keyInputMessages  = attribute.Key("gen_ai.input.messages")
	keyOutputMessages = attribute.Key("gen_ai.output.messages")
)

// corelm's attributes on the spans of this package.
const (
	keyModel      = attribute.Key("corelm.model")
	keyGeneration = attribute.Key("corelm.generation")
	keyPath       = attribute.Key("corelm.path")
	keyBytes      = attribute.Key("corelm.bytes")
	keyShared     = attribute.Key("corelm.load.shared")
)

// telemetry is the server's Telemetry, a no-op one when it has none.
func (s *Server) telemetry() *telemetry.Telemetry { return s.opts.Tracing.Telemetry.OrNop() }

func (s *Server) tracer() trace.Tracer { return s.telemetry().Tracer(telemetry.ScopeName) }

// grpcServerOptions are the server's otelgrpc stats handler: RPC spans
// (the parents of the generation spans) and RPC metrics.
func (s *Server) grpcServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(s.telemetry().GRPCOptions()...))}
}

// loaderDialOptions are the loader client's otelgrpc stats handler: a load
// a request causes is a span of the request's trace, and the trace goes on
// in the loader.
func (s *Server) loaderDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(s.telemetry().GRPCOptions()...))}
}

// traceContent reports whether a call's generations record their prompts
// and outputs.
func (s *Server) traceContent(md metadata.MD) bool {
	if s.opts.Tracing.Content {
		return true
	}
	vs := md.Get(ContentMetadataKey)
	return len(vs) > 0 && strings.EqualFold(strings.TrimSpace(vs[len(vs)-1]), "true")
}

// operation is the GenAI operation of a request.
func operation(req *corelmv1.GenerateStart) string {
	if req.GetChat() != nil {
		return telemetry.OperationChat
	}
	return telemetry.OperationTextCompletion
}

// message is one message of gen_ai.input.messages / gen_ai.output.messages.
type message struct {
	Role         string `json:"role"`
	Parts        []part `json:"parts"`
	FinishReason string `json:"finish_reason,omitempty"`
}

type part struct {
	Type    string `json:"type"`
	Content string `json:"content"`
}

// recordPrompt puts req's prompt on span: the chat messages as sent, or
// the text as a user message. A prompt of token ids is not recorded.
func recordPrompt(span trace.Span, req *corelmv1.GenerateStart) {
	var msgs []message
	switch p := req.GetPrompt().(type) {
	case *corelmv1.GenerateStart_Text:
		msgs = []message{{Role: "user", Parts: []part{{"text", p.Text}}}}
	case *corelmv1.GenerateStart_Chat:
		for _, m := range p.Chat.GetMessages() {
			msgs = append(msgs, message{Role: m.GetRole(), Parts: []part{{"text", m.GetContent()}}})
		}
	default:
		return
	}
	if b, err := json.Marshal(msgs); err == nil {
		span.SetAttributes(keyInputMessages.String(string(b)))
	}
}

// recordOutput puts the generated text on span.
func recordOutput(span trace.Span, text, finish string) {
	b, err := json.Marshal([]message{{Role: "assistant", Parts: []part{{"text", text}}, FinishReason: finish}})
	if err == nil {
		span.SetAttributes(keyOutputMessages.String(string(b)))
	}
}

// detached is ctx's values (its span, for the trace) without its
// cancellation, cancelled instead when stop ends: work a request starts
// that outlives it (a model load other requests may wait for).
func detached(ctx, stop context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	unhook := context.AfterFunc(stop, cancel)
	return ctx, func() { unhook(); cancel() }
}
