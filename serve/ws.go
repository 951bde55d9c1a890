package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/runtime/engine"
)

const (
	// wsSubprotocol is the subprotocol the server selects when offered.
	wsSubprotocol = "wgllm"
	// wsBearerPrefix marks a subprotocol carrying the API key; it is only
	// read, never selected (so never echoed back).
	wsBearerPrefix = "bearer."
	wsMaxIDBytes   = 128
	// wsCloseGrace is how long the server waits for the client's answer to
	// its close frame before dropping the connection.
	wsCloseGrace = time.Second
)

// Messages from the client.
type wsRequest struct {
	Type string `json:"type"` // generate, chat, cancel
	ID   string `json:"id"`
	genRequest
}

// Messages to the client.
type (
	wsHello struct {
		Type  string `json:"type"` // hello
		Model string `json:"model"`
	}
	wsToken struct {
		Type     string       `json:"type"` // token, or reasoning (a reasoning model's thinking)
		ID       string       `json:"id"`
		Text     string       `json:"text"`
		Logprobs []logprobOut `json:"logprobs,omitempty"` // with logprobs: true
	}
	wsToolCall struct {
		Type string `json:"type"` // tool_call
		ID   string `json:"id"`
		Call wsCall `json:"call"`
	}
	wsCall struct {
		ID        string          `json:"id"`
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	wsDone struct {
		Type         string         `json:"type"` // done
		ID           string         `json:"id"`
		FinishReason string         `json:"finish_reason"`
		Usage        engine.Usage   `json:"usage"`
		Timings      engine.Timings `json:"timings"`
	}
	wsError struct {
		Type  string      `json:"type"` // error
		ID    string      `json:"id,omitempty"`
		Error wsErrorBody `json:"error"`
	}
	wsErrorBody struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Param   string `json:"param,omitempty"`
	}
)

// checkOrigin accepts requests without Origin (not from a browser), from
// the server's own origin (its Host being an allowed host), loopback
// pages and Config.AllowedOrigins; withHostCheck already refused others,
// this is the upgrader's own check of the same rule.
func (s *Server) checkOrigin(r *http.Request) bool {
	if s.hosts.Load().originAllowed(r) {
		return true
	}
	reqLog(r).Warn().Str("origin", r.Header.Get("Origin")).Str("host", r.Host).Msg("websocket origin refused")
	return false
}

// wsConn is one websocket: a read pump (the handler's goroutine), a write
// pump, and the client's requests in flight.
type wsConn struct {
	s    *Server
	b    Backend
	conn *websocket.Conn
	log  zerolog.Logger

	send       chan []byte   // bounded outgoing queue
	quit       chan struct{} // closed once: the connection is ending
	quitOnce   sync.Once
	closeCode  int
	closeText  string
	flush      bool          // on quit, write what is queued first
	readerDone chan struct{} // closed when the read pump has returned
	writerDone chan struct{} // closed when the write pump has returned

	mu       sync.Mutex
	inflight map[string]string // client's id → engine job id
	closed   bool              // no new jobs
}

func (s *Server) handleWebsocket(w http.ResponseWriter, r *http.Request, b Backend) {
	if s.draining.Load() {
		writeError(w, errShuttingDown)
		return
	}
	// A slot is taken before the upgrade, so concurrent upgrades cannot
	// overshoot the limit.
	if n := s.wsOpen.Add(1); n > int64(s.cfg.WSMaxConnections) {
		s.wsOpen.Add(-1)
		reqLog(r).Warn().Int("limit", s.cfg.WSMaxConnections).Msg("websocket refused: too many connections")
		writeError(w, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: codeTooManyConns,
			Message: fmt.Sprintf("too many websocket connections (limit %d); try again later", s.cfg.WSMaxConnections)})
		return
	}
	defer s.wsOpen.Add(-1)
	release, ok := s.wsClientLimit(w, r)
	if !ok {
		return
	}
	defer release()
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	c := &wsConn{
		s: s, b: b, conn: conn,
		// conn_id is the upgrade's request_id; each job's lines carry its
		// own request_id.
		log:        s.log.With().Str("conn_id", requestID(r)).Logger(),
		send:       make(chan []byte, s.cfg.WSSendQueue),
		quit:       make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		inflight:   map[string]string{},
	}
	conn.SetReadLimit(s.cfg.WSReadLimit)
	s.conns.add(c)
	defer s.conns.remove(c)
	c.log.Info().Str("remote", r.RemoteAddr).Str("subprotocol", conn.Subprotocol()).Msg("websocket open")

	c.enqueueJSON(wsHello{Type: "hello", Model: b.ModelName()})
	go c.writePump()
	c.readPump()
	close(c.readerDone)
	c.stop(websocket.CloseNormalClosure, "", false)
	if n := c.cancelAll(); n > 0 {
		c.log.Info().Int("cancelled", n).Msg("websocket closed with generations in flight; cancelled them")
	}
	<-c.writerDone
	lingerClose(conn.NetConn(), wsCloseGrace)
	c.log.Info().Msg("websocket closed")
}

func (c *wsConn) pongWait() time.Duration { return 2 * c.s.cfg.WSPingInterval }

// readPump reads and handles messages until the connection fails or ends.
func (c *wsConn) readPump() {
	alive := func() { _ = c.conn.SetReadDeadline(time.Now().Add(c.pongWait())) }
	alive()
	c.conn.SetPongHandler(func(string) error { alive(); return nil })
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				c.log.Warn().Int64("limit", c.s.cfg.WSReadLimit).Msg("websocket message over the read limit; closing")
			case errors.As(err, &ce):
				c.log.Debug().Int("code", ce.Code).Msg("client closed the websocket")
			default:
				select {
				case <-c.quit: // we closed it
				default:
					c.log.Info().Err(err).Msg("websocket read failed")
				}
			}
			return
		}
		alive()
		c.handleMessage(data)
	}
}

// writePump writes queued messages and pings, each with a deadline, until
// the connection ends.
func (c *wsConn) writePump() {
	defer close(c.writerDone)
	ping := time.NewTicker(c.s.cfg.WSPingInterval)
	defer ping.Stop()
	for {
		select {
		case msg := <-c.send:
			if err := c.write(websocket.TextMessage, msg); err != nil {
				c.log.Info().Err(err).Msg("websocket write failed; closing")
				c.stop(websocket.CloseAbnormalClosure, "", false)
				c.conn.Close() // unblocks the read pump
				return
			}
		case <-ping.C:
			if err := c.write(websocket.PingMessage, nil); err != nil {
				c.log.Info().Err(err).Msg("websocket ping failed; closing")
				c.stop(websocket.CloseAbnormalClosure, "", false)
				c.conn.Close()
				return
			}
		case <-c.quit:
			if c.flush {
				c.drain()
			}
			if c.closeCode != websocket.CloseAbnormalClosure {
				_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, c.closeText),
					time.Now().Add(c.s.cfg.WriteTimeout))
				// Give the client a moment to answer the close frame, so
				// it reads ours before the socket goes.
				select {
				case <-c.readerDone:
				case <-time.After(wsCloseGrace):
				}
			}
			// Unblock the read pump if it still waits; the handler then
			// closes the connection.
			_ = c.conn.NetConn().SetReadDeadline(time.Now())
			return
		}
	}
}

// lingerClose sends FIN, then reads and discards what the client still
// sends (for at most d and 1 MiB) before closing: closing a socket with
// unread input resets the connection, and a client may then never read
// the close frame (a 1009 after an oversized message, say).
func lingerClose(conn net.Conn, d time.Duration) {
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.CloseWrite()
		_ = tcp.SetReadDeadline(time.Now().Add(d))
		_, _ = io.Copy(io.Discard, io.LimitReader(tcp, 1<<20))
	}
	conn.Close()
}

// drain writes what is queued, stopping at the first failure.
func (c *wsConn) drain() {
	for {
		select {
		case msg := <-c.send:
			if c.write(websocket.TextMessage, msg) != nil {
				return
			}
		default:
			return
		}
	}
}

func (c *wsConn) write(kind int, msg []byte) error {
	if err := c.conn.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout)); err != nil {
		return err
	}
	return c.conn.WriteMessage(kind, msg)
}

// stop ends the connection once: the write pump sends a close frame with
// code and text (after the queued messages when flush) and closes it.
func (c *wsConn) stop(code int, text string, flush bool) {
	c.quitOnce.Do(func() {
		c.closeCode, c.closeText, c.flush = code, text, flush
		close(c.quit)
	})
}

// enqueue queues msg without blocking (it runs on the engine's
// goroutine). A full queue means the client cannot keep up: the
// connection is closed, which cancels its jobs, rather than let it hold
// anyone up.
func (c *wsConn) enqueue(msg []byte) {
	select {
	case <-c.quit:
		return
	default:
	}
	select {
	case c.send <- msg:
	default:
		c.log.Warn().Int("queue", cap(c.send)).Msg("websocket client too slow: send queue full; closing it")
		c.stop(websocket.ClosePolicyViolation, "client too slow: send queue overflow", false)
		// Stop its jobs now rather than once the stuck write times out;
		// not from here, which is the engine's goroutine.
		go c.cancelAll()
	}
}

func (c *wsConn) enqueueJSON(v any) {
	msg, err := json.Marshal(v)
	if err != nil {
		c.log.Error().Err(err).Msg("encoding a websocket message")
		return
	}
	c.enqueue(msg)
}

func (c *wsConn) sendError(id string, e *apiError) {
	c.enqueueJSON((&wsFramer{id: id}).failure(e))
}

func (c *wsConn) handleMessage(data []byte) {
	var msg wsRequest
	if aerr := decodeJSON(data, &msg); aerr != nil {
		// A type error still decodes the rest, so the id may be known.
		c.log.Info().Str("client_id", msg.ID).Str("code", aerr.Code).Msg(aerr.Message)
		c.sendError(msg.ID, aerr)
		return
	}
	switch msg.Type {
	case "generate":
		c.start(&msg, kindCompletion)
	case "chat":
		c.start(&msg, kindChat)
	case "cancel":
		c.cancel(msg.ID)
	case "":
		c.sendError(msg.ID, invalidRequest(codeUnknownType, `message without "type" (want generate, chat or cancel)`))
	default:
		c.sendError(msg.ID, invalidRequest(codeUnknownType, "unknown message type %q (want generate, chat or cancel)", msg.Type))
	}
}

func validID(id string) *apiError {
	if id == "" || len(id) > wsMaxIDBytes {
		return invalidParam("id", "id must be a non-empty string of at most %d bytes", wsMaxIDBytes)
	}
	return nil
}

// start validates and submits a generate or chat request.
func (c *wsConn) start(msg *wsRequest, kind requestKind) {
	if aerr := validID(msg.ID); aerr != nil {
		c.sendError("", aerr)
		return
	}
	if c.s.draining.Load() {
		c.sendError(msg.ID, errShuttingDown)
		return
	}
	g, aerr := c.s.openAIGeneration(&msg.genRequest, kind)
	if aerr == nil && g.n > 1 {
		aerr = &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: codeUnsupported,
			Param: "n", Message: "n > 1 is for the HTTP API; send one websocket request per choice"}
	}
	var job engine.Job
	var plan *outputPlan
	if aerr == nil {
		job, plan, aerr = c.s.buildJob(c.b, g)
	}
	if aerr != nil {
		c.log.Info().Str("client_id", msg.ID).Str("code", aerr.Code).Str("param", aerr.Param).Msg(aerr.Message)
		c.sendError(msg.ID, aerr)
		return
	}
	clientID, jobID := msg.ID, newID("ws-")
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return
	case c.inflight[clientID] != "":
		c.mu.Unlock()
		c.sendError(clientID, invalidRequest(codeDuplicateID, "a request with id %q is already in flight on this connection", clientID))
		return
	case len(c.inflight) >= c.s.cfg.WSMaxInFlight:
		c.mu.Unlock()
		c.sendError(clientID, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: codeTooManyInFlight,
			Message: "too many requests in flight on this connection; wait for one to finish"})
		return
	}
	c.inflight[clientID] = jobID
	c.mu.Unlock()

	job.ID = jobID
	log := c.log.With().Str("request_id", jobID).Str("client_id", clientID).Str("endpoint", "ws").Logger()
	f, acc := &wsFramer{id: clientID}, newAccumulator(plan)
	if _, aerr := c.s.submit(c.b, job, "ws", log, func(ev engine.Event) { c.onEvent(clientID, jobID, f, acc, ev) }); aerr != nil {
		c.forget(clientID, jobID)
		c.sendError(clientID, aerr)
	}
}

// onEvent runs on the engine's goroutine: it only encodes and queues.
func (c *wsConn) onEvent(clientID, jobID string, f *wsFramer, acc *accumulator, ev engine.Event) {
	if ev.Done {
		// Forgotten first, so that the client may reuse the id as soon as
		// it reads the end.
		c.forget(clientID, jobID)
	}
	frames, _ := eventFrames(acc, f, ev)
	for _, v := range frames {
		c.enqueueJSON(v)
	}
}

// wsFramer makes the websocket's messages of one request.
type wsFramer struct{ id string }

var _ pieceFramer = (*wsFramer)(nil)

func (f *wsFramer) piece(d delta) []any {
	switch {
	case d.Call != nil:
		return []any{wsToolCall{Type: "tool_call", ID: f.id, Call: wsCall{ID: d.Call.ID, Name: d.Call.Name, Arguments: d.Call.Arguments}}}
	case d.Reasoning != "":
		return []any{wsToken{Type: "reasoning", ID: f.id, Text: d.Reasoning}}
	}
	return []any{wsToken{Type: "token", ID: f.id, Text: d.Content, Logprobs: lineLogprobs(true, d.Logprobs)}}
}

func (f *wsFramer) closing(o *outcome) []any {
	return []any{wsDone{Type: "done", ID: f.id, FinishReason: o.FinishReason, Usage: o.Usage, Timings: o.Timings}}
}

func (f *wsFramer) failure(e *apiError) any {
	return wsError{Type: "error", ID: f.id, Error: wsErrorBody{Code: e.Code, Message: e.Message, Param: e.Param}}
}

func (c *wsConn) forget(clientID, jobID string) {
	c.mu.Lock()
	if c.inflight[clientID] == jobID {
		delete(c.inflight, clientID)
	}
	c.mu.Unlock()
}

// cancel asks the engine to stop a request; its "done" (finish_reason
// "cancelled") follows.
func (c *wsConn) cancel(clientID string) {
	if aerr := validID(clientID); aerr != nil {
		c.sendError("", aerr)
		return
	}
	c.mu.Lock()
	jobID := c.inflight[clientID]
	c.mu.Unlock()
	if jobID == "" {
		c.sendError(clientID, notFound("no request with id %q in flight on this connection", clientID))
		return
	}
	c.b.Cancel(jobID)
	c.log.Info().Str("request_id", jobID).Str("client_id", clientID).Msg("cancel requested")
}

// cancelAll stops accepting requests and cancels those in flight.
func (c *wsConn) cancelAll() int {
	c.mu.Lock()
	c.closed = true
	jobs := make([]string, 0, len(c.inflight))
	for _, id := range c.inflight {
		jobs = append(jobs, id)
	}
	c.mu.Unlock()
	for _, id := range jobs {
		c.b.Cancel(id)
	}
	return len(jobs)
}

// connSet holds the open websockets, which http.Server.Shutdown does not
// see (they are hijacked).
type connSet struct {
	mu sync.Mutex
	m  map[*wsConn]struct{}
}

func (cs *connSet) add(c *wsConn) {
	cs.mu.Lock()
	cs.m[c] = struct{}{}
	cs.mu.Unlock()
}

func (cs *connSet) remove(c *wsConn) {
	cs.mu.Lock()
	delete(cs.m, c)
	cs.mu.Unlock()
}

func (cs *connSet) count() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.m)
}

// closeAll ends every connection after flushing what is queued for it.
func (cs *connSet) closeAll(code int, text string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for c := range cs.m {
		c.stop(code, text, true)
	}
}

func (cs *connSet) wait(deadline time.Time) bool {
	for cs.count() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
