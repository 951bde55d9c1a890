package serve

import (
	"net/http"
	"time"

	"github.com/wgllm/wgllm/runtime/engine"
)

// Request status: POST /v1/requests starts a generation that runs without
// a connection; GET /v1/requests/{id} polls it; DELETE cancels it.

// maxCancelWait bounds how long DELETE waits for the job to report its end.
const maxCancelWait = 5 * time.Second

// handleRequestCreate takes a completions body ("prompt") or a chat body
// ("messages") and answers 202 {"id":…, "status":"queued"}.
func (s *Server) handleRequestCreate(w http.ResponseWriter, r *http.Request, b Backend) {
	var req genRequest
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	if req.Stream {
		writeError(w, invalidParam("stream", "a request started here is polled with GET /v1/requests/{id}; stream with /v1/chat/completions, /v1/completions or /ws"))
		return
	}
	kind := kindCompletion
	if req.Messages != nil {
		kind = kindChat
	}
	g, aerr := s.openAIGeneration(&req, kind)
	if aerr != nil {
		reqLog(r).Info().Str("code", aerr.Code).Str("param", aerr.Param).Msg(aerr.Message)
		writeError(w, aerr)
		return
	}
	// The engine keeps the text for Status; the server needs no events.
	job, aerr := s.start(r, b, g, protocol{endpoint: "requests", idPrefix: "req-"}, func(engine.Event) {})
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	tj := job.tj
	w.Header().Set("Location", "/v1/requests/"+tj.id)
	writeJSON(w, http.StatusAccepted, map[string]string{"id": tj.id, "status": string(engine.Queued)})
}

// handleRequestGet answers the job's engine.Status, or 404.
func (s *Server) handleRequestGet(w http.ResponseWriter, r *http.Request, b Backend) {
	id := r.PathValue("id")
	st, ok := b.Status(id)
	if !ok {
		writeError(w, notFound("no request %q (finished requests are forgotten after a while)", id))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, st)
}

// handleRequestDelete cancels the job and answers its status once it has
// ended (at most maxCancelWait later); a job that had already ended is
// left as it was. Unknown ids get 404.
func (s *Server) handleRequestDelete(w http.ResponseWriter, r *http.Request, b Backend) {
	id := r.PathValue("id")
	if _, ok := b.Status(id); !ok {
		writeError(w, notFound("no request %q", id))
		return
	}
	tracked := s.jobs.get(id)
	if b.Cancel(id) {
		reqLog(r).Info().Str("job_id", id).Msg("cancel requested")
		if tracked != nil {
			select {
			case <-tracked.done:
			case <-time.After(maxCancelWait):
			case <-r.Context().Done():
				return
			}
		}
	}
	st, ok := b.Status(id)
	if !ok {
		writeError(w, notFound("no request %q", id))
		return
	}
	writeJSON(w, http.StatusOK, st)
}
