package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	otelcodes "go.opentelemetry.io/otel/codes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/corelm/corelm/pkg/runtime/constrain"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/sched"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/internal/grpcserver"
	"github.com/corelm/corelm/services/internal/telemetry"
)

// Defaults of the per-request limits the service adds to the
// scheduler's (Options).
const (
	// DefaultMaxPromptBytes is a prompt's largest size before it is
	// tokenized: far above any context this runtime serves (8192 tokens
	// are ~32 KiB of text), well below the 4 MiB message limit.
	DefaultMaxPromptBytes = 1 << 20
	// DefaultMaxStreamGenerations is the most generations one Generate
	// stream runs at once: one client cannot take every slot and queue
	// place with a single stream.
	DefaultMaxStreamGenerations = 16
)

// generation is one started request: the model entry it holds, its
// scheduler handle and its telemetry.
type generation struct {
	id     string
	e      *entry
	h      *sched.Handle
	cancel context.CancelFunc
	tel    *telemetry.Generation
	log    *slog.Logger     // with request_id and model_id
	out    *strings.Builder // the output so far, when the span records it
	calls  *callStream      // a chat reply that may call tools, else nil
}

// start begins a generation's telemetry (its span, a child of the call's,
// at the level the call asks for within the server's maximum), resolves
// the model (loading it on demand), builds the prompt and submits the
// request. On success the caller must run pump with the returned context,
// which carries the generation's span. The scheduler validates the
// request; its errors become statuses in toStatus.
func (s *Server) start(ctx context.Context, req *corelmv1.GenerateStart) (context.Context, *generation, error) {
	id, rid := req.GetModelId(), req.GetRequestId()
	if err := s.checkStart(req); err != nil {
		return ctx, nil, err
	}
	md, _ := metadata.FromIncomingContext(ctx)
	level := telemetry.LevelFromIncoming(md, s.opts.Tracing.Level, s.opts.Tracing.Max)
	ctx, tg := s.telemetry().StartGeneration(ctx, telemetry.GenerationStart{
		Model: id, Operation: operation(req), RequestID: rid, Level: level})
	g := &generation{id: rid, tel: tg, log: s.log.With("request_id", rid, "model_id", id)}
	if tg.Span().IsRecording() && s.traceContent(md) {
		recordPrompt(tg.Span(), req)
		g.out = &strings.Builder{}
	}
	if err := s.submit(ctx, g, req); err != nil {
		if errors.Is(err, ErrModelNotFound) {
			// Traced, but kept out of the metrics: every unknown id
			// would be a series of its own.
			tg.Span().SetStatus(otelcodes.Error, err.Error())
		} else {
			tg.Fail(withStatus(err)) // a no-op when Submit's error was recorded
		}
		tg.End()
		g.log.InfoContext(ctx, "generation refused", "code", toStatus(err).Code().String(), "err", err)
		return ctx, nil, err
	}
	g.log.DebugContext(ctx, "generation started", "trace_level", level.String())
	return ctx, g, nil
}

// checkStart checks what a GenerateStart can be refused for before its
// model is resolved: the model id and the prompt's size.
func (s *Server) checkStart(req *corelmv1.GenerateStart) error {
	if err := corelmv1.ValidateModelID(req.GetModelId()); err != nil {
		return badRequestf("%v", err)
	}
	if req.GetPrompt() != nil { // none: promptTokens says what is missing
		return sched.CheckPromptBytes(promptBytes(req), s.opts.MaxPromptBytes)
	}
	return nil
}

// submit resolves the model and submits req, recording the outcome on
// g.tel (Submitted, once: the last attempt's).
func (s *Server) submit(ctx context.Context, g *generation, req *corelmv1.GenerateStart) error {
	// A model switch between acquire and Submit closes the old scheduler:
	// try again on the new generation.
	for attempt := 0; ; attempt++ {
		e, err := s.acquire(ctx, req.GetModelId())
		if err != nil {
			return err
		}
		sr, plan, err := buildRequest(e, req)
		if err != nil {
			s.models.release(e)
			return err
		}
		g.calls = nil
		if plan != nil {
			g.calls = &callStream{p: plan}
		}
		g.tel.Attach(&sr)
		if c := req.GetConstraint(); c != nil {
			g.tel.Constrained(constraintKind(c))
		} else if plan != nil && plan.forced {
			g.tel.Constrained("tool_call")
		}
		gctx, cancel := context.WithCancel(ctx)
		h, err := e.sched.Submit(gctx, sr)
		if err != nil {
			cancel()
			s.models.release(e)
			if errors.Is(err, sched.ErrClosed) && attempt < 3 {
				continue
			}
			g.tel.Submitted(err)
			return err
		}
		g.tel.Submitted(nil)
		g.e, g.h, g.cancel = e, h, cancel
		return nil
	}
}

// buildRequest turns a GenerateStart into a scheduler request on e, and
// the tool calling its chat prompt asks for (nil: none).
func buildRequest(e *entry, req *corelmv1.GenerateStart) (sched.Request, *toolPlan, error) {
	var plan *toolPlan
	if c := req.GetChat(); c != nil {
		var err error
		if plan, err = readTools(e, c); err != nil {
			return sched.Request{}, nil, err
		}
	}
	prompt, err := promptTokens(e, req, plan)
	if err != nil {
		return sched.Request{}, nil, err
	}
	var constraint sched.Constraint
	switch c := req.GetConstraint(); {
	case plan != nil && plan.forced && c != nil:
		return sched.Request{}, nil, badRequestf("constraint: a forced tool call (tool_choice REQUIRED or FUNCTION) is already constrained to the call's grammar; set one or the other")
	case plan != nil && plan.forced:
		constraint, err = plan.callConstraint(e, req.GetStopTokenIds())
	case c != nil:
		constraint, err = outputConstraint(e, c, req.GetStopTokenIds())
	}
	if err != nil {
		return sched.Request{}, nil, err
	}
	return sched.Request{
		Constraint:  constraint,
		Prompt:      prompt,
		MaxTokens:   int(req.GetMaxTokens()),
		Sampling:    samplingParams(req.GetSampling()),
		StopTokens:  req.GetStopTokenIds(),
		IsEOG:       e.tok.IsEOG,
		StopStrings: req.GetStop(),
		Decoder:     e.tok.NewDecoder(),
		Logprobs:    req.GetLogprobs(),
		TopLogprobs: int(req.GetTopLogprobs()),
		NoCache:     req.Cache != nil && !req.GetCache(),
	}, plan, nil
}

// constraints keeps compiled output constraints by hash: a grammar does
// not depend on the model, and clients send the same schema again and
// again.
var constraints = constrain.NewCache(256)

// matchers keeps the matchers of finished constrained generations, warm,
// for the next request under the same grammar on the same model.
var matchers = constrain.NewPool(16)

// outputConstraint compiles c (refusing what is not supported, naming it)
// and starts its matcher over e's vocabulary.
func outputConstraint(e *entry, c *corelmv1.OutputConstraint, stops []int32) (sched.Constraint, error) {
	var spec constrain.Spec
	switch k := c.GetKind().(type) {
	case *corelmv1.OutputConstraint_JsonSchema:
		spec = constrain.Spec{Kind: constrain.JSONSchema, Text: k.JsonSchema}
	case *corelmv1.OutputConstraint_JsonObject:
		if !k.JsonObject {
			return nil, badRequestf("constraint: json_object must be true when set")
		}
		spec = constrain.Spec{Kind: constrain.JSONObject}
	case *corelmv1.OutputConstraint_Grammar:
		spec = constrain.Spec{Kind: constrain.GBNF, Text: k.Grammar}
	case *corelmv1.OutputConstraint_Regex:
		spec = constrain.Spec{Kind: constrain.Regex, Text: k.Regex}
	default:
		return nil, badRequestf("constraint: set one of json_schema, json_object, grammar or regex")
	}
	return compiledConstraint(e, spec, stops)
}

// compiledConstraint compiles spec (cached) and starts its matcher over
// e's vocabulary.
func compiledConstraint(e *entry, spec constrain.Spec, stops []int32) (sched.Constraint, error) {
	g, err := constraints.Compile(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: constraint %v: %w", ErrBadRequest, spec.Kind, err)
	}
	for _, t := range stops {
		if t < 0 || int(t) >= e.tok.VocabSize() {
			return nil, badRequestf("stop_token_ids: %d is outside the vocabulary", t)
		}
	}
	return matchers.Get(g, e.vocab(), stops), nil
}

// constraintKind names the kind of c as the proto's oneof does.
func constraintKind(c *corelmv1.OutputConstraint) string {
	switch c.GetKind().(type) {
	case *corelmv1.OutputConstraint_JsonSchema:
		return "json_schema"
	case *corelmv1.OutputConstraint_JsonObject:
		return "json_object"
	case *corelmv1.OutputConstraint_Grammar:
		return "grammar"
	case *corelmv1.OutputConstraint_Regex:
		return "regex"
	}
	return "none"
}

func promptTokens(e *entry, req *corelmv1.GenerateStart, plan *toolPlan) ([]int32, error) {
	bos := bosMode(req.AddBos)
	switch p := req.GetPrompt().(type) {
	case *corelmv1.GenerateStart_Text:
		return encode(e, p.Text, tokenizer.EncodeOptions{AddBOS: bos, ParseSpecial: req.GetParseSpecial()})
	case *corelmv1.GenerateStart_TokenIds:
		return p.TokenIds.GetIds(), nil
	case *corelmv1.GenerateStart_Chat:
		return chatTokens(e, p.Chat, plan, bos, req.AddBos != nil, req.GetParseSpecial())
	}
	return nil, badRequestf("a prompt (text, token_ids or chat) is required")
}

// promptBytes is the size of req's prompt as sent: its text, its token
// ids at 4 bytes each, or its chat messages' contents.
func promptBytes(req *corelmv1.GenerateStart) int {
	switch p := req.GetPrompt().(type) {
	case *corelmv1.GenerateStart_Text:
		return len(p.Text)
	case *corelmv1.GenerateStart_TokenIds:
		return 4 * len(p.TokenIds.GetIds())
	case *corelmv1.GenerateStart_Chat:
		return proto.Size(p.Chat)
	}
	return 0
}

// bosMode maps an optional add_bos to the tokenizer's mode (unset: the
// model's default).
func bosMode(add *bool) tokenizer.BOSMode {
	switch {
	case add == nil:
		return tokenizer.BOSModel
	case *add:
		return tokenizer.BOSForce
	}
	return tokenizer.BOSNone
}

func encode(e *entry, text string, opts tokenizer.EncodeOptions) ([]int32, error) {
	ids, err := e.tok.Encode(text, opts)
	if err != nil {
		return nil, badRequestf("tokenize: %v", err)
	}
	return ids, nil
}

// samplingParams are llama.cpp's defaults (sample.Defaults) with the
// request's fields set over them, and a random seed unless it gives one.
func samplingParams(sp *corelmv1.SamplingParams) sample.Params {
	p := sample.Defaults()
	p.Seed = rand.Uint64()
	if sp == nil {
		return p
	}
	if sp.Temperature != nil {
		p.Temperature = sp.GetTemperature()
	}
	if sp.TopK != nil {
		p.TopK = int(sp.GetTopK())
	}
	if sp.TopP != nil {
		p.TopP = sp.GetTopP()
	}
	if sp.MinP != nil {
		p.MinP = sp.GetMinP()
	}
	if sp.TypicalP != nil {
		p.TypicalP = sp.GetTypicalP()
	}
	if sp.RepetitionPenalty != nil {
		p.RepeatPenalty = sp.GetRepetitionPenalty()
	}
	if sp.RepeatLastN != nil {
		p.RepeatLastN = int(sp.GetRepeatLastN())
	}
	if sp.PresencePenalty != nil {
		p.PresencePenalty = sp.GetPresencePenalty()
	}
	if sp.FrequencyPenalty != nil {
		p.FrequencyPenalty = sp.GetFrequencyPenalty()
	}
	if len(sp.GetLogitBias()) > 0 {
		p.LogitBias = sp.GetLogitBias()
	}
	if sp.Seed != nil {
		p.Seed = sp.GetSeed()
	}
	return p
}

// pump forwards g's events to send until the final one, then releases the
// model and ends g's telemetry. When send fails (the client is gone) the
// request is cancelled; the scheduler drops it before its next step. ctx
// is start's: it only stamps the log lines with the trace.
func (s *Server) pump(ctx context.Context, g *generation, send func(*corelmv1.GenerateResponse) error) {
	defer g.tel.End()
	defer s.models.release(g.e)
	defer g.cancel()
	sendOK := true
	for {
		// The scheduler always ends a request with a final event, within
		// a step of cancellation, so this wait is bounded.
		ev, err := g.h.Recv(context.Background())
		if err == io.EOF {
			return
		}
		if err != nil {
			return
		}
		g.observe(ctx, &ev)
		if !sendOK {
			continue
		}
		for _, r := range s.frames(g, &ev) {
			if err := send(r); err != nil {
				sendOK = false
				g.cancel()
				break
			}
		}
	}
}

// observe follows g's events for its span and its log: the output text
// (when recorded) and, at the end, the "generation finished" line with
// what an operator looks for first.
func (g *generation) observe(ctx context.Context, ev *sched.Event) {
	switch ev.Kind {
	case sched.EventToken:
		if g.out != nil {
			g.out.WriteString(ev.Text)
		}
	case sched.EventFinal:
		f := ev.Final
		if g.out != nil {
			g.out.WriteString(f.Text)
			recordOutput(g.tel.Span(), g.out.String(), f.Reason.String())
		}
		attrs := []any{"finish_reason", f.Reason.String(),
			"prompt_tokens", f.Usage.PromptTokens, "completion_tokens", f.Usage.CompletionTokens,
			"cached_tokens", f.Usage.CachedTokens, "ttft_ms", millis(f.Timings.TTFT), "tok_s", decodeRate(f),
			"queue_ms", millis(f.Timings.Queue), "duration_ms", millis(f.Timings.Total)}
		if f.Err != nil {
			attrs = append(attrs, "err", f.Err)
		}
		g.log.InfoContext(ctx, "generation finished", attrs...)
	}
}

// decodeRate is the output tokens per second after the first: the decode
// speed, without the prompt's time.
func decodeRate(f *sched.Final) float64 {
	n := f.Usage.CompletionTokens - 1
	if n <= 0 || f.Timings.Decode <= 0 {
		return 0
	}
	return math.Round(float64(n)/f.Timings.Decode.Seconds()*100) / 100
}

func millis(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }

// withStatus gives err its gRPC status for telemetry's error.type, keeping
// its message and what it wraps.
func withStatus(err error) error { return statusError{err, toStatus(err)} }

type statusError struct {
	err error
	st  *status.Status
}

func (e statusError) Error() string              { return e.err.Error() }
func (e statusError) Unwrap() error              { return e.err }
func (e statusError) GRPCStatus() *status.Status { return e.st }

// frames converts a scheduler event to response frames.
func (s *Server) frames(g *generation, ev *sched.Event) []*corelmv1.GenerateResponse {
	switch ev.Kind {
	case sched.EventToken:
		t := tokenFrame(g.e, ev)
		if g.calls != nil {
			t.Text = g.calls.token(t.Text)
		}
		return []*corelmv1.GenerateResponse{{RequestId: g.id, Frame: &corelmv1.GenerateResponse_Token{Token: t}}}
	case sched.EventProgress:
		return []*corelmv1.GenerateResponse{{RequestId: g.id, Frame: &corelmv1.GenerateResponse_Progress{Progress: &corelmv1.PromptProgress{
			ProcessedTokens: int32(ev.PromptDone), TotalTokens: int32(ev.PromptTotal),
		}}}}
	case sched.EventFinal:
		f := finalFrame(ev.Final)
		if g.calls != nil {
			stopped := ev.Final.Reason == sched.FinishStop || ev.Final.Reason == sched.FinishStopSequence
			f.Text, f.ToolCalls = g.calls.finish(f.Text, stopped)
			if len(f.ToolCalls) > 0 {
				f.FinishReason = corelmv1.FinishReason_FINISH_REASON_TOOL_CALLS
			}
		}
		return []*corelmv1.GenerateResponse{{RequestId: g.id, Frame: &corelmv1.GenerateResponse_Final{Final: f}}}
	}
	return nil
}

func tokenFrame(e *entry, ev *sched.Event) *corelmv1.GeneratedToken {
	t := &corelmv1.GeneratedToken{Id: ev.Token, Text: ev.Text, Raw: ev.Raw}
	if ev.Logprob != nil {
		lp := ev.Logprob.Logprob
		t.Logprob = &lp
	}
	for _, alt := range ev.Top {
		t.TopLogprobs = append(t.TopLogprobs, &corelmv1.TokenLogprob{Id: alt.ID, Raw: e.tok.TokenBytes(alt.ID), Logprob: alt.Logprob})
	}
	return t
}

func finalFrame(f *sched.Final) *corelmv1.GenerateFinal {
	out := &corelmv1.GenerateFinal{
		FinishReason: finishReason(f.Reason),
		StopSequence: f.StopSequence,
		// Text held back until the end (a partial stop string, an
		// unfinished character) has no token of its own.
		Text: f.Text,
		Usage: &corelmv1.Usage{
			PromptTokens: int32(f.Usage.PromptTokens), CompletionTokens: int32(f.Usage.CompletionTokens),
			CachedTokens: int32(f.Usage.CachedTokens),
		},
		Timings: &corelmv1.Timings{
			QueueNs: f.Timings.Queue.Nanoseconds(), PrefillNs: f.Timings.Prefill.Nanoseconds(),
			DecodeNs: f.Timings.Decode.Nanoseconds(), TimeToFirstTokenNs: f.Timings.TTFT.Nanoseconds(),
		},
	}
	if f.Err != nil {
		st := toStatus(f.Err)
		out.ErrorMessage = st.Message()
		out.ErrorCode = int32(st.Code())
	}
	return out
}

func finishReason(r sched.FinishReason) corelmv1.FinishReason {
	switch r {
	case sched.FinishStop:
		return corelmv1.FinishReason_FINISH_REASON_STOP
	case sched.FinishLength:
		return corelmv1.FinishReason_FINISH_REASON_LENGTH
	case sched.FinishStopSequence:
		return corelmv1.FinishReason_FINISH_REASON_STOP_SEQUENCE
	case sched.FinishCancelled:
		return corelmv1.FinishReason_FINISH_REASON_CANCELLED
	}
	return corelmv1.FinishReason_FINISH_REASON_ERROR
}

// errorFinal is the final frame of a generation that could not start.
func errorFinal(id string, err error) *corelmv1.GenerateResponse {
	st := toStatus(err)
	return &corelmv1.GenerateResponse{RequestId: id, Frame: &corelmv1.GenerateResponse_Final{Final: &corelmv1.GenerateFinal{
		FinishReason: corelmv1.FinishReason_FINISH_REASON_ERROR, ErrorMessage: st.Message(), ErrorCode: int32(st.Code()),
	}}}
}

// GenerateStream runs one generation. Errors before the first token
// (bad input, unknown model, overload) are the call's status; afterwards
// the final frame tells how it ended.
func (s *Server) GenerateStream(req *corelmv1.GenerateStart, stream grpc.ServerStreamingServer[corelmv1.GenerateResponse]) error {
	if s.stopping() {
		return toError(ErrStopping)
	}
	ctx, g, err := s.start(stream.Context(), req)
	if err != nil {
		return toError(err)
	}
	s.pump(ctx, g, stream.Send)
	return toError(stream.Context().Err())
}

// Generate multiplexes generations over one bidi stream. Frames of
// different requests interleave; sends are serialised, and a slow client
// slows only this stream's generations (their scheduler buffers fill and
// they pause).
func (s *Server) Generate(stream grpc.BidiStreamingServer[corelmv1.GenerateRequest, corelmv1.GenerateResponse]) error {
	ctx, cancelAll := context.WithCancel(stream.Context())
	defer cancelAll()
	var sendMu sync.Mutex
	send := func(r *corelmv1.GenerateResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(r)
	}
	// A request runs from its Start frame to its final frame; while it
	// starts (the model may be loading) a Cancel stops it through cancel.
	type request struct {
		cancel context.CancelFunc
		g      *generation // once started
	}
	var (
		mu      sync.Mutex
		running = map[string]*request{}
		wg      sync.WaitGroup
	)
	defer wg.Wait()

	// A frame with invalid UTF-8 comes as an *InvalidUTF8Error carrying
	// the frame (grpcserver/utf8.go): it is answered for its request alone.
	type frame struct {
		fr  *corelmv1.GenerateRequest
		bad *grpcserver.InvalidUTF8Error
	}
	frames := make(chan frame)
	recvErr := make(chan error, 1)
	go func() {
		for {
			fr, err := stream.Recv()
			var bad *grpcserver.InvalidUTF8Error
			if errors.As(err, &bad) {
				fr, _ = bad.Msg.(*corelmv1.GenerateRequest)
			} else if err != nil {
				recvErr <- err
				return
			}
			select {
			case frames <- frame{fr, bad}:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		var fr *corelmv1.GenerateRequest
		select {
		case f := <-frames:
			fr = f.fr
			if f.bad != nil {
				id := fr.GetStart().GetRequestId() + fr.GetCancel().GetRequestId()
				if send(errorFinal(id, badRequestf("%v", f.bad))) != nil {
					return toError(ctx.Err())
				}
				continue
			}
		case err := <-recvErr:
			if err == io.EOF {
				wg.Wait() // the client is done sending: finish what runs
				return nil
			}
			return toError(err)
		case <-s.drained:
			cancelAll()
			wg.Wait()
			return toError(ErrStopping)
		}
		switch f := fr.GetFrame().(type) {
		case *corelmv1.GenerateRequest_Start:
			id := f.Start.GetRequestId()
			mu.Lock()
			_, dup := running[id]
			n := len(running)
			mu.Unlock()
			var err error
			switch {
			case id == "":
				err = badRequestf("request_id is required on a Generate stream")
			case dup:
				err = badRequestf("request_id %q is already running on this stream", id)
			case n >= s.opts.MaxStreamGenerations:
				err = &StreamLimitError{Running: n}
			case s.stopping():
				err = ErrStopping
			}
			if err != nil {
				if send(errorFinal(id, err)) != nil {
					return toError(ctx.Err())
				}
				continue
			}
			// Started on its own goroutine: a model loaded on demand must
			// not hold up the stream's other frames.
			rctx, cancel := context.WithCancel(ctx)
			r := &request{cancel: cancel}
			mu.Lock()
			running[id] = r
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(running, id)
					mu.Unlock()
					cancel()
				}()
				gctx, g, err := s.start(rctx, f.Start)
				if err != nil {
					send(errorFinal(id, err)) // a failed send: the stream is ending
					return
				}
				mu.Lock()
				r.g = g
				mu.Unlock()
				s.pump(gctx, g, send)
			})
		case *corelmv1.GenerateRequest_Cancel:
			mu.Lock()
			var g *generation
			r := running[f.Cancel.GetRequestId()]
			if r != nil {
				g = r.g
			}
			mu.Unlock()
			switch {
			case g != nil:
				g.h.Cancel()
			case r != nil:
				r.cancel()
			default:
				// Answered, so that a client's typo or a stale id is
				// not silently ignored. A Cancel that crosses its
				// generation's own end gets this after the final frame.
				id := f.Cancel.GetRequestId()
				if send(errorFinal(id, fmt.Errorf("%w: %q", ErrUnknownRequest, id))) != nil {
					return toError(ctx.Err())
				}
			}
		default:
			if send(errorFinal("", badRequestf("empty frame: want start or cancel"))) != nil {
				return toError(ctx.Err())
			}
		}
	}
}
