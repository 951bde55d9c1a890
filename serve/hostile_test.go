package serve_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// bystanderTokens is the length of the generations that run alongside the
// hostile requests; at the fake engine's 3ms a step they outlast the table.
const bystanderTokens = 600

// streamBystander streams a long completion and reports its text and
// finish reason (or what went wrong) on the returned channel.
func streamBystander(ts *testServer) <-chan string {
	out := make(chan string, 1)
	go func() {
		body := `{"prompt":"bystander","max_tokens":` + itoa(bystanderTokens) + `,"stream":true}`
		resp, err := http.Post(ts.url("/v1/completions"), "application/json", strings.NewReader(body))
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		var text strings.Builder
		reason := ""
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok || data == "[DONE]" {
				continue
			}
			var chunk struct {
				Choices []struct {
					Text         string  `json:"text"`
					FinishReason *string `json:"finish_reason"`
				} `json:"choices"`
			}
			if err := json.Unmarshal([]byte(data), &chunk); err != nil {
				out <- "bad chunk: " + data
				return
			}
			for _, c := range chunk.Choices {
				text.WriteString(c.Text)
				if c.FinishReason != nil {
					reason = *c.FinishReason
				}
			}
		}
		out <- reason + ":" + text.String()
	}()
	return out
}

// TestHostileRequests sends the hostile requests of docs/RELIABILITY.md
// over HTTP and the websocket while two long generations (one streamed
// over HTTP, one over a websocket) run: each hostile request gets its
// documented status and error code, none reaches the engine, the
// bystanders finish with their whole text, and the server still serves.
func TestHostileRequests(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{StepDelay: 3 * time.Millisecond, MaxActive: 4})
	httpBystander := streamBystander(ts)
	wsBystander := ts.dialWS(nil, "")
	wsBystander.send(map[string]any{"type": "generate", "id": "bystander", "prompt": "ws bystander", "max_tokens": bystanderTokens})
	waitFor(t, "both bystanders to run", 10*time.Second, func() bool { return ts.backend.Metrics().ActiveSequences == 2 })

	tenMB := `{"prompt":"` + strings.Repeat("a", 10<<20) + `"}`
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	cases := []struct {
		name         string
		method, path string
		body         string
		status       int
		code, param  string // code "" for a success
	}{
		{"invalid JSON", "POST", "/v1/completions", `{"prompt":"x",`, 400, "invalid_json", ""},
		{"not an object", "POST", "/v1/chat/completions", `[1,2,3]`, 400, "invalid_json", ""},
		{"nesting 20000 deep", "POST", "/v1/completions", deep, 400, "invalid_json", ""},
		{"trailing garbage", "POST", "/v1/completions", `{"prompt":"x"} {}`, 400, "invalid_json", ""},
		{"unknown field (ignored)", "POST", "/v1/completions", `{"prompt":"x","max_tokens":2,"frobnicate":{"a":1},"user":"u"}`, 200, "", ""},
		{"tool without a function", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}`, 400, "invalid_parameter", "tools[0].function"},
		{"tool whose parameters are no schema", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"properties":[1]}}}]}`, 400, "invalid_parameter", "tools[0].function.parameters"},
		{"tool answer without its call", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"},{"role":"tool","tool_call_id":"c1","content":"1"}]}`, 400, "invalid_parameter", "messages[1].tool_call_id"},
		{"tool_choice naming no tool", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}}`, 400, "invalid_parameter", "tool_choice.function.name"},
		{"tools on a template without them", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}]}`, 400, "unsupported_parameter", "tools"},
		{"unsupported field: suffix", "POST", "/v1/completions", `{"prompt":"x","suffix":"y"}`, 400, "unsupported_parameter", "suffix"},
		{"logit_bias not a token id", "POST", "/v1/completions", `{"prompt":"x","logit_bias":{"a":-100}}`, 400, "invalid_parameter", "logit_bias"},
		{"logit_bias out of range", "POST", "/v1/completions", `{"prompt":"x","logit_bias":{"5":-101}}`, 400, "invalid_parameter", "logit_bias"},
		{"schema that does not compile", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"a":{"type":"string","pattern":"^a"}}}}}}`, 400, "invalid_parameter", "response_format.json_schema.schema"},
		{"response_format unknown type", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}}`, 400, "invalid_parameter", "response_format.type"},
		{"top_logprobs without logprobs", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"top_logprobs":3}`, 400, "invalid_parameter", "top_logprobs"},
		{"neutral unsupported fields pass", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"max_tokens":2,"tools":[],"tool_choice":"none","logprobs":false,"response_format":{"type":"text"}}`, 200, "", ""},
		{"wrong type: max_tokens string", "POST", "/v1/completions", `{"prompt":"x","max_tokens":"ten"}`, 400, "invalid_parameter", "max_tokens"},
		{"wrong type: temperature string", "POST", "/v1/completions", `{"prompt":"x","temperature":"hot"}`, 400, "invalid_parameter", "temperature"},
		{"wrong type: messages string", "POST", "/v1/chat/completions", `{"messages":"hi"}`, 400, "invalid_parameter", "messages"},
		{"wrong type: prompt number", "POST", "/v1/completions", `{"prompt":5}`, 400, "invalid_parameter", "prompt"},
		{"wrong type: content object", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":{"a":1}}]}`, 400, "invalid_parameter", "messages[0].content"},
		{"prompt of 10 MB", "POST", "/v1/completions", tenMB, 413, "body_too_large", ""},
		{"max_tokens 1e9", "POST", "/v1/completions", `{"prompt":"x","max_tokens":1e9}`, 400, "invalid_parameter", "max_tokens"},
		{"max_tokens 1000000000", "POST", "/v1/completions", `{"prompt":"x","max_tokens":1000000000}`, 400, "invalid_parameter", "max_tokens"},
		{"max_tokens 1e400", "POST", "/v1/completions", `{"prompt":"x","max_tokens":1e400}`, 400, "invalid_parameter", "max_tokens"},
		{"temperature NaN literal", "POST", "/v1/completions", `{"prompt":"x","temperature":NaN}`, 400, "invalid_json", ""},
		{"temperature \"NaN\"", "POST", "/v1/completions", `{"prompt":"x","temperature":"NaN"}`, 400, "invalid_parameter", "temperature"},
		{"temperature 1e309", "POST", "/v1/completions", `{"prompt":"x","temperature":1e309}`, 400, "invalid_parameter", "temperature"},
		{"temperature negative", "POST", "/v1/completions", `{"prompt":"x","temperature":-0.5}`, 400, "invalid_parameter", "temperature"},
		{"top_p above 1", "POST", "/v1/completions", `{"prompt":"x","top_p":1.5}`, 400, "invalid_parameter", "top_p"},
		{"non-UTF-8 prompt", "POST", "/v1/completions", "{\"prompt\":\"caf\xe9\"}", 400, "invalid_json", ""},
		{"non-UTF-8 message", "POST", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", 400, "invalid_json", ""},
		{"non-UTF-8 queued request", "POST", "/v1/requests", "{\"prompt\":\"\xc3\"}", 400, "invalid_json", ""},
		{"unknown request id (GET)", "GET", "/v1/requests/req-doesnotexist", "", 404, "not_found", ""},
		{"unknown request id (DELETE)", "DELETE", "/v1/requests/req-doesnotexist", "", 404, "not_found", ""},
		{"unknown endpoint", "POST", "/v1/audio/speech", `{"input":"x"}`, 404, "not_found", ""},
		{"wrong method", "PUT", "/v1/chat/completions", `{}`, 405, "method_not_allowed", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := ts.do(tc.method, tc.path, tc.body, http.Header{"Content-Type": {"application/json"}})
			if tc.code == "" {
				if resp.StatusCode != tc.status {
					expectError(t, resp, tc.status, "", "")
				}
				resp.Body.Close()
				return
			}
			e := expectError(t, resp, tc.status, tc.code, tc.param)
			if len(e.Error.Message) > 1024 {
				t.Errorf("error message of %d bytes", len(e.Error.Message))
			}
		})
	}

	t.Run("websocket", func(t *testing.T) {
		c := ts.dialWS(nil, "")
		for _, m := range []struct{ msg, id, code string }{
			{`{"type":"generate","id":"a",`, "", "invalid_json"},
			{`{"type":"summon","id":"b"}`, "b", "unknown_type"},
			{`{"type":"generate","id":"c","prompt":"x","max_tokens":"ten"}`, "c", "invalid_parameter"},
			{`{"type":"generate","id":"d","prompt":"x","max_tokens":1000000000}`, "d", "invalid_parameter"},
			{`{"type":"generate","id":"e","prompt":"x","temperature":-1}`, "e", "invalid_parameter"},
			{`{"type":"generate","id":"f","prompt":"x","top_p":2}`, "f", "invalid_parameter"},
			{"{\"type\":\"generate\",\"id\":\"g\",\"prompt\":\"\xff\"}", "", "invalid_json"},
			{`{"type":"cancel","id":"never-started"}`, "never-started", "not_found"},
			{`{"type":"generate","id":"` + strings.Repeat("i", 200) + `","prompt":"x"}`, "", "invalid_parameter"},
		} {
			c.send(m.msg)
			c.expectError(m.id, m.code)
		}
		// The connection still works.
		c.send(map[string]any{"type": "generate", "id": "ok", "prompt": "after the hostile ones", "max_tokens": 3})
		res, _ := c.collect("ok")
		if r := res["ok"]; r.end.Type != "done" || r.text != wantText(3) {
			t.Errorf("request after hostile messages: %+v, text %q", r.end, r.text)
		}
	})

	// A server configured for big bodies still bounds the prompt.
	t.Run("prompt of 10 MB within the body limit", func(t *testing.T) {
		big := start(t, serve.Config{MaxBodyBytes: 16 << 20}, &servetest.Options{})
		expectError(t, big.do("POST", "/v1/completions", tenMB, nil), http.StatusRequestEntityTooLarge, "prompt_too_large", "prompt")
		if n := len(big.backend.Jobs()); n != 0 {
			t.Errorf("%d jobs reached the engine", n)
		}
	})

	select {
	case got := <-httpBystander:
		if want := "length:" + wantText(bystanderTokens); got != want {
			t.Errorf("HTTP bystander ended with %.80q…, want %.80q…", got, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("HTTP bystander did not finish")
	}
	res, _ := wsBystander.collect("bystander")
	if r := res["bystander"]; r.end.Type != "done" || r.end.FinishReason != "length" || r.text != wantText(bystanderTokens) {
		t.Errorf("websocket bystander: %+v, %d bytes of text", r.end, len(r.text))
	}
	// Only the bystanders and the requests meant to succeed reached the engine.
	var prompts []string
	for _, j := range ts.backend.Jobs() {
		prompts = append(prompts, j.Prompt)
	}
	if len(prompts) != 5 {
		t.Errorf("%d jobs reached the engine, want 5 (2 bystanders, 2 accepted HTTP requests, 1 websocket probe): %.60q", len(prompts), prompts)
	}
	if code, _ := getStatus(ts, "/health"); code != http.StatusOK {
		t.Errorf("/health after the hostile requests: %d", code)
	}
}

func getStatus(ts *testServer, path string) (int, error) {
	resp, err := http.Get(ts.url(path))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestWebsocketConnectionLimit: beyond WSMaxConnections an upgrade gets a
// clear 429; closing a connection frees its place.
func TestWebsocketConnectionLimit(t *testing.T) {
	ts := start(t, serve.Config{WSMaxConnections: 3}, &servetest.Options{})
	var open []*wsClient
	for range 3 {
		open = append(open, ts.dialWS(nil, ""))
	}
	_, resp, err := ts.tryDialWS(nil, "")
	if err == nil || resp == nil {
		t.Fatalf("fourth connection: err %v, want a refusal", err)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	expectError(t, resp, http.StatusTooManyRequests, "too_many_connections", "")
	// The open ones still work.
	open[0].send(map[string]any{"type": "generate", "id": "x", "prompt": "p", "max_tokens": 2})
	if res, _ := open[0].collect("x"); res["x"].end.Type != "done" {
		t.Errorf("open connection: %+v", res["x"].end)
	}
	open[1].conn.Close()
	waitFor(t, "a place to free up", 10*time.Second, func() bool {
		c, _, err := ts.tryDialWS(nil, "")
		if err != nil {
			return false
		}
		c.conn.Close()
		return true
	})
}

// TestHTTPClientThatNeverReads: a streaming client that stops reading
// fills the socket buffers; the write deadline then fails the stream, its
// generation is cancelled, and another client meanwhile gets its answer.
func TestHTTPClientThatNeverReads(t *testing.T) {
	big := strings.Repeat("x", 256<<10)
	// 400 steps of 10ms: the stream would last 4s; the deadline ends it sooner.
	ts := start(t, serve.Config{WriteTimeout: 300 * time.Millisecond}, &servetest.Options{StepDelay: 10 * time.Millisecond,
		Piece: func(j engine.Job, i int) string {
			if strings.Contains(j.Prompt, "flood") {
				return big
			}
			return " w" + itoa(i)
		}})
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"prompt":"flood","max_tokens":400,"stream":true}`
	fmt.Fprintf(conn, "POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", ts.addr, len(body), body)
	// Never read. The flood job exists, then is cancelled once a write
	// times out, long before its 400 pieces of 256 KiB (100 MiB) are out.
	var flood engine.Job
	waitFor(t, "the flood job", 10*time.Second, func() bool {
		for _, j := range ts.backend.Jobs() {
			if j.Prompt == "flood" {
				flood = j
				return true
			}
		}
		return false
	})
	resp := ts.do("POST", "/v1/completions", `{"prompt":"meanwhile","max_tokens":5}`, nil)
	var out struct{ Choices []struct{ Text string } }
	decode(t, resp, &out)
	if len(out.Choices) != 1 || out.Choices[0].Text != wantText(5) {
		t.Errorf("other client: %+v", out)
	}
	waitFor(t, "the flood job to be cancelled", 20*time.Second, func() bool {
		st, _ := ts.backend.Status(flood.ID)
		return st.State == engine.Cancelled
	})
	if st, _ := ts.backend.Status(flood.ID); st.Usage.CompletionTokens >= 400 {
		t.Errorf("flood job ran to the end: %+v", st.Usage)
	}
}

// TestStaticFilesStayInTheirDirectory: paths that climb out of the static
// directory (dot segments, encoded, backslashes, absolute) never serve a
// file from outside it.
func TestStaticFilesStayInTheirDirectory(t *testing.T) {
	root := t.TempDir()
	pub := filepath.Join(root, "public")
	os.Mkdir(pub, 0o755)
	os.WriteFile(filepath.Join(pub, "index.html"), []byte("<html>page</html>"), 0o644)
	const secret = "TOP-SECRET-CONTENT"
	os.WriteFile(filepath.Join(root, "secret.txt"), []byte(secret), 0o644)
	ts := start(t, serve.Config{Static: os.DirFS(pub)}, nil)
	for _, path := range []string{"/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/%2e%2e%2fsecret.txt",
		"/..\\secret.txt", "/.%2e/secret.txt", "//../secret.txt", "/" + root + "/secret.txt", "/index.html/../../secret.txt"} {
		conn, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		// Raw, so that no client cleans the path first.
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		conn.Close()
		if strings.Contains(string(body), secret) || (resp.StatusCode == http.StatusOK && !strings.Contains(string(body), "page")) {
			t.Errorf("GET %s: %d %q", path, resp.StatusCode, body)
		}
	}
}
