package serve_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/sample"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

func scrape(t *testing.T, ts *testServer) string {
	t.Helper()
	resp := ts.do("GET", "/metrics", nil, nil)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	return string(body)
}

func TestHealthLoadingThenReady(t *testing.T) {
	ts := start(t, serve.Config{}, nil)
	var health map[string]string
	resp := ts.do("GET", "/health", nil, nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/health before the backend: %d", resp.StatusCode)
	}
	decode(t, resp, &health)
	if len(health) != 1 || health["status"] != "loading" {
		t.Errorf("/health before the backend: %v", health)
	}
	for _, r := range []struct{ method, path string }{
		{"POST", "/v1/chat/completions"}, {"POST", "/v1/completions"}, {"GET", "/v1/models"},
		{"POST", "/v1/requests"}, {"GET", "/v1/requests/x"}, {"GET", "/ws"},
	} {
		expectError(t, ts.do(r.method, r.path, `{"prompt":"x"}`, nil), http.StatusServiceUnavailable, "model_loading", "")
	}
	if m := scrape(t, ts); !strings.Contains(m, "wgllm_model_loaded 0") {
		t.Error("metrics before the backend lack wgllm_model_loaded 0")
	}

	ts.setBackend(servetest.Options{Model: "tiny-llama"})
	resp = ts.do("GET", "/health", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/health after the backend: %d", resp.StatusCode)
	}
	health = nil
	decode(t, resp, &health)
	if health["status"] != "ok" || health["model"] != "tiny-llama" {
		t.Errorf("/health after the backend: %v", health)
	}
}

func TestRequestStatusEndpoints(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{StepDelay: 3 * time.Millisecond})
	var created map[string]string
	resp := ts.do("POST", "/v1/requests", map[string]any{"prompt": "poll me", "max_tokens": 6, "temperature": 0}, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("create: %d", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	decode(t, resp, &created)
	id := created["id"]
	if created["status"] != "queued" || !strings.HasPrefix(id, "req-") || len(created) != 2 || loc != "/v1/requests/"+id {
		t.Fatalf("create answered %v, Location %q", created, loc)
	}
	var st engine.Status
	waitFor(t, "the request to finish", 10*time.Second, func() bool {
		st = engine.Status{}
		decode(t, ts.do("GET", "/v1/requests/"+id, nil, nil), &st)
		return st.State == engine.Done
	})
	if st.ID != id || st.Text != wantText(6) || st.FinishReason != "length" || st.Usage.CompletionTokens != 6 || st.Created.IsZero() {
		t.Errorf("status %+v", st)
	}
	// The raw shape: engine.Status's JSON names.
	var raw map[string]any
	decode(t, ts.do("GET", "/v1/requests/"+id, nil, nil), &raw)
	for _, k := range []string{"id", "status", "text", "finish_reason", "usage", "timings", "created"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status lacks %q: %v", k, raw)
		}
	}

	// Chat bodies work too.
	resp = ts.do("POST", "/v1/requests", map[string]any{"messages": []map[string]string{{"role": "user", "content": "chat poll"}}, "max_tokens": 2}, nil)
	decode(t, resp, &created)
	if got := jobWithPrompt(t, ts.backend, "chat poll").Prompt; got != "<|user|>\nchat poll\n<|assistant|>\n" {
		t.Errorf("chat request prompt %q", got)
	}

	// DELETE cancels and answers the final status.
	resp = ts.do("POST", "/v1/requests", map[string]any{"prompt": "cancel me", "max_tokens": 4000}, nil)
	decode(t, resp, &created)
	long := created["id"]
	waitFor(t, "the long request to run", 10*time.Second, func() bool {
		st, _ := ts.backend.Status(long)
		return st.State == engine.Running
	})
	resp = ts.do("DELETE", "/v1/requests/"+long, nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	st = engine.Status{}
	decode(t, resp, &st)
	if st.State != engine.Cancelled || st.FinishReason != "cancelled" || st.Usage.CompletionTokens >= 4000 {
		t.Errorf("after DELETE: %+v", st)
	}
	// Deleting a finished request leaves it as it was.
	resp = ts.do("DELETE", "/v1/requests/"+id, nil, nil)
	st = engine.Status{}
	decode(t, resp, &st)
	if resp.StatusCode != http.StatusOK || st.State != engine.Done {
		t.Errorf("DELETE of a finished request: %d %+v", resp.StatusCode, st)
	}

	expectError(t, ts.do("GET", "/v1/requests/req-nope", nil, nil), http.StatusNotFound, "not_found", "")
	expectError(t, ts.do("DELETE", "/v1/requests/req-nope", nil, nil), http.StatusNotFound, "not_found", "")
	expectError(t, ts.do("PUT", "/v1/requests/"+id, nil, nil), http.StatusMethodNotAllowed, "method_not_allowed", "")
}

func parseMetrics(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("metrics do not parse: %v\n%s", err, text)
	}
	return fams
}

func TestMetrics(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{StepDelay: time.Millisecond, KVBlocksTotal: 300})
	for range 2 {
		resp := ts.do("POST", "/v1/chat/completions", map[string]any{"max_tokens": 10,
			"messages": []map[string]string{{"role": "user", "content": "count"}}}, nil)
		resp.Body.Close()
	}
	c := ts.dialWS(nil, "")
	c.send(map[string]any{"type": "generate", "id": "a", "prompt": "x", "max_tokens": 1000})
	c.read()
	c.send(map[string]any{"type": "cancel", "id": "a"})
	c.collect("a")

	// A running job shows as an active sequence using KV blocks.
	c.send(map[string]any{"type": "generate", "id": "b", "prompt": "x y z", "max_tokens": 4000})
	c.read()
	fams := parseMetrics(t, scrape(t, ts))
	value := func(name string) float64 {
		f, ok := fams[name]
		if !ok || len(f.Metric) == 0 {
			t.Fatalf("metric %s missing", name)
		}
		m := f.Metric[0]
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		}
		t.Fatalf("metric %s of type %v", name, f.GetType())
		return 0
	}
	if v := value("wgllm_active_sequences"); v != 1 {
		t.Errorf("active sequences %v", v)
	}
	if v := value("wgllm_kv_blocks_total"); v != 300 {
		t.Errorf("kv blocks total %v", v)
	}
	if v := value("wgllm_kv_blocks_used"); v < 1 {
		t.Errorf("kv blocks used %v", v)
	}
	if v := value("wgllm_queue_limit"); v != 8 {
		t.Errorf("queue limit %v", v)
	}
	if _, ok := fams["wgllm_queue_depth"]; !ok {
		t.Error("no queue depth")
	}
	if v, min := value("wgllm_tokens_generated_total"), float64(21); v < min {
		t.Errorf("tokens generated %v, want ≥ %v", v, min)
	}
	if fams["wgllm_tokens_generated_total"].GetType() != dto.MetricType_COUNTER {
		t.Error("tokens generated is not a counter")
	}
	if v := value("wgllm_model_loaded"); v != 1 {
		t.Errorf("model loaded %v", v)
	}
	if v := value("wgllm_websocket_connections"); v != 1 {
		t.Errorf("websocket connections %v", v)
	}
	h := fams["wgllm_time_to_first_token_seconds"]
	if h == nil || h.GetType() != dto.MetricType_HISTOGRAM || h.Metric[0].Histogram.GetSampleCount() != 3 ||
		h.Metric[0].Histogram.GetSampleSum() <= 0 {
		t.Errorf("time to first token histogram %v", h)
	}
	outcomes := map[string]float64{}
	for _, m := range fams["wgllm_requests_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		outcomes[labels["endpoint"]+"/"+labels["outcome"]] = m.Counter.GetValue()
	}
	if outcomes["chat/length"] != 2 || outcomes["ws/cancelled"] != 1 {
		t.Errorf("requests by outcome %v", outcomes)
	}
	// The rate needs two samples over time: scrape again after tokens flowed.
	waitFor(t, "a positive token rate", 10*time.Second, func() bool {
		fams = parseMetrics(t, scrape(t, ts))
		return value("wgllm_tokens_per_second") > 0
	})
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
}

func TestStaticFiles(t *testing.T) {
	page := "<!doctype html><title>wgllm</title>"
	ts := start(t, serve.Config{Static: fstest.MapFS{
		"index.html": {Data: []byte(page)},
		"app.js":     {Data: []byte("console.log(1)")},
	}}, &servetest.Options{})
	resp := ts.do("GET", "/", nil, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != page || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("GET /: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp = ts.do("GET", "/app.js", nil, nil)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /app.js: %d", resp.StatusCode)
	}
	resp = ts.do("GET", "/missing.css", nil, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /missing.css: %d", resp.StatusCode)
	}
	expectError(t, ts.do("POST", "/", "x", nil), http.StatusMethodNotAllowed, "method_not_allowed", "")

	bare := start(t, serve.Config{}, &servetest.Options{})
	expectError(t, bare.do("GET", "/", nil, nil), http.StatusNotFound, "not_found", "")
}

// Shutdown lets in-flight generations finish within the deadline.
func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	ts := start(t, serve.Config{ShutdownTimeout: 20 * time.Second}, &servetest.Options{StepDelay: 5 * time.Millisecond})
	c := ts.dialWS(nil, "")
	c.send(map[string]any{"type": "generate", "id": "w", "prompt": "ws", "max_tokens": 60})
	if m := c.read(); m.Type != "token" {
		t.Fatalf("first message %+v", m)
	}
	resp := ts.do("POST", "/v1/completions", map[string]any{"stream": true, "prompt": "sse", "max_tokens": 60}, nil)
	sc := bufio.NewScanner(resp.Body)
	if got := readSSE(t, sc, 1); len(got) != 1 {
		t.Fatal("no first chunk")
	}

	began := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- ts.shutdown() }()
	// The stream and the websocket run to their natural end.
	events := readSSE(t, sc, 0)
	resp.Body.Close()
	if len(events) < 2 || events[len(events)-1] != "[DONE]" || !strings.Contains(events[len(events)-2], `"finish_reason":"length"`) {
		t.Errorf("stream during shutdown ended with %q", events[max(0, len(events)-2):])
	}
	res, _ := c.collect("w")
	if res["w"].end.FinishReason != "length" || res["w"].tokens != 59 {
		t.Errorf("websocket during shutdown: %+v after %d more tokens", res["w"].end, res["w"].tokens)
	}
	// Then the server says goodbye.
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := c.conn.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Errorf("after shutdown: %v, want close 1001", err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 15*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	if _, err := http.Get(ts.url("/health")); err == nil {
		t.Error("still accepting connections after shutdown")
	}
}

// Past the deadline, shutdown cancels what is still running.
func TestGracefulShutdownCancelsAtDeadline(t *testing.T) {
	ts := start(t, serve.Config{ShutdownTimeout: 300 * time.Millisecond}, &servetest.Options{StepDelay: 5 * time.Millisecond})
	c := ts.dialWS(nil, "")
	c.send(map[string]any{"type": "generate", "id": "w", "prompt": "ws", "max_tokens": 4000})
	c.read()
	resp := ts.do("POST", "/v1/requests", map[string]any{"prompt": "detached", "max_tokens": 4000}, nil)
	var created map[string]string
	decode(t, resp, &created)

	began := time.Now()
	if err := ts.shutdown(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("shutdown took %v with a 300ms deadline", took)
	}
	res, _ := c.collect("w")
	if res["w"].end.FinishReason != "cancelled" {
		t.Errorf("websocket request at the deadline: %+v", res["w"].end)
	}
	if st, _ := ts.backend.Status(created["id"]); st.State != engine.Cancelled {
		t.Errorf("detached request at the deadline: %+v", st)
	}
}

// Every log line about a request names it.
func TestLogsCarryRequestIDs(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{})
	resp := ts.do("POST", "/v1/completions", map[string]any{"prompt": "logged", "max_tokens": 2}, nil)
	rid := resp.Header.Get("X-Request-Id")
	resp.Body.Close()
	expectError(t, ts.do("POST", "/v1/completions", `{"prompt":"x","top_p":7}`, nil), http.StatusBadRequest, "invalid_parameter", "top_p")
	c := ts.dialWS(nil, "")
	c.send(map[string]any{"type": "generate", "id": "r1", "prompt": "x", "max_tokens": 2})
	c.collect("r1")
	c.conn.Close()
	waitFor(t, "the websocket to close", 5*time.Second, func() bool {
		return strings.Contains(ts.logs.String(), `"message":"websocket closed"`)
	})

	sawJobEnd, sawHTTP := false, false
	for _, line := range strings.Split(strings.TrimSpace(ts.logs.String()), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		msg, _ := entry["message"].(string)
		about := entry["job_id"] != nil || entry["client_id"] != nil || entry["method"] != nil || entry["status"] != nil
		if about && entry["request_id"] == nil {
			t.Errorf("log line about a request without request_id: %s", line)
		}
		if strings.Contains(msg, "websocket") && entry["conn_id"] == nil && entry["request_id"] == nil {
			t.Errorf("websocket log line without conn_id: %s", line)
		}
		if msg == "generation ended" && entry["request_id"] == rid && entry["job_id"] == "cmpl-"+rid {
			sawJobEnd = true
		}
		if msg == "http" && entry["request_id"] == rid {
			sawHTTP = true
		}
		if strings.Contains(line, "logged") {
			t.Errorf("prompt text in the logs: %s", line)
		}
	}
	if !sawJobEnd || !sawHTTP {
		t.Errorf("missing lines for request %s (job end %v, access %v):\n%s", rid, sawJobEnd, sawHTTP, ts.logs.String())
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (serve.Config{}).Validate(); err != nil {
		t.Fatalf("the zero config: %v", err)
	}
	if d := serve.DefaultConfig(); d.Addr != "127.0.0.1:8080" || len(d.CORSOrigins) != 0 || d.APIKey != "" ||
		d.DefaultSampling != sample.DefaultParams() {
		t.Errorf("defaults %+v", d)
	}
	for name, cfg := range map[string]serve.Config{
		"address":         {Addr: "nohost"},
		"negative body":   {MaxBodyBytes: -1},
		"default > limit": {DefaultMaxTokens: 100, MaxTokensLimit: 10},
		"sampling":        {DefaultSampling: sample.Params{Temperature: -1, TopP: 1, RepeatPenalty: 1}},
		"origin":          {AllowedOrigins: []string{"example.com"}},
		"cors origin":     {CORSOrigins: []string{"https://x.example/path"}},
		"timeout":         {WriteTimeout: -time.Second},
	} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// ReadTimeout bounds reading a request, not how long its answer streams.
func TestLongStreamOutlivesReadTimeout(t *testing.T) {
	ts := start(t, serve.Config{ReadTimeout: 200 * time.Millisecond, ReadHeaderTimeout: 200 * time.Millisecond},
		&servetest.Options{StepDelay: 10 * time.Millisecond})
	began := time.Now()
	resp := ts.do("POST", "/v1/completions", map[string]any{"stream": true, "prompt": "long", "max_tokens": 60}, nil)
	events := readSSE(t, bufio.NewScanner(resp.Body), 0)
	resp.Body.Close()
	if time.Since(began) < 500*time.Millisecond {
		t.Fatalf("the stream took %v, not longer than the read timeout", time.Since(began))
	}
	if len(events) != 62 || events[61] != "[DONE]" {
		t.Errorf("%d events, last %q", len(events), events[len(events)-1])
	}
	resp = ts.do("POST", "/v1/completions", map[string]any{"prompt": "long", "max_tokens": 60}, nil)
	var out struct {
		Choices []struct{ Text string } `json:"choices"`
	}
	decode(t, resp, &out)
	if len(out.Choices) != 1 || out.Choices[0].Text != wantText(60) {
		t.Errorf("non-streamed answer %+v", out)
	}
}

// renamingBackend breaks the engine.Job promise of keeping the caller's id.
type renamingBackend struct{ *servetest.Backend }

func (r renamingBackend) Submit(j engine.Job, emit func(engine.Event)) (string, error) {
	j.ID = ""
	return r.Backend.Submit(j, emit)
}

func TestEngineMustKeepJobIDs(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{StepDelay: 5 * time.Millisecond})
	ts.srv.SetBackend(renamingBackend{ts.backend})
	expectError(t, ts.do("POST", "/v1/completions", map[string]any{"prompt": "renamed", "max_tokens": 1000}, nil),
		http.StatusInternalServerError, "internal_error", "")
	job := jobWithPrompt(t, ts.backend, "renamed")
	waitFor(t, "the renamed job to be cancelled", 5*time.Second, func() bool {
		st, _ := ts.backend.Status(job.ID)
		return st.State == engine.Cancelled
	})
}
