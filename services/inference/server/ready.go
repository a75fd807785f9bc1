package server

import (
	"fmt"
	"slices"
	"sync"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// Readiness: the server is ready when it can serve what it was told to.
// With required models (Config.RequireModels, --require-models) that is
// when every one of them has a generation mapped; without, when any model
// has. Until then health is NOT_SERVING, for the whole server ("") and for
// corelm.v1.InferenceService, so that probes and balancers send nothing,
// and a request for a required model still loading gets Unavailable with
// a RetryInfo detail (ErrModelLoading) rather than NotFound.
//
// After that the two differ. corelm.v1.InferenceService follows readiness:
// a required model that goes away (unloaded) turns it NOT_SERVING until
// the model is published again — the readiness probe. The whole server
// stays SERVING until shutdown: the process is alive and started — the
// liveness probe, which must not restart a pod over a model that another
// restart would not bring back.

// loadingRetry is the RetryInfo delay of ErrModelLoading: a load of a
// large model takes tens of seconds, a retry storm helps nobody.
const loadingRetry = 2 * time.Second

// readiness tracks whether the server is ready and tells health.
type readiness struct {
	mu      sync.Mutex
	serving bool      // what health was last told
	once    sync.Once // onReady runs the first time the server is ready
	onReady func()
}

// RequireModels names the models the server must serve before it is ready;
// call it before serving.
func (s *Server) RequireModels(ids []string) {
	s.models.required = map[string]bool{}
	for _, id := range ids {
		s.models.required[id] = true
	}
}

// loadingError is the error of a request for id while it is loading, or
// nil when id is not a required model.
func (r *registry) loadingErrorLocked(id string) error {
	if !r.required[id] {
		return nil
	}
	return fmt.Errorf("%w: %q is being loaded and is not served yet; retry in a few seconds", ErrModelLoading, id)
}

// loadingLocked lists the required models not served yet, sorted.
func (r *registry) loadingLocked() []string {
	var ids []string
	for id := range r.required {
		if r.current[id] == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// readyState says whether the server can serve what it must, and which
// required models are still loading.
func (r *registry) readyState() (ready bool, loading []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	loading = r.loadingLocked()
	if len(r.required) > 0 {
		return len(loading) == 0, loading
	}
	return len(r.current) > 0, nil
}

// checkReady brings health in line with the models served; the first time
// the server is ready it also runs onReady (the "serving" log line and
// Config.Ready). Called whenever the served models change.
func (s *Server) checkReady() {
	ready, loading := s.models.readyState()
	s.ready.mu.Lock()
	changed := ready != s.ready.serving
	s.ready.serving = ready
	if changed && s.health != nil {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if ready {
			st = healthpb.HealthCheckResponse_SERVING
		}
		// The service first: a client that sees the whole server SERVING
		// must find the service SERVING too.
		s.health.SetServingStatus(corelmv1.InferenceService_ServiceDesc.ServiceName, st)
		if ready {
			s.health.SetServingStatus("", st) // started: never back to NOT_SERVING
		}
	}
	s.ready.mu.Unlock()
	switch {
	case ready && s.ready.onReady != nil:
		s.ready.once.Do(s.ready.onReady)
	case !ready && changed:
		s.log.Warn("not ready: no longer serving what it must", "loading", loading)
	case !ready && len(loading) > 0:
		s.log.Info("not ready yet", "loading", loading)
	}
}

// loadingInfos describes the required models still loading, for
// ListModels.
func (r *registry) loadingInfos() []*corelmv1.ModelInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*corelmv1.ModelInfo
	for _, id := range r.loadingLocked() {
		out = append(out, &corelmv1.ModelInfo{ModelId: id, State: corelmv1.ModelState_MODEL_STATE_LOADING})
	}
	return out
}
