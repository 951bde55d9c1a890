package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wgllm/wgllm/web"
)

// The scripted fake model behind the test server. Each reply depends on the
// last user message, so the browser steps can ask for the behaviour they test.
const (
	fakeModelName = "fake-kjv-30m-q4_k_m"
	// fakeTokenInterval paces the stream so the page can be seen mid-reply.
	fakeTokenInterval = 30 * time.Millisecond
	// hostilePrompt makes the fake model answer with hostileReply.
	hostilePrompt = "Show me some hostile HTML"
	// hostileReply mixes HTML that must stay text with markdown that must render.
	hostileReply = "Here it is: <script>alert(1)</script><img src=x onerror=alert(2)>\n\n" +
		"Some **bold** and *italic* and `<b>code</b>`:\n\n" +
		"- first <iframe src=x></iframe>\n- second\n\n" +
		"```html\n<script>alert(3)</script>\n```\n"
)

// fakeReply returns the scripted reply for a prompt, cut into stream pieces.
func fakeReply(prompt string) []string {
	switch {
	case strings.Contains(prompt, hostilePrompt):
		// Small pieces split tags and markdown markers across tokens.
		return splitEvery(hostileReply, 6)
	case strings.Contains(strings.ToLower(prompt), "long story"):
		var words []string
		for i := 1; i <= 300; i++ {
			words = append(words, fmt.Sprintf("word%d ", i))
		}
		return words
	default:
		lines := strings.Split(prompt, "\n")
		reply := fmt.Sprintf("You wrote **%d line(s)**. The first one was *%s*.\n\nHere is a short list:\n\n- alpha\n- beta\n- gamma\n\nAnd `inline code` to end.", len(lines), lines[0])
		return splitEvery(reply, 5)
	}
}

func splitEvery(s string, n int) []string {
	var pieces []string
	r := []rune(s)
	for len(r) > 0 {
		k := min(n, len(r))
		pieces = append(pieces, string(r[:k]))
		r = r[k:]
	}
	return pieces
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// clientMessage is what the page sends: a chat request or a cancel.
type clientMessage struct {
	Type        string        `json:"type"`
	ID          string        `json:"id"`
	Messages    []chatMessage `json:"messages"`
	Temperature *float64      `json:"temperature"`
	MaxTokens   *int          `json:"max_tokens"`
}

// fakeServer serves the page's files at / and the chat protocol at /ws.
type fakeServer struct {
	*httptest.Server
	apiKey string // when set, /ws needs ?api_key=apiKey

	mu       sync.Mutex
	refusing bool // /ws answers 503, as a server that is down
	attempts []time.Time
	hellos   int
	apiKeys  []string // api_key of each accepted connection
	chats    []clientMessage
	cancels  []string
	finished map[string]string // request id → finish reason sent
	conns    map[*websocket.Conn]bool
}

func newFakeServer(t *testing.T, apiKey string) *fakeServer {
	t.Helper()
	s := &fakeServer{apiKey: apiKey, finished: map[string]string{}, conns: map[*websocket.Conn]bool{}}
	mux := http.NewServeMux()
	mux.Handle("/", web.Handler())
	mux.HandleFunc("/ws", s.serveWS)
	mux.HandleFunc("/props", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"model":"fake","n_ctx":512,"max_tokens_limit":512,"default_max_tokens":256}`)
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(func() {
		s.dropAll()
		s.Close()
	})
	return s
}

func (s *fakeServer) setRefusing(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refusing = on
}

// dropAll cuts every open websocket without a close frame, as a crash or a
// network failure would.
func (s *fakeServer) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.NetConn().Close()
		delete(s.conns, c)
	}
}

// snapshot returns copies of what the server has seen so far.
func (s *fakeServer) snapshot() (chats []clientMessage, cancels []string, finished map[string]string, hellos int, attempts []time.Time, apiKeys []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	finished = map[string]string{}
	for k, v := range s.finished {
		finished[k] = v
	}
	return append([]clientMessage(nil), s.chats...), append([]string(nil), s.cancels...), finished, s.hellos,
		append([]time.Time(nil), s.attempts...), append([]string(nil), s.apiKeys...)
}

func (s *fakeServer) serveWS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.attempts = append(s.attempts, time.Now())
	refusing := s.refusing
	s.mu.Unlock()
	if refusing {
		http.Error(w, "fake server is down", http.StatusServiceUnavailable)
		return
	}
	key := r.URL.Query().Get("api_key")
	if s.apiKey != "" && key != s.apiKey {
		http.Error(w, "bad or missing api_key", http.StatusUnauthorized)
		return
	}
	upgrader := websocket.Upgrader{} // default origin check: same host only
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade already answered the request
	}
	s.mu.Lock()
	s.conns[conn] = true
	s.hellos++
	s.apiKeys = append(s.apiKeys, key)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
	}()

	var writeMu sync.Mutex
	send := func(v any) {
		writeMu.Lock()
		defer writeMu.Unlock()
		conn.WriteJSON(v) // a failed write shows up as a failed read below
	}
	send(map[string]any{"type": "hello", "model": fakeModelName})

	ctx, cancelAll := context.WithCancel(r.Context())
	defer cancelAll()
	var runningMu sync.Mutex
	running := map[string]context.CancelFunc{}
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		var msg clientMessage
		if err := json.Unmarshal(data, &msg); err != nil {
			send(map[string]any{"type": "error", "error": map[string]string{"code": "bad_request", "message": err.Error()}})
			continue
		}
		switch msg.Type {
		case "chat":
			s.mu.Lock()
			s.chats = append(s.chats, msg)
			s.mu.Unlock()
			if len(msg.Messages) == 0 || msg.Messages[len(msg.Messages)-1].Role != "user" {
				send(map[string]any{"type": "error", "id": msg.ID, "error": map[string]string{"code": "bad_request", "message": "the last message must be the user's"}})
				continue
			}
			reqCtx, cancel := context.WithCancel(ctx)
			runningMu.Lock()
			running[msg.ID] = cancel
			runningMu.Unlock()
			go func(msg clientMessage) {
				defer cancel()
				reason := s.stream(reqCtx, msg, send)
				runningMu.Lock()
				delete(running, msg.ID)
				runningMu.Unlock()
				s.mu.Lock()
				s.finished[msg.ID] = reason
				s.mu.Unlock()
			}(msg)
		case "cancel":
			s.mu.Lock()
			s.cancels = append(s.cancels, msg.ID)
			s.mu.Unlock()
			runningMu.Lock()
			if cancel := running[msg.ID]; cancel != nil {
				cancel()
			}
			runningMu.Unlock()
		default:
			send(map[string]any{"type": "error", "id": msg.ID, "error": map[string]string{"code": "bad_request", "message": "unknown type " + msg.Type}})
		}
	}
}

// stream sends the scripted reply piece by piece and then done; it returns
// the finish reason.
func (s *fakeServer) stream(ctx context.Context, msg clientMessage, send func(any)) string {
	start := time.Now()
	pieces := fakeReply(msg.Messages[len(msg.Messages)-1].Content)
	maxTokens := len(pieces)
	if msg.MaxTokens != nil && *msg.MaxTokens < maxTokens {
		maxTokens = *msg.MaxTokens
	}
	reason := "stop"
	if maxTokens < len(pieces) {
		reason = "length"
	}
	var firstToken time.Time
	sent := 0
	for _, piece := range pieces[:maxTokens] {
		select {
		case <-ctx.Done():
			reason = "cancelled"
		case <-time.After(fakeTokenInterval):
		}
		if reason == "cancelled" {
			break
		}
		if firstToken.IsZero() {
			firstToken = time.Now()
		}
		send(map[string]any{"type": "token", "id": msg.ID, "text": piece})
		sent++
	}
	timings := map[string]any{}
	if sent > 0 {
		timings["ttft_ms"] = float64(firstToken.Sub(start).Microseconds()) / 1000
		if gen := time.Since(firstToken).Seconds(); gen > 0 && sent > 1 {
			timings["predicted_per_second"] = float64(sent-1) / gen
		}
	}
	send(map[string]any{
		"type":          "done",
		"id":            msg.ID,
		"finish_reason": reason,
		"usage":         map[string]int{"prompt_tokens": 7 * len(msg.Messages), "completion_tokens": sent},
		"timings":       timings,
	})
	return reason
}
