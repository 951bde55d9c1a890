package serve

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/runtime/engine"
)

// Backend is what the server needs of the engine (engine.Engine satisfies
// it).
type Backend interface {
	// Submit queues job; emit receives its events from the engine's
	// goroutine and must not block. ErrBusy when the queue is full.
	Submit(job engine.Job, emit func(engine.Event)) (id string, err error)
	Cancel(id string) bool
	Status(id string) (engine.Status, bool)
	// RenderChat applies the model's chat template.
	RenderChat(c engine.Chat) (engine.RenderedChat, error)
	ModelName() string
	Metrics() engine.Metrics
}

// Server serves the websocket, the OpenAI-compatible API, request status,
// health, metrics and the static page.
type Server struct {
	cfg       Config
	log       zerolog.Logger
	keyDigest [sha256.Size]byte // of cfg.APIKey; compared in constant time
	started   time.Time

	backend  atomic.Pointer[backendBox]
	draining atomic.Bool
	wsOpen   atomic.Int64 // websockets open or upgrading, for WSMaxConnections
	hosts    atomic.Pointer[hostPolicy]
	limiter  *connLimiter

	jobs     jobTracker
	conns    connSet
	metrics  *metrics
	upgrader websocket.Upgrader
	handler  http.Handler
}

type backendBox struct{ Backend }

// New makes a server; it answers 503 to API calls until SetBackend.
// Config fields left zero take their defaults; Serve reports an invalid
// Config.
func New(cfg Config, log zerolog.Logger) *Server {
	s := &Server{cfg: cfg.withDefaults(), log: log, started: time.Now()}
	s.keyDigest = sha256.Sum256([]byte(s.cfg.APIKey))
	s.hosts.Store(newHostPolicy(s.cfg, s.cfg.Addr))
	s.limiter = newConnLimiter(s.cfg)
	s.jobs.jobs = map[string]*trackedJob{}
	s.conns.m = map[*wsConn]struct{}{}
	s.metrics = newMetrics(s)
	s.limiter.refused = s.metrics.refused.Inc
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: s.cfg.WriteTimeout,
		ReadBufferSize:   4096,
		WriteBufferSize:  4096,
		Subprotocols:     []string{wsSubprotocol},
		CheckOrigin:      s.checkOrigin,
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			code := codeInvalidRequest
			if status == http.StatusForbidden {
				code = codeForbidden
			}
			writeError(w, &apiError{Status: status, Type: "invalid_request_error", Code: code,
				Message: "websocket handshake: " + reason.Error()})
		},
	}
	s.handler = s.routes()
	return s
}

// SetBackend makes the server ready: /health answers 200 and the API
// serves. Calling it again switches new requests to b.
func (s *Server) SetBackend(b Backend) {
	if b == nil {
		return
	}
	s.backend.Store(&backendBox{b})
	s.log.Info().Str("model", b.ModelName()).Msg("backend ready")
}

// currentBackend returns the backend, or nil before SetBackend.
func (s *Server) currentBackend() Backend {
	if box := s.backend.Load(); box != nil {
		return box.Backend
	}
	return nil
}

// Handler returns the server's HTTP handler (for tests or an outer mux;
// Serve uses it).
func (s *Server) Handler() http.Handler { return s.handler }

// ListenAndServe listens on Config.Addr and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context) error {
	if err := s.cfg.Validate(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends, then shuts down gracefully: it stops
// accepting, lets in-flight generations finish for up to ShutdownTimeout,
// cancels those still running, tells websocket clients it is going away
// and returns. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := s.cfg.Validate(); err != nil {
		ln.Close()
		return err
	}
	// The Host check knows the address actually listened on (a port of
	// 0, an --addr flag).
	s.hosts.Store(newHostPolicy(s.cfg, ln.Addr().String()))
	ln = &limitedListener{Listener: ln, l: s.limiter}
	srv := &http.Server{
		Handler:           s.handler,
		ConnContext:       connContext,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		// No WriteTimeout: streams are long; each write sets its own deadline.
		ErrorLog: log.New(zerologWriter{s.log}, "", 0),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.log.Info().Str("addr", ln.Addr().String()).Bool("api_key", s.cfg.APIKey != "").Msg("serving")
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() && s.cfg.APIKey == "" {
		s.log.Warn().Str("addr", ln.Addr().String()).Msg("listening beyond loopback without an API key: anyone who can reach this address can use the model")
	}

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case err := <-served:
			return fmt.Errorf("serve: %w", err)
		case <-tick.C:
			s.metrics.sampleRate()
		case <-ctx.Done():
			break wait
		}
	}
	return s.shutdown(srv, served)
}

// cancelGrace is how long cancelled jobs get to report their end before
// connections are closed regardless.
const cancelGrace = 2 * time.Second

func (s *Server) shutdown(srv *http.Server, served chan error) error {
	start := time.Now()
	deadline := start.Add(s.cfg.ShutdownTimeout)
	s.draining.Store(true)
	s.log.Info().Int("in_flight", s.jobs.count()).Dur("timeout", s.cfg.ShutdownTimeout).Msg("shutting down")

	// Stops the listener and closes idle connections; waits for handlers.
	shutCtx, cancel := context.WithDeadline(context.Background(), deadline.Add(cancelGrace))
	defer cancel()
	shutDone := make(chan error, 1)
	go func() { shutDone <- srv.Shutdown(shutCtx) }()

	if !s.jobs.waitEmpty(deadline) {
		n := s.jobs.cancelAll()
		s.log.Warn().Int("cancelled", n).Msg("shutdown deadline: cancelled in-flight generations")
		if !s.jobs.waitEmpty(time.Now().Add(cancelGrace)) {
			s.log.Warn().Int("in_flight", s.jobs.count()).Msg("generations did not end after cancel")
		}
	}
	// Websockets are hijacked: http.Server.Shutdown neither closes nor waits
	// for them. Their queued final messages are flushed first.
	s.conns.closeAll(websocket.CloseGoingAway, "server shutting down")
	s.conns.wait(time.Now().Add(cancelGrace))

	if err := <-shutDone; err != nil {
		s.log.Warn().Err(err).Msg("closing remaining connections")
		srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	s.log.Info().Dur("took", time.Since(start)).Msg("shut down")
	return nil
}

// zerologWriter routes net/http's own log lines into zerolog.
type zerologWriter struct{ log zerolog.Logger }

func (z zerologWriter) Write(p []byte) (int, error) {
	z.log.Warn().Str("source", "net/http").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// newID returns prefix + 20 random base32 characters (100 bits): ids are
// unguessable, since GET /v1/requests/{id} shows a job's text.
func newID(prefix string) string {
	var b [13]byte
	_, _ = rand.Read(b[:])
	return prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])[:20])
}

// --- jobs -----------------------------------------------------------------

// trackedJob is a generation this server submitted and that has not ended.
type trackedJob struct {
	id       string
	backend  Backend
	endpoint string
	done     chan struct{} // closed after the Done event was handled
}

// jobTracker knows the server's in-flight jobs, for shutdown and DELETE.
type jobTracker struct {
	mu   sync.Mutex
	jobs map[string]*trackedJob
}

func (t *jobTracker) add(j *trackedJob) {
	t.mu.Lock()
	t.jobs[j.id] = j
	t.mu.Unlock()
}

func (t *jobTracker) remove(id string) {
	t.mu.Lock()
	delete(t.jobs, id)
	t.mu.Unlock()
}

func (t *jobTracker) get(id string) *trackedJob {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.jobs[id]
}

func (t *jobTracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.jobs)
}

// cancelAll cancels every tracked job and returns how many there were.
func (t *jobTracker) cancelAll() int {
	t.mu.Lock()
	jobs := make([]*trackedJob, 0, len(t.jobs))
	for _, j := range t.jobs {
		jobs = append(jobs, j)
	}
	t.mu.Unlock()
	for _, j := range jobs {
		j.backend.Cancel(j.id)
	}
	return len(jobs)
}

// waitEmpty waits until no job is tracked or the deadline passes.
func (t *jobTracker) waitEmpty(deadline time.Time) bool {
	for t.count() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// submit hands job to b, tracking it and observing its end for metrics
// and logs; emit gets every event after that bookkeeping. job.ID must be
// set (a fresh newID). On error nothing was submitted.
func (s *Server) submit(b Backend, job engine.Job, endpoint string, log zerolog.Logger, emit func(engine.Event)) (*trackedJob, *apiError) {
	if s.draining.Load() {
		s.metrics.requests.WithLabelValues(endpoint, "unavailable").Inc()
		return nil, errShuttingDown
	}
	tj := &trackedJob{id: job.ID, backend: b, endpoint: endpoint, done: make(chan struct{})}
	submitted := time.Now()
	// Tracked before Submit: the engine may finish the job before Submit
	// returns.
	s.jobs.add(tj)
	log.Info().Int("prompt_bytes", len(job.Prompt)).Int("max_tokens", job.MaxTokens).
		Float32("temperature", job.Sampling.Temperature).Msg("generation submitted")
	id, err := b.Submit(job, func(ev engine.Event) {
		if !ev.Done {
			emit(ev)
			return
		}
		s.metrics.observeDone(endpoint, ev)
		l := log.Info()
		if ev.Err != nil {
			l = log.Warn().Err(ev.Err)
		}
		l.Str("finish_reason", ev.FinishReason).
			Int("prompt_tokens", ev.Usage.PromptTokens).
			Int("completion_tokens", ev.Usage.CompletionTokens).
			Float64("ttft_ms", ev.Timings.TimeToFirstMS).
			Float64("tokens_per_second", ev.Timings.TokensPerSecond).
			Dur("took", time.Since(submitted)).
			Msg("generation ended")
		emit(ev)
		s.jobs.remove(tj.id)
		close(tj.done)
	})
	if err != nil {
		s.jobs.remove(tj.id)
		ae := submitError(err)
		outcome := "rejected"
		switch ae.Code {
		case codeBusy:
			outcome = "busy"
		case codeLoading, codeShuttingDown:
			outcome = "unavailable"
		}
		s.metrics.requests.WithLabelValues(endpoint, outcome).Inc()
		log.Warn().Err(err).Msg("submit refused")
		return nil, ae
	}
	if id != job.ID {
		// Cancel and the request status rely on the engine keeping the
		// caller's id, as engine.Job promises.
		b.Cancel(id)
		log.Error().Str("engine_id", id).Msg("engine did not keep the job id; cancelled the job")
		return nil, &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: codeInternal,
			Message: "internal error: the engine renamed the request"}
	}
	return tj, nil
}

// --- HTTP plumbing --------------------------------------------------------

type ctxKey int

const loggerKey ctxKey = 0

// reqLog returns the request's logger (with its request_id).
func reqLog(r *http.Request) *zerolog.Logger {
	if l, ok := r.Context().Value(loggerKey).(*zerolog.Logger); ok {
		return l
	}
	nop := zerolog.Nop()
	return &nop
}

func requestID(r *http.Request) string { return r.Header.Get("X-Request-Id") }

// statusRecorder remembers the status and size of a response. It passes
// Flush, Hijack and Unwrap through for SSE, websockets and
// http.ResponseController.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusRecorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// withRequestLog gives every request an id (X-Request-Id, server-made so
// job ids derived from it stay unguessable), a logger carrying it, panic
// recovery and one access log line.
func (s *Server) withRequestLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := newID("")
		l := s.log.With().Str("request_id", id).Logger()
		if client := r.Header.Get("X-Request-Id"); client != "" && len(client) <= 128 {
			l = l.With().Str("client_request_id", client).Logger()
		}
		r.Header.Set("X-Request-Id", id)
		w.Header().Set("X-Request-Id", id)
		rec := &statusRecorder{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), loggerKey, &l))
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				l.Error().Interface("panic", v).Str("path", r.URL.Path).Msg("handler panicked")
				if rec.status == 0 {
					writeError(rec, &apiError{Status: http.StatusInternalServerError, Type: "server_error",
						Code: codeInternal, Message: "internal error"})
				}
			}
			ev := l.Info()
			if r.URL.Path == "/health" || r.URL.Path == "/metrics" {
				ev = l.Debug()
			}
			// The path only: a query may hold ?api_key=.
			ev.Str("method", r.Method).Str("path", r.URL.Path).Str("remote", r.RemoteAddr).
				Int("status", rec.status).Int64("bytes", rec.bytes).Dur("took", time.Since(start)).Msg("http")
		}()
		next.ServeHTTP(rec, r)
	})
}

// authorized reports whether r carries the API key (always true without
// one). fromWebsocket also accepts ?api_key= and a "bearer.<key>"
// subprotocol.
func (s *Server) authorized(r *http.Request, fromWebsocket bool) bool {
	if s.cfg.APIKey == "" {
		return true
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, key, ok := strings.Cut(auth, " ")
		if ok && strings.EqualFold(scheme, "Bearer") && s.keyMatches(strings.TrimSpace(key)) {
			return true
		}
	}
	if !fromWebsocket {
		return false
	}
	if key := r.URL.Query().Get("api_key"); key != "" && s.keyMatches(key) {
		return true
	}
	for _, proto := range websocket.Subprotocols(r) {
		if key, ok := strings.CutPrefix(proto, wsBearerPrefix); ok && s.keyMatches(key) {
			return true
		}
	}
	return false
}

// keyMatches compares digests in constant time, so neither the key's
// content nor its length leaks through timing.
func (s *Server) keyMatches(key string) bool {
	d := sha256.Sum256([]byte(key))
	return subtle.ConstantTimeCompare(d[:], s.keyDigest[:]) == 1
}

var errUnauthorized = &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: codeInvalidAPIKey,
	Message: "missing or invalid API key: send Authorization: Bearer <key>"}

// requireKey answers 401 unless the request carries the API key.
func (s *Server) requireKey(fromWebsocket bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r, fromWebsocket) {
			reqLog(r).Warn().Str("path", r.URL.Path).Msg("unauthorized")
			writeError(w, errUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// withCORS answers preflights and adds CORS headers for configured
// origins; without CORSOrigins it does nothing, so browsers keep other
// sites' pages out.
func (s *Server) withCORS(next http.Handler) http.Handler {
	if len(s.cfg.CORSOrigins) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		w.Header().Add("Vary", "Origin")
		allowed := origin != "" && originAllowed(s.cfg.CORSOrigins, origin)
		if allowed {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Access-Control-Expose-Headers", "X-Request-Id, Retry-After")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if !allowed {
				writeError(w, &apiError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: codeForbidden,
					Message: "origin not allowed"})
				return
			}
			w.Header().Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
			w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id")
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// methods dispatches on the request method, answering 405 in JSON.
func methods(handlers map[string]http.HandlerFunc) http.Handler {
	allow := make([]string, 0, len(handlers))
	for m := range handlers {
		allow = append(allow, m)
	}
	allowHeader := strings.Join(allow, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, ok := handlers[r.Method]
		if !ok && r.Method == http.MethodHead {
			h, ok = handlers[http.MethodGet]
		}
		if !ok {
			w.Header().Set("Allow", allowHeader)
			writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error",
				Code: codeMethodNotAllowed, Message: fmt.Sprintf("%s is not allowed here (allowed: %s)", r.Method, allowHeader)})
			return
		}
		h(w, r)
	})
}

// needBackend answers 503 until SetBackend and while shutting down, and
// passes the backend on.
func (s *Server) needBackend(next func(http.ResponseWriter, *http.Request, Backend)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b := s.currentBackend()
		if b == nil {
			writeError(w, errLoading)
			return
		}
		next(w, r, b)
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/health", methods(map[string]http.HandlerFunc{http.MethodGet: s.handleHealth}))
	mux.Handle("/metrics", methods(map[string]http.HandlerFunc{http.MethodGet: s.metrics.handler.ServeHTTP}))
	mux.Handle("/ws", s.requireKey(true, methods(map[string]http.HandlerFunc{http.MethodGet: s.needBackend(s.handleWebsocket)})))

	v1 := http.NewServeMux()
	v1.Handle("/v1/chat/completions", methods(map[string]http.HandlerFunc{http.MethodPost: s.needBackend(s.handleChatCompletions)}))
	v1.Handle("/v1/completions", methods(map[string]http.HandlerFunc{http.MethodPost: s.needBackend(s.handleCompletions)}))
	v1.Handle("/v1/embeddings", methods(map[string]http.HandlerFunc{http.MethodPost: s.needBackend(s.handleEmbeddings)}))
	v1.Handle("/v1/models", methods(map[string]http.HandlerFunc{http.MethodGet: s.needBackend(s.handleModels)}))
	v1.Handle("/v1/models/{model...}", methods(map[string]http.HandlerFunc{http.MethodGet: s.needBackend(s.handleModel)}))
	v1.Handle("/v1/models/{model}/file", methods(map[string]http.HandlerFunc{http.MethodGet: s.needBackend(s.handleModelFile)}))
	v1.Handle("/v1/requests", methods(map[string]http.HandlerFunc{http.MethodPost: s.needBackend(s.handleRequestCreate)}))
	v1.Handle("/v1/requests/{id}", methods(map[string]http.HandlerFunc{
		http.MethodGet:    s.needBackend(s.handleRequestGet),
		http.MethodDelete: s.needBackend(s.handleRequestDelete),
	}))
	v1.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, notFound("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	mux.Handle("/v1/", s.withCORS(s.requireKey(false, v1)))
	// llama.cpp server's paths, under the API key and CORS of /v1.
	for path, h := range map[string]http.HandlerFunc{
		"/tokenize": s.needBackend(s.handleTokenize), "/detokenize": s.needBackend(s.handleDetokenize),
	} {
		mux.Handle(path, s.withCORS(s.requireKey(false, methods(map[string]http.HandlerFunc{http.MethodPost: h}))))
	}
	mux.Handle("/props", s.withCORS(s.requireKey(false, methods(map[string]http.HandlerFunc{http.MethodGet: s.needBackend(s.handleProps)}))))
	mux.Handle("/api/", withOllamaErrors(s.withCORS(s.requireKey(false, s.ollamaRoutes()))))

	mux.Handle("/wasm/{file}", methods(map[string]http.HandlerFunc{http.MethodGet: s.handleWasm}))
	mux.Handle("/", s.staticHandler())
	return s.withRequestLog(s.withConnLimit(s.withHostCheck(mux)))
}

func (s *Server) staticHandler() http.Handler {
	if s.cfg.Static == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, notFound("no such page: %s", r.URL.Path))
		})
	}
	files := http.FileServerFS(s.cfg.Static)
	return methods(map[string]http.HandlerFunc{http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	}})
}

// HealthReporter is implemented by a Backend that can be unable to serve
// for a while (one recovering from a GPU device loss): /health answers 503
// while Health returns an error.
type HealthReporter interface {
	Health() error
}

func healthError(b Backend) error {
	if h, ok := b.(HealthReporter); ok {
		return h.Health()
	}
	return nil
}

// handleHealth: 503 {"status":"loading"} until a backend is set, then 200
// {"status":"ok","model":…}; 503 {"status":"shutting_down"} while draining;
// 503 {"status":"unavailable","error":…} while the backend reports itself
// unhealthy.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	b := s.currentBackend()
	switch {
	case b == nil:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "loading"})
	case s.draining.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting_down", "model": b.ModelName()})
	case healthError(b) != nil:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "model": b.ModelName(),
			"error": healthError(b).Error()})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "model": b.ModelName()})
	}
}
