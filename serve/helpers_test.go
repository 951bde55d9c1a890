package serve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testServer is a real server on a loopback port with a fake engine.
type testServer struct {
	t       *testing.T
	srv     *serve.Server
	backend *servetest.Backend // nil until setBackend
	addr    string             // host:port
	logs    *syncBuffer
	stop    context.CancelFunc
	served  chan error
}

// start serves cfg on 127.0.0.1:0; with opts non-nil it also sets a fake
// backend. Cleanup shuts the server down and fails the test if Serve
// returned an error.
func start(t *testing.T, cfg serve.Config, opts *servetest.Options) *testServer {
	t.Helper()
	logs := &syncBuffer{}
	log := zerolog.New(logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	ts := &testServer{t: t, srv: serve.New(cfg, log), logs: logs, served: make(chan error, 1)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	ts.stop = cancel
	go func() { ts.served <- ts.srv.Serve(ctx, ln) }()
	if opts != nil {
		ts.setBackend(*opts)
	}
	t.Cleanup(func() {
		ts.shutdown()
		if ts.backend != nil {
			ts.backend.Close()
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return ts
}

func (ts *testServer) setBackend(opts servetest.Options) *servetest.Backend {
	ts.backend = servetest.New(opts)
	ts.srv.SetBackend(ts.backend)
	return ts.backend
}

// shutdown stops the server (once) and returns Serve's result.
func (ts *testServer) shutdown() error {
	ts.stop()
	select {
	case err, ok := <-ts.served:
		if ok {
			close(ts.served)
			if err != nil {
				ts.t.Errorf("Serve: %v", err)
			}
			return err
		}
		return nil
	case <-time.After(30 * time.Second):
		ts.t.Fatal("Serve did not return within 30s of shutdown")
		return nil
	}
}

func (ts *testServer) url(path string) string { return "http://" + ts.addr + path }

// do sends a request with an optional JSON body and headers.
func (ts *testServer) do(method, path string, body any, hdr http.Header) *http.Response {
	ts.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			ts.t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, ts.url(path), r)
	if err != nil {
		ts.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// decode reads resp's JSON body into v (a pointer) and closes it.
func decode(t *testing.T, resp *http.Response, v any) {
	t.Helper()
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: body %q is not the JSON expected: %v", resp.Request.URL.Path, data, err)
	}
}

// apiErr is OpenAI's error body.
type apiErr struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// expectError checks an OpenAI-shaped error answer.
func expectError(t *testing.T, resp *http.Response, status int, code, param string) apiErr {
	t.Helper()
	if resp.StatusCode != status {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type %q", ct)
	}
	var e apiErr
	decode(t, resp, &e)
	if e.Error.Message == "" || e.Error.Type == "" {
		t.Errorf("error without message or type: %+v", e)
	}
	if e.Error.Code == nil || *e.Error.Code != code {
		t.Errorf("error code %v, want %q (message %q)", deref(e.Error.Code), code, e.Error.Message)
	}
	if param != "" && (e.Error.Param == nil || *e.Error.Param != param) {
		t.Errorf("error param %v, want %q (message %q)", deref(e.Error.Param), param, e.Error.Message)
	}
	return e
}

func deref(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

// wantText is the fake engine's text for n pieces.
func wantText(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(" w")
		b.WriteString(itoa(i))
	}
	return b.String()
}

func itoa(i int) string {
	data, _ := json.Marshal(i)
	return string(data)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// jobWithPrompt finds the fake engine's job whose prompt contains s.
func jobWithPrompt(t *testing.T, b *servetest.Backend, s string) engine.Job {
	t.Helper()
	for _, j := range b.Jobs() {
		if strings.Contains(j.Prompt, s) {
			return j
		}
	}
	t.Fatalf("no job with prompt containing %q", s)
	return engine.Job{}
}

// --- websocket client -------------------------------------------------------

type wsMsg struct {
	Type         string `json:"type"`
	ID           string `json:"id"`
	Model        string `json:"model"`
	Text         string `json:"text"`
	FinishReason string `json:"finish_reason"`
	Call         *struct {
		ID        string          `json:"id"`
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	} `json:"call"` // a tool_call message's
	Usage   *engine.Usage  `json:"usage"`
	Timings map[string]any `json:"timings"`
	Error   *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Param   string `json:"param"`
	} `json:"error"`
}

type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
	resp *http.Response
}

// dialWS connects and reads the hello.
func (ts *testServer) dialWS(hdr http.Header, query string, subprotocols ...string) *wsClient {
	ts.t.Helper()
	c, resp, err := ts.tryDialWS(hdr, query, subprotocols...)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		ts.t.Fatalf("websocket dial: %v (status %d)", err, status)
	}
	hello := c.read()
	if hello.Type != "hello" || hello.Model != ts.backend.ModelName() {
		ts.t.Fatalf("first message %+v, want hello with model %q", hello, ts.backend.ModelName())
	}
	return c
}

func (ts *testServer) tryDialWS(hdr http.Header, query string, subprotocols ...string) (*wsClient, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: subprotocols}
	u := "ws://" + ts.addr + "/ws"
	if query != "" {
		u += "?" + query
	}
	conn, resp, err := d.Dial(u, hdr)
	if err != nil {
		return nil, resp, err
	}
	c := &wsClient{t: ts.t, conn: conn, resp: resp}
	ts.t.Cleanup(func() { conn.Close() })
	return c, resp, nil
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	var err error
	if s, ok := v.(string); ok {
		err = c.conn.WriteMessage(websocket.TextMessage, []byte(s))
	} else {
		err = c.conn.WriteJSON(v)
	}
	if err != nil {
		c.t.Fatalf("websocket send: %v", err)
	}
}

func (c *wsClient) read() wsMsg {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, data, err := c.conn.ReadMessage()
	if err != nil {
		c.t.Fatalf("websocket read: %v", err)
	}
	var m wsMsg
	if err := json.Unmarshal(data, &m); err != nil {
		c.t.Fatalf("websocket message %q: %v", data, err)
	}
	return m
}

// wsResult is one request's messages.
type wsResult struct {
	text   string
	tokens int
	end    wsMsg // the done or error message
}

// collect reads until every id has ended (done or error); it also returns
// the order of ids of all messages received.
func (c *wsClient) collect(ids ...string) (map[string]*wsResult, []string) {
	c.t.Helper()
	res := map[string]*wsResult{}
	for _, id := range ids {
		res[id] = &wsResult{}
	}
	var order []string
	open := len(ids)
	for open > 0 {
		m := c.read()
		r, ok := res[m.ID]
		if !ok {
			c.t.Fatalf("message for unexpected id: %+v", m)
		}
		if r.end.Type != "" {
			c.t.Fatalf("message after the end of %q: %+v", m.ID, m)
		}
		order = append(order, m.ID)
		switch m.Type {
		case "token":
			r.text += m.Text
			r.tokens++
		case "done", "error":
			r.end = m
			open--
		default:
			c.t.Fatalf("unexpected message %+v", m)
		}
	}
	return res, order
}

// expectWSError reads one message and checks it is an error with code
// (and the id when not empty).
func (c *wsClient) expectError(id, code string) wsMsg {
	c.t.Helper()
	m := c.read()
	if m.Type != "error" || m.Error == nil || m.Error.Code != code || m.ID != id || m.Error.Message == "" {
		c.t.Fatalf("got %+v (error %+v), want error %q for id %q", m, m.Error, code, id)
	}
	return m
}
