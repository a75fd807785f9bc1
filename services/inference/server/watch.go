package server

import (
	"context"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// WatchLoader follows the loader's published models until ctx ends: each
// new generation is mapped, checked and put in front of new requests while
// the requests running on the old one finish on its mapping; an unloaded
// model is retired the same way. After a reconnect, models the loader no
// longer lists are retired once it says the snapshot is complete (SYNCED).
// ready is called after the first SYNCED.
func (s *Server) WatchLoader(ctx context.Context, cc grpc.ClientConnInterface, ready func()) error {
	client := corelmv1.NewLoaderServiceClient(cc)
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
		backoff = min(2*backoff, 10*time.Second)
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
			s.openGeneration(pm)
		case corelmv1.ModelEventKind_MODEL_EVENT_KIND_UNLOADED:
			if s.models.generation(pm.GetModelId()) <= pm.GetGeneration() || pm.GetGeneration() == 0 {
				s.log.Info("model unloaded", "model_id", pm.GetModelId())
				s.models.remove(pm.GetModelId())
			}
		case corelmv1.ModelEventKind_MODEL_EVENT_KIND_SYNCED:
			current, _ := s.models.entries()
			for _, e := range current {
				if !seen[e.id] && e.gen != 0 { // gen 0: served from a file, not the loader's
					s.models.remove(e.id)
				}
			}
			synced()
		}
	}
}

// openGeneration maps and switches to a published generation, unless it is
// not newer than the one served.
func (s *Server) openGeneration(pm *corelmv1.PublishedModel) {
	id := pm.GetModelId()
	if s.models.generation(id) >= pm.GetGeneration() {
		return
	}
	start := time.Now()
	e, err := openPublished(pm, s.modelConfig())
	if err != nil {
		s.log.Error("cannot serve published model", "model_id", id, "generation", pm.GetGeneration(), "path", pm.GetPath(), "err", err)
		return
	}
	if !s.models.publish(e) {
		e.close()
		return
	}
	s.log.Info("serving generation", "model_id", id, "generation", e.gen, "path", pm.GetPath(), "open", time.Since(start))
	if s.health != nil {
		s.health.SetServingStatus(corelmv1.InferenceService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	}
}
