package server

import (
	"context"
	"time"

	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// WatchLoader follows the loader's published models until ctx ends: each
// new generation is mapped, checked and put in front of new requests while
// the requests running on the old one finish on its mapping; an unloaded
// model is retired the same way. After a reconnect, models the loader no
// longer lists are retired once it says the snapshot is complete (SYNCED).
// ready is called after the first SYNCED. Meanwhile a request for a model
// that is not served asks the loader for it (ondemand.go).
func (s *Server) WatchLoader(ctx context.Context, cc grpc.ClientConnInterface, ready func()) error {
	client := corelmv1.NewLoaderServiceClient(cc)
	s.ondemand.Store(&onDemand{s: s, client: client, stop: ctx, pending: map[string]*pendingLoad{}})
	defer s.ondemand.Store(nil)
	backoff := 100 * time.Millisecond
	first := true
	for {
		err := s.watchOnce(ctx, client, func() {
			backoff = 100 * time.Millisecond
			if first {
				first = false
				if ready != nil {
					ready()
				}
			}
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn("loader watch ended, reconnecting", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxWatchBackoff)
	}
}

func (s *Server) watchOnce(ctx context.Context, client corelmv1.LoaderServiceClient, synced func()) error {
	stream, err := client.WatchModels(ctx, &corelmv1.WatchModelsRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return err
		}
		pm := ev.GetModel()
		switch ev.GetKind() {
		case corelmv1.ModelEventKind_MODEL_EVENT_KIND_PUBLISHED:
			seen[pm.GetModelId()] = true
			s.openGeneration(ctx, pm)
		case corelmv1.ModelEventKind_MODEL_EVENT_KIND_UNLOADED:
			if s.models.generation(pm.GetModelId()) <= pm.GetGeneration() || pm.GetGeneration() == 0 {
				s.log.Info("model unloaded", "model_id", pm.GetModelId())
				s.models.remove(pm.GetModelId())
				s.checkReady()
			}
		case corelmv1.ModelEventKind_MODEL_EVENT_KIND_SYNCED:
			current, _ := s.models.entries()
			for _, e := range current {
				if !seen[e.id] && e.gen != 0 { // gen 0: served from a file, not the loader's
					s.models.remove(e.id)
				}
			}
			s.checkReady()
			synced()
		}
	}
}

// openGeneration maps and switches to a published generation, unless it is
// not newer than the one served. Its span ("map model") is in the trace of
// the request that caused the load, or a trace of its own when the watch
// brought it.
func (s *Server) openGeneration(ctx context.Context, pm *corelmv1.PublishedModel) error {
	s.models.opening.Lock()
	defer s.models.opening.Unlock()
	id := pm.GetModelId()
	if s.models.generation(id) >= pm.GetGeneration() {
		return nil
	}
	ctx, span := s.tracer().Start(ctx, "map model", trace.WithAttributes(keyModel.String(id),
		keyGeneration.Int64(int64(pm.GetGeneration())), keyPath.String(pm.GetPath()), keyBytes.Int64(pm.GetSizeBytes())))
	defer span.End()
	start := time.Now()
	e, err := openPublished(pm, s.modelConfig())
	if err != nil {
		span.SetStatus(otelcodes.Error, err.Error())
		s.log.ErrorContext(ctx, "cannot serve published model", "model_id", id, "generation", pm.GetGeneration(), "path", pm.GetPath(), "err", err)
		return err
	}
	if !s.models.publish(e) {
		e.close()
		return ErrStopping // the only refusal left: the generation was checked above
	}
	s.log.InfoContext(ctx, "serving generation", "model_id", id, "generation", e.gen, "path", pm.GetPath(), "open", time.Since(start))
	s.checkReady()
	return nil
}

// maxWatchBackoff caps the waits between attempts to reach the loader: the
// watch's and its connection's.
const maxWatchBackoff = 10 * time.Second
