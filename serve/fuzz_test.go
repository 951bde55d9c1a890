package serve_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// FuzzOpenAIRequest posts arbitrary bodies to every generation endpoint:
// the server must answer with a status from the documented set and a JSON
// body, never panic.
func FuzzOpenAIRequest(f *testing.F) {
	for _, seed := range []string{
		`{"messages":[{"role":"user","content":"hi"}],"max_tokens":4}`,
		`{"prompt":"Once","max_tokens":3,"stream":true}`,
		`{"prompt":["a","b"],"temperature":"hot"}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"stop":["a"],"seed":-1}`,
		`{"prompt":"x","top_p":1e309}`, `[]`, `null`, `{"prompt":"\xff"}`,
	} {
		f.Add(seed)
	}
	backend := servetest.New(servetest.Options{StepDelay: 0})
	srv := serve.New(serve.Config{MaxBodyBytes: 4096, MaxPromptBytes: 1024}, zerolog.Nop())
	srv.SetBackend(backend)
	h := srv.Handler()
	allowed := map[int]bool{200: true, 202: true, 400: true, 413: true, 429: true}
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/v1/chat/completions", "/v1/completions", "/v1/requests"} {
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewBufferString(body))
			req.Host = "localhost" // httptest names example.com, which the Host check refuses
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if !allowed[rec.Code] {
				t.Fatalf("%s %q: status %d: %s", path, body, rec.Code, rec.Body.String())
			}
			if rec.Code >= 400 && !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s %q: error body is not JSON: %q", path, body, rec.Body.String())
			}
		}
	})
}

// FuzzWebsocketMessage sends arbitrary text messages on one connection:
// each gets an answer, and the connection stays usable afterwards.
func FuzzWebsocketMessage(f *testing.F) {
	for _, seed := range []string{
		`{"type":"generate","id":"a","prompt":"x","max_tokens":2}`, `{"type":"cancel","id":"zz"}`,
		`{"type":"chat","id":"b","messages":[]}`, `{not json`, `{"type":7}`, `"str"`, `{}`,
	} {
		f.Add(seed)
	}
	backend := servetest.New(servetest.Options{StepDelay: 0})
	srv := serve.New(serve.Config{}, zerolog.Nop())
	srv.SetBackend(backend)
	hs := httptest.NewServer(srv.Handler())
	f.Cleanup(hs.Close)
	url := "ws" + hs.URL[len("http"):] + "/ws"
	f.Fuzz(func(t *testing.T, msg string) {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var hello map[string]any
		if err := c.ReadJSON(&hello); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		// A well-formed probe after it must still be answered.
		c.WriteJSON(map[string]any{"type": "cancel", "id": "probe-that-does-not-exist"})
		for {
			var m struct {
				Type string `json:"type"`
				ID   string `json:"id"`
			}
			if err := c.ReadJSON(&m); err != nil {
				t.Fatalf("after %q: %v", msg, err)
			}
			if m.ID == "probe-that-does-not-exist" {
				return
			}
		}
	})
}
