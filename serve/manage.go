package serve

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"
)

// Ollama's model management: /api/pull downloads a model into the model
// store with NDJSON progress, /api/delete removes one. The store is the
// server's ModelManager (cmd/wgllm's, over internal/hub and
// internal/modelstore).

// PullProgress is one step of a pull, in Ollama's terms: a status, and
// while a file downloads its digest and bytes.
type PullProgress struct {
	Status    string `json:"status"`
	Digest    string `json:"digest,omitempty"`
	Total     int64  `json:"total,omitempty"`
	Completed int64  `json:"completed,omitempty"`
}

// ModelManager changes the models a server can serve.
type ModelManager interface {
	// Pull downloads a model (a hub reference, REPO[:FILE|:TAG]) unless it
	// is there; progress gets each step. It returns the model's name.
	Pull(ctx context.Context, ref string, progress func(PullProgress)) (string, error)
	// Delete removes a model from the store; ErrUnknownModel when there is
	// none of that name.
	Delete(name string) error
}

var errNoManager = &apiError{Status: http.StatusNotImplemented, Type: "server_error", Code: codeUnsupported,
	Message: "this server has no model store to manage"}

// manageRequest is the body of /api/pull and /api/delete.
type manageRequest struct {
	Model  string `json:"model"`
	Name   string `json:"name"` // Ollama's older name for model
	Stream *bool  `json:"stream"`
}

// decodeManage reads a manageRequest, answering the error when it is bad
// or the server has no ModelManager.
func (s *Server) decodeManage(w http.ResponseWriter, r *http.Request, req *manageRequest) bool {
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, req); aerr != nil {
		writeError(w, aerr)
		return false
	}
	if req.Model == "" {
		req.Model = req.Name
	}
	switch {
	case req.Model == "":
		writeError(w, invalidParam("model", "model is required"))
		return false
	case s.cfg.Manager == nil:
		writeError(w, errNoManager)
		return false
	}
	return true
}

// pullEvery is the least time between two progress lines of a download.
const pullEvery = 250 * time.Millisecond

func (s *Server) handleOllamaPull(w http.ResponseWriter, r *http.Request) {
	var req manageRequest
	if !s.decodeManage(w, r, &req) {
		return
	}
	stream := req.Stream == nil || *req.Stream
	log := reqLog(r)
	if !stream {
		name, err := s.cfg.Manager.Pull(r.Context(), req.Model, func(PullProgress) {})
		if err != nil {
			writeError(w, pullError(err))
			return
		}
		log.Info().Str("model", name).Msg("pulled")
		writeJSON(w, http.StatusOK, PullProgress{Status: "success"})
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	var mu sync.Mutex
	var last time.Time
	var lastStatus string
	write := func(v any, force bool) {
		mu.Lock()
		defer mu.Unlock()
		p, isProgress := v.(PullProgress)
		if isProgress && !force && p.Status == lastStatus && time.Since(last) < pullEvery && p.Completed < p.Total {
			return
		}
		if isProgress {
			last, lastStatus = time.Now(), p.Status
		}
		body, _ := json.Marshal(v)
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if _, err := w.Write(append(body, '\n')); err == nil {
			_ = rc.Flush()
		}
	}
	write(PullProgress{Status: "pulling manifest"}, true)
	name, err := s.cfg.Manager.Pull(r.Context(), req.Model, func(p PullProgress) { write(p, false) })
	if err != nil {
		log.Info().Err(err).Str("model", req.Model).Msg("pull failed")
		write(ollamaErrorBody{Error: pullError(err).Message}, true)
		return
	}
	log.Info().Str("model", name).Msg("pulled")
	write(PullProgress{Status: "verifying sha256 digest"}, true)
	write(PullProgress{Status: "success"}, true)
}

// pullError maps a failed pull: an unknown model is 404, the rest 500 (a
// bad reference is the manager's *apiError).
func pullError(err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, ErrUnknownModel):
		return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: codeModelNotFound, Param: "model", Message: err.Error()}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "pull_failed", Message: "pulling: " + err.Error()}
}

func (s *Server) handleOllamaDelete(w http.ResponseWriter, r *http.Request, b Backend) {
	var req manageRequest
	if !s.decodeManage(w, r, &req) {
		return
	}
	if req.Model == b.ModelName() || req.Model == ollamaName(b.ModelName()) {
		writeError(w, invalidParam("model", "%q is the model this server serves by default; it cannot be deleted", req.Model))
		return
	}
	if err := s.cfg.Manager.Delete(req.Model); err != nil {
		writeError(w, pullError(err))
		return
	}
	catalogChanged(b, req.Model)
	reqLog(r).Info().Str("model", req.Model).Msg("deleted")
	w.WriteHeader(http.StatusOK)
}
