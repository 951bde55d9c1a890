package serve

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/runtime/engine"
)

// OpenAI's response shapes (only the fields this server fills).

type usageOut struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

func openAIUsage(u engine.Usage) *usageOut {
	out := &usageOut{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens,
		TotalTokens: u.PromptTokens + u.CompletionTokens}
	out.PromptTokensDetails.CachedTokens = u.CachedTokens
	return out
}

type chatMessageOut struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatChoice struct {
	Index        int             `json:"index"`
	Message      chatMessageOut  `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"` // chat.completion
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *usageOut    `json:"usage"`
	// Timings is llama.cpp's extension: where the time went.
	Timings *engine.Timings `json:"timings,omitempty"`
}

type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type chatChunkChoice struct {
	Index        int             `json:"index"`
	Delta        chatDelta       `json:"delta"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type chatChunk struct {
	ID      string            `json:"id"`
	Object  string            `json:"object"` // chat.completion.chunk
	Created int64             `json:"created"`
	Model   string            `json:"model"`
	Choices []chatChunkChoice `json:"choices"`
	Usage   *usageOut         `json:"usage,omitempty"`
	Timings *engine.Timings   `json:"timings,omitempty"`
}

type completionChoice struct {
	Text         string          `json:"text"`
	Index        int             `json:"index"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type completion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"` // text_completion
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usageOut          `json:"usage,omitempty"`
	Timings *engine.Timings    `json:"timings,omitempty"`
}

type modelOut struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // model
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

var jsonNull = json.RawMessage("null")

func (s *Server) modelObject(name string) modelOut {
	return modelOut{ID: name, Object: "model", Created: s.started.Unix(), OwnedBy: "wgllm"}
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request, b Backend) {
	list := modelList(b)
	data := make([]modelOut, len(list))
	for i, m := range list {
		data[i] = s.modelObject(m.Name)
	}
	writeJSON(w, http.StatusOK, struct {
		Object string     `json:"object"`
		Data   []modelOut `json:"data"`
	}{"list", data})
}

func (s *Server) handleModel(w http.ResponseWriter, r *http.Request, b Backend) {
	name := r.PathValue("model")
	if _, ok := b.(Router); !ok && name != b.ModelName() {
		writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: codeModelNotFound,
			Param: "model", Message: "no model " + name + "; this server serves " + b.ModelName()})
		return
	}
	m, aerr := describe(b, name)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeJSON(w, http.StatusOK, s.modelObject(m.Name))
}

func (s *Server) handleChatCompletions(w http.ResponseWriter, r *http.Request, b Backend) {
	s.handleGenerate(w, r, b, kindChat)
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request, b Backend) {
	s.handleGenerate(w, r, b, kindCompletion)
}

// handleGenerate serves /v1/chat/completions and /v1/completions, streamed
// (server-sent events) or not. The request's "model" picks the model when
// the server has several (see modelBackend).
func (s *Server) handleGenerate(w http.ResponseWriter, r *http.Request, b Backend, kind requestKind) {
	var req genRequest
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	b, release, _, aerr := s.modelBackend(r.Context(), b, req.Model)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	job, aerr := s.buildJob(b, &req, kind)
	if aerr != nil {
		release()
		reqLog(r).Info().Str("code", aerr.Code).Str("param", aerr.Param).Msg(aerr.Message)
		writeError(w, aerr)
		return
	}
	endpoint, prefix := "completions", "cmpl-"
	if kind == kindChat {
		endpoint, prefix = "chat", "chatcmpl-"
	}
	job.ID = prefix + requestID(r)
	log := reqLog(r).With().Str("job_id", job.ID).Str("endpoint", endpoint).Logger()
	q := newEventQueue()
	tj, aerr := s.submit(b, job, endpoint, log, releaseOnDone(q.push, release))
	if aerr != nil {
		release()
		writeError(w, aerr)
		return
	}
	out := responder{id: tj.id, model: b.ModelName(), created: time.Now().Unix(), chat: kind == kindChat}
	if req.Stream {
		includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
		s.stream(w, r, tj, q, out, includeUsage, log)
		return
	}
	text, ev, ok := s.awaitDone(w, r, tj, q, log)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, out.final(text, ev))
}

// responder builds the OpenAI objects of one response.
type responder struct {
	id, model string
	created   int64
	chat      bool
}

func (o responder) final(text string, ev engine.Event) any {
	timings := ev.Timings
	if o.chat {
		return chatCompletion{ID: o.id, Object: "chat.completion", Created: o.created, Model: o.model,
			Choices: []chatChoice{{Message: chatMessageOut{Role: "assistant", Content: text},
				Logprobs: jsonNull, FinishReason: ev.FinishReason}},
			Usage: openAIUsage(ev.Usage), Timings: &timings}
	}
	reason := ev.FinishReason
	return completion{ID: o.id, Object: "text_completion", Created: o.created, Model: o.model,
		Choices: []completionChoice{{Text: text, Logprobs: jsonNull, FinishReason: &reason}},
		Usage:   openAIUsage(ev.Usage), Timings: &timings}
}

// chunk is one streamed piece; with ev.Done, the closing chunk carrying
// the finish reason (and timings).
func (o responder) chunk(piece string, first bool, done *engine.Event) any {
	var reason *string
	var timings *engine.Timings
	if done != nil {
		r, t := done.FinishReason, done.Timings
		reason, timings = &r, &t
	}
	if o.chat {
		delta := chatDelta{}
		if first {
			delta.Role = "assistant"
		}
		if done == nil {
			delta.Content = &piece
		}
		return chatChunk{ID: o.id, Object: "chat.completion.chunk", Created: o.created, Model: o.model,
			Choices: []chatChunkChoice{{Delta: delta, Logprobs: jsonNull, FinishReason: reason}}, Timings: timings}
	}
	return completion{ID: o.id, Object: "text_completion", Created: o.created, Model: o.model,
		Choices: []completionChoice{{Text: piece, Logprobs: jsonNull, FinishReason: reason}}, Timings: timings}
}

// usageChunk is stream_options.include_usage's last chunk: no choices,
// the usage.
func (o responder) usageChunk(u engine.Usage) any {
	if o.chat {
		return chatChunk{ID: o.id, Object: "chat.completion.chunk", Created: o.created, Model: o.model,
			Choices: []chatChunkChoice{}, Usage: openAIUsage(u)}
	}
	return completion{ID: o.id, Object: "text_completion", Created: o.created, Model: o.model,
		Choices: []completionChoice{}, Usage: openAIUsage(u)}
}

// stream writes the job's events as server-sent events: "data: {chunk}"
// per piece, the closing chunk, optionally a usage chunk, then
// "data: [DONE]". Every write has its own deadline; a failed write or a
// client that goes away cancels the job.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, tj *trackedJob, q *eventQueue, out responder, includeUsage bool, log zerolog.Logger) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // tell proxies not to buffer the stream
	w.WriteHeader(http.StatusOK)
	var buf []byte
	send := func(v any) {
		body, err := json.Marshal(v)
		if err != nil {
			body = []byte(`{"error":{"message":"encoding a chunk failed","type":"server_error","param":null,"code":"internal_error"}}`)
		}
		buf = append(buf, "data: "...)
		buf = append(buf, body...)
		buf = append(buf, "\n\n"...)
	}
	flush := func() bool {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		_, err := w.Write(buf)
		buf = buf[:0]
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			tj.backend.Cancel(tj.id)
			log.Info().Err(err).Msg("stream write failed; generation cancelled")
			return false
		}
		return true
	}
	// The headers (and for a chat the role, as OpenAI sends it) go out at
	// once, so clients see the stream open before the prompt is processed.
	first := true
	if out.chat {
		send(out.chunk("", true, nil))
		first = false
	}
	if !flush() {
		return
	}
	for {
		select {
		case <-q.ready:
		case <-r.Context().Done():
			tj.backend.Cancel(tj.id)
			log.Info().Msg("client disconnected mid-stream; generation cancelled")
			return
		}
		for _, ev := range q.take() {
			if ev.Text != "" {
				send(out.chunk(ev.Text, first, nil))
				first = false
			}
			if !ev.Done {
				continue
			}
			if ev.Err != nil {
				send(jobError(ev.Err).openAI())
				flush()
				return
			}
			send(out.chunk("", false, &ev))
			if includeUsage {
				send(out.usageChunk(ev.Usage))
			}
			buf = append(buf, "data: [DONE]\n\n"...)
			flush()
			return
		}
		if len(buf) > 0 && !flush() {
			return
		}
	}
}

// awaitDone gathers a non-streamed job's text until its final event and
// sets the write deadline for the reply. It returns false when the client
// went away (the job is cancelled) or the job failed (the error is
// written).
func (s *Server) awaitDone(w http.ResponseWriter, r *http.Request, tj *trackedJob, q *eventQueue, log zerolog.Logger) (string, engine.Event, bool) {
	var text strings.Builder
	for {
		select {
		case <-q.ready:
		case <-r.Context().Done():
			// The client went away: stop generating for nobody.
			tj.backend.Cancel(tj.id)
			log.Info().Msg("client disconnected; generation cancelled")
			return "", engine.Event{}, false
		}
		for _, ev := range q.take() {
			text.WriteString(ev.Text)
			if !ev.Done {
				continue
			}
			if ev.Err != nil {
				writeError(w, jobError(ev.Err))
				return "", engine.Event{}, false
			}
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			return text.String(), ev, true
		}
	}
}

// eventQueue hands a job's events from the engine's goroutine to a
// handler without ever blocking the engine. It is unbounded, but a job's
// events are bounded by its max_tokens.
type eventQueue struct {
	mu     sync.Mutex
	events []engine.Event
	ready  chan struct{} // holds a token while events are waiting
}

func newEventQueue() *eventQueue { return &eventQueue{ready: make(chan struct{}, 1)} }

func (q *eventQueue) push(ev engine.Event) {
	q.mu.Lock()
	q.events = append(q.events, ev)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// releaseOnDone passes events to emit and calls release after the last.
func releaseOnDone(emit func(engine.Event), release func()) func(engine.Event) {
	return func(ev engine.Event) {
		emit(ev)
		if ev.Done {
			release()
		}
	}
}

func (q *eventQueue) take() []engine.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.events
	q.events = nil
	return evs
}
