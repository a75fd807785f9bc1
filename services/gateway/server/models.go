package server

import (
	"net/http"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// listModels is GET /v1/models: the models inference serves or is loading.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	resp, err := s.client.ListModels(s.outgoing(r), &corelmv1.ListModelsRequest{})
	if err != nil {
		writeError(w, err)
		return
	}
	list := modelList{Object: "list", Data: []modelObject{}}
	for _, m := range resp.GetModels() {
		list.Data = append(list.Data, toModel(m))
	}
	writeJSON(w, http.StatusOK, list)
}

// getModel is GET /v1/models/{id}.
func (s *Server) getModel(w http.ResponseWriter, r *http.Request) {
	resp, err := s.client.GetModel(s.outgoing(r), &corelmv1.GetModelRequest{ModelId: r.PathValue("id")})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toModel(resp.GetModel()))
}

func toModel(m *corelmv1.ModelInfo) modelObject {
	return modelObject{ID: m.GetModelId(), Object: "model", OwnedBy: "corelm", MaxModelLen: m.GetMaxContext()}
}
