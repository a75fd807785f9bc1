package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// onDemand loads the models requests ask for that are not being served:
// with a loader (WatchLoader), a generation for an unknown model id asks
// the loader to load it by id (LoadModel with no path: the loader's
// published generation, its load in flight, or <id>.gguf in its source
// directory), maps the generation it publishes and then serves the
// request. The load is part of the request's trace: the loader call carries
// it, and the loader's validate, pack, checksum and publish spans follow.
//
// Requests for the same model share one load. It runs on its own, so it
// goes on when the request that started it gives up (the next one finds
// the model ready); each request waits for it as long as its own context
// allows. It stops with the watch.
type onDemand struct {
	s      *Server
	client corelmv1.LoaderServiceClient
	stop   context.Context // the watch's: ends the loads when the server stops

	mu      sync.Mutex
	pending map[string]*pendingLoad // by model id
}

// pendingLoad is one model's load in flight, shared by the requests
// waiting for it.
type pendingLoad struct {
	done chan struct{} // closed when err is set
	err  error
	span trace.SpanContext // the span of the request that started it
}

// acquire returns id's current entry, loading the model first when it is
// not served and a loader can load it.
func (s *Server) acquire(ctx context.Context, id string) (*entry, error) {
	e, err := s.models.acquire(id)
	if !errors.Is(err, ErrModelNotFound) {
		return e, err
	}
	od := s.ondemand.Load()
	if od == nil {
		return nil, err
	}
	if err := od.load(ctx, id); err != nil {
		return nil, err
	}
	return s.models.acquire(id)
}

// load waits until id is loaded and mapped, starting the load unless one
// is in flight.
func (o *onDemand) load(ctx context.Context, id string) error {
	ctx, span := o.s.tracer().Start(ctx, "load model", trace.WithAttributes(keyModel.String(id)))
	defer span.End()
	o.mu.Lock()
	p := o.pending[id]
	shared := p != nil
	if !shared {
		p = &pendingLoad{done: make(chan struct{}), span: span.SpanContext()}
		o.pending[id] = p
		lctx, cancel := detached(ctx, o.stop)
		go func() {
			defer cancel()
			p.err = o.run(lctx, id)
			o.mu.Lock()
			delete(o.pending, id)
			o.mu.Unlock()
			close(p.done)
		}()
	}
	o.mu.Unlock()
	span.SetAttributes(keyShared.Bool(shared))
	if shared && p.span.IsValid() {
		span.AddLink(trace.Link{SpanContext: p.span}) // the load's spans are in that request's trace
	}
	select {
	case <-p.done:
		if p.err != nil {
			span.SetStatus(otelcodes.Error, p.err.Error())
		}
		return p.err
	case <-ctx.Done():
		span.SetStatus(otelcodes.Error, ctx.Err().Error())
		return ctx.Err()
	}
}

// run asks the loader for id and maps what it publishes.
func (o *onDemand) run(ctx context.Context, id string) error {
	log := o.s.log.With("model_id", id)
	log.InfoContext(ctx, "loading model on demand")
	stream, err := o.client.LoadModel(ctx, &corelmv1.LoadModelRequest{ModelId: id})
	if err != nil {
		return o.loadError(ctx, id, err)
	}
	var ready *corelmv1.PublishedModel
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return o.loadError(ctx, id, err)
		}
		if resp.GetStage() == corelmv1.LoadStage_LOAD_STAGE_READY {
			ready = resp.GetModel()
		}
	}
	if ready == nil {
		return fmt.Errorf("%w: %q: the loader's stream ended before the model was ready", ErrModelUnavailable, id)
	}
	if err := o.s.openGeneration(ctx, ready); err != nil {
		return fmt.Errorf("%w: %q: %w", ErrModelUnavailable, id, err)
	}
	return nil
}

// loadError is the error of a failed LoadModel call: NotFound stays
// not-found, the end of the server is ErrStopping, the rest make the model
// unavailable.
func (o *onDemand) loadError(ctx context.Context, id string, err error) error {
	if o.stop.Err() != nil {
		return ErrStopping
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	st := status.Convert(err)
	if st.Code() == codes.NotFound {
		return fmt.Errorf("%w: %q: the loader says: %s", ErrModelNotFound, id, st.Message())
	}
	o.s.log.WarnContext(ctx, "on-demand load failed", "model_id", id, "err", err)
	return fmt.Errorf("%w: %q: the loader says: %s (%s)", ErrModelUnavailable, id, st.Message(), st.Code())
}
