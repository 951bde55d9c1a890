package serve_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// doHost is ts.do with a Host header of the caller's choosing, as a page
// whose name was rebound to 127.0.0.1 sends it.
func (ts *testServer) doHost(method, path, host, body string, hdr http.Header) *http.Response {
	ts.t.Helper()
	req, err := http.NewRequest(method, ts.url(path), strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// TestDNSRebindingRefused: a page on http://evil.example:8080 rebound to
// 127.0.0.1 reached the whole API, the model file and the websocket (its
// Origin equals its Host). Now every endpoint but /health and /metrics
// answers 403 host_not_allowed naming server.allowed_hosts, and nothing
// reaches the engine; loopback names still work.
func TestDNSRebindingRefused(t *testing.T) {
	model := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(model, []byte("GGUF model bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := start(t, serve.Config{ModelFile: func(string) (string, bool) { return model, true }}, &servetest.Options{Model: "tiny"})
	const evil = "evil.example:8080"
	origin := http.Header{"Origin": {"http://" + evil}}
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/v1/models", ""},
		{"GET", "/v1/models/tiny/file", ""},
		{"POST", "/v1/completions", `{"prompt":"x","max_tokens":2}`},
		{"POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}]}`},
		{"POST", "/api/generate", `{"prompt":"x"}`},
		{"GET", "/api/tags", ""},
		{"GET", "/", ""},
	} {
		for _, hdr := range []http.Header{nil, origin} {
			e := expectError(t, ts.doHost(c.method, c.path, evil, c.body, hdr), http.StatusForbidden, "host_not_allowed", "")
			if !strings.Contains(e.Error.Message, "server.allowed_hosts") {
				t.Errorf("%s %s: message %q does not name the setting", c.method, c.path, e.Error.Message)
			}
		}
	}
	hdr := origin.Clone()
	hdr.Set("Host", evil)
	if c, resp, err := ts.tryDialWS(hdr, ""); err == nil {
		c.conn.Close()
		t.Error("websocket from a rebound page accepted")
	} else if resp == nil {
		t.Errorf("websocket: %v without a response", err)
	} else {
		expectError(t, resp, http.StatusForbidden, "host_not_allowed", "")
	}
	if n := len(ts.backend.Jobs()); n != 0 {
		t.Errorf("%d jobs reached the engine", n)
	}
	// Probes and scrapers address the server by any name.
	for _, path := range []string{"/health", "/metrics"} {
		resp := ts.doHost("GET", path, "wgllm.default.svc:8080", "", nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s by service name: %d", path, resp.StatusCode)
		}
	}
	// Loopback names and addresses are the server's own.
	for _, host := range []string{"localhost:8080", "LOCALHOST", "app.localhost:1", "127.0.0.1", "127.1.2.3:80", "[::1]:8080"} {
		resp := ts.doHost("GET", "/v1/models", host, "", nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("Host %s: %d", host, resp.StatusCode)
		}
	}
}

// TestAllowedHostsWidenTheHostCheck: allowed_hosts adds names (exact or
// .suffix); "*" turns the check off.
func TestAllowedHostsWidenTheHostCheck(t *testing.T) {
	ts := start(t, serve.Config{AllowedHosts: []string{"chat.example.org", ".lan"}}, &servetest.Options{})
	for host, want := range map[string]int{
		"chat.example.org":      200,
		"CHAT.example.org:443":  200,
		"box.lan:8080":          200,
		"lan":                   403,
		"chat.example.org.evil": 403,
		"10.0.0.7:8080":         403, // listening on loopback: other addresses are not this server's
	} {
		resp := ts.doHost("GET", "/v1/models", host, "", nil)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
	// Same origin on an allowed name: the websocket and the API accept it.
	hdr := http.Header{"Host": {"chat.example.org"}, "Origin": {"http://chat.example.org"}}
	c, _, err := ts.tryDialWS(hdr, "")
	if err != nil {
		t.Fatalf("websocket on an allowed host: %v", err)
	}
	if m := c.read(); m.Type != "hello" {
		t.Errorf("first message %+v", m)
	}
	any := start(t, serve.Config{AllowedHosts: []string{"*"}}, &servetest.Options{})
	resp := any.doHost("GET", "/v1/models", "anything.example", "", nil)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("allowed_hosts *: %d", resp.StatusCode)
	}
	if err := (serve.Config{AllowedHosts: []string{"http://x.example/"}}).Validate(); err == nil {
		t.Error("allowed_hosts entry with a scheme validated")
	}
}

// TestCrossSitePostRefused: a page on another site posts with Content-Type
// text/plain (no CORS preflight) to the generation endpoints; that ran a
// generation. Now it is 403 origin_not_allowed naming the setting, and
// nothing reaches the engine. The same request without Origin (curl -d,
// as Ollama's docs show it) still runs, as does one from the server's own
// page and from a loopback page.
func TestCrossSitePostRefused(t *testing.T) {
	ts := start(t, serve.Config{AllowedOrigins: []string{"https://app.example"}}, &servetest.Options{})
	plain := func(origin string) http.Header {
		h := http.Header{"Content-Type": {"text/plain;charset=UTF-8"}}
		if origin != "" {
			h.Set("Origin", origin)
		}
		return h
	}
	bodies := map[string]string{
		"/v1/completions":      `{"prompt":"x","max_tokens":2}`,
		"/v1/chat/completions": `{"messages":[{"role":"user","content":"x"}],"max_tokens":2}`,
		"/v1/requests":         `{"prompt":"x","max_tokens":2}`,
		"/api/generate":        `{"model":"fake-model","prompt":"x","stream":false,"options":{"num_predict":2}}`,
		"/api/chat":            `{"model":"fake-model","messages":[{"role":"user","content":"x"}],"stream":false,"options":{"num_predict":2}}`,
	}
	for path, body := range bodies {
		for _, origin := range []string{"http://evil.example", "https://evil.example:8443", "null", "http://127.0.0.1.evil.example"} {
			e := expectError(t, ts.do("POST", path, body, plain(origin)), http.StatusForbidden, "origin_not_allowed", "")
			if !strings.Contains(e.Error.Message, "server.allowed_origins") {
				t.Errorf("%s: message %q does not name the setting", path, e.Error.Message)
			}
		}
	}
	if n := len(ts.backend.Jobs()); n != 0 {
		t.Fatalf("%d cross-site requests reached the engine", n)
	}
	// GETs too: the page could not read the answer, but it is refused all the same.
	expectError(t, ts.do("GET", "/v1/models", nil, plain("http://evil.example")), http.StatusForbidden, "origin_not_allowed", "")
	expectError(t, ts.do("GET", "/health", nil, plain("http://evil.example")), http.StatusForbidden, "origin_not_allowed", "")

	ran := 0
	for path, body := range bodies {
		for _, origin := range []string{"", "http://" + ts.addr, "http://localhost:3000", "https://app.example"} {
			resp := ts.do("POST", path, body, plain(origin))
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
				t.Errorf("%s from %q: %d %s", path, origin, resp.StatusCode, data)
				continue
			}
			ran++
		}
	}
	if n := len(ts.backend.Jobs()); n != ran {
		t.Errorf("%d jobs for %d accepted requests", n, ran)
	}
}
