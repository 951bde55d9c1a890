package serve_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

func TestWebsocketInterleavedRequests(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{StepDelay: time.Millisecond})
	c := ts.dialWS(nil, "")
	c.send(map[string]any{"type": "generate", "id": "r1", "prompt": "In the beginning", "max_tokens": 20,
		"temperature": 0, "seed": 7, "stop": []string{"never"}})
	c.send(map[string]any{"type": "chat", "id": "r2", "max_tokens": 15, "temperature": 0.5, "top_k": 5,
		"top_p": 0.9, "min_p": 0.1, "repeat_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": -0.5,
		"messages": []map[string]string{{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}}})
	res, order := c.collect("r1", "r2")

	for id, n := range map[string]int{"r1": 20, "r2": 15} {
		r := res[id]
		if r.end.Type != "done" || r.end.FinishReason != "length" {
			t.Errorf("%s ended with %+v, want done/length", id, r.end)
		}
		if r.text != wantText(n) || r.tokens != n {
			t.Errorf("%s text %q in %d messages, want %q in %d", id, r.text, r.tokens, wantText(n), n)
		}
		if r.end.Usage == nil || r.end.Usage.CompletionTokens != n || r.end.Usage.PromptTokens == 0 {
			t.Errorf("%s usage %+v", id, r.end.Usage)
		}
		for _, k := range []string{"queued_ms", "prefill_ms", "decode_ms", "ttft_ms", "predicted_per_second"} {
			if _, ok := r.end.Timings[k]; !ok {
				t.Errorf("%s timings lack %s: %v", id, k, r.end.Timings)
			}
		}
	}
	// Both ran at once: r2's first message came before r1 ended.
	firstR2, lastR1 := -1, -1
	for i, id := range order {
		if id == "r2" && firstR2 < 0 {
			firstR2 = i
		}
		if id == "r1" {
			lastR1 = i
		}
	}
	if firstR2 > lastR1 {
		t.Errorf("requests did not interleave: order %v", order)
	}

	// The engine got the settings and the rendered chat.
	gen := jobWithPrompt(t, ts.backend, "In the beginning")
	if gen.MaxTokens != 20 || gen.Sampling.Temperature != 0 || gen.Sampling.Seed != 7 || len(gen.Stop) != 1 {
		t.Errorf("generate job %+v", gen)
	}
	chat := jobWithPrompt(t, ts.backend, "hello there")
	want := "<|system|>\nbe brief\n<|user|>\nhello there\n<|assistant|>\n"
	p := chat.Sampling
	if chat.Prompt != want || chat.MaxTokens != 15 || p.Temperature != 0.5 || p.TopK != 5 || p.TopP != 0.9 ||
		p.MinP != 0.1 || p.RepeatPenalty != 1.1 || p.PresencePenalty != 0.5 || p.FrequencyPenalty != -0.5 {
		t.Errorf("chat job %+v, prompt %q", chat, chat.Prompt)
	}

	// An id is reusable once its request ended.
	c.send(map[string]any{"type": "generate", "id": "r1", "prompt": "again", "max_tokens": 3})
	res, _ = c.collect("r1")
	if res["r1"].text != wantText(3) {
		t.Errorf("reused id: %q", res["r1"].text)
	}
}

func TestWebsocketCancel(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{StepDelay: 5 * time.Millisecond})
	c := ts.dialWS(nil, "")
	c.send(map[string]any{"type": "generate", "id": "long", "prompt": "p", "max_tokens": 4000})
	if m := c.read(); m.Type != "token" || m.ID != "long" {
		t.Fatalf("first message %+v", m)
	}
	c.send(map[string]any{"type": "cancel", "id": "long"})
	res, _ := c.collect("long")
	r := res["long"]
	if r.end.Type != "done" || r.end.FinishReason != "cancelled" {
		t.Fatalf("cancelled request ended with %+v", r.end)
	}
	if n := r.end.Usage.CompletionTokens; n >= 4000 || n < 1 {
		t.Errorf("completion tokens %d after cancel", n)
	}
	job := jobWithPrompt(t, ts.backend, "p")
	if st, ok := ts.backend.Status(job.ID); !ok || st.State != engine.Cancelled {
		t.Errorf("engine status %+v", st)
	}
	// Nothing in flight by that id any more.
	c.send(map[string]any{"type": "cancel", "id": "long"})
	c.expectError("long", "not_found")
	// A queued request can be cancelled too.
	ts.backend.SetPaused(true)
	c.send(map[string]any{"type": "generate", "id": "queued", "prompt": "q", "max_tokens": 5})
	waitFor(t, "the job to be queued", 5*time.Second, func() bool { return ts.backend.Metrics().QueueDepth == 1 })
	c.send(map[string]any{"type": "cancel", "id": "queued"})
	res, _ = c.collect("queued")
	if res["queued"].end.FinishReason != "cancelled" || res["queued"].tokens != 0 {
		t.Errorf("queued request: %+v after %d tokens", res["queued"].end, res["queued"].tokens)
	}
}

func TestWebsocketBadInputKeepsConnectionUsable(t *testing.T) {
	ts := start(t, serve.Config{MaxPromptBytes: 64}, &servetest.Options{})
	c := ts.dialWS(nil, "")
	cases := []struct {
		msg       string
		id, code  string
		wantParam string
	}{
		{`not json`, "", "invalid_json", ""},
		{`{"type":"generate","id":"a","prompt":"x"} trailing`, "a", "invalid_json", ""},
		{`["generate"]`, "", "invalid_json", ""},
		{`{"id":"a","prompt":"x"}`, "a", "unknown_type", ""},
		{`{"type":"bogus","id":"b"}`, "b", "unknown_type", ""},
		{`{"type":"generate","prompt":"x"}`, "", "invalid_parameter", "id"},
		{`{"type":"generate","id":"c","prompt":"x","temperature":-1}`, "c", "invalid_parameter", "temperature"},
		{`{"type":"generate","id":"c","prompt":"x","temperature":"hot"}`, "c", "invalid_parameter", "temperature"},
		{`{"type":"generate","id":"c","prompt":"x","temperature":NaN}`, "", "invalid_json", ""},
		{`{"type":"generate","id":"c","prompt":"x","temperature":1e39}`, "c", "invalid_parameter", "temperature"},
		{`{"type":"generate","id":"d","prompt":"x","top_p":0}`, "d", "invalid_parameter", "top_p"},
		{`{"type":"generate","id":"d","prompt":"x","top_p":1.5}`, "d", "invalid_parameter", "top_p"},
		{`{"type":"generate","id":"e","prompt":"x","max_tokens":0}`, "e", "invalid_parameter", "max_tokens"},
		{`{"type":"generate","id":"e","prompt":"x","max_tokens":100000}`, "e", "invalid_parameter", "max_tokens"},
		{`{"type":"generate","id":"e","prompt":"x","max_tokens":1.5}`, "e", "invalid_parameter", "max_tokens"},
		{`{"type":"generate","id":"f"}`, "f", "invalid_parameter", "prompt"},
		{`{"type":"chat","id":"g","messages":[]}`, "g", "invalid_parameter", "messages"},
		{`{"type":"chat","id":"g","messages":[{"role":"tool","content":"x"}]}`, "g", "invalid_parameter", "messages[0].tool_call_id"},
		{`{"type":"chat","id":"g","messages":[{"role":"wizard","content":"x"}]}`, "g", "invalid_parameter", "messages[0].role"},
		{`{"type":"generate","id":"h","prompt":"` + strings.Repeat("x", 65) + `"}`, "h", "prompt_too_large", "prompt"},
		{`{"type":"chat","id":"h","messages":[{"role":"user","content":"` + strings.Repeat("x", 50) + `"}]}`, "h", "prompt_too_large", "prompt"},
		{`{"type":"cancel","id":"nope"}`, "nope", "not_found", ""},
	}
	for _, tc := range cases {
		c.send(tc.msg)
		m := c.expectError(tc.id, tc.code)
		if tc.wantParam != "" && m.Error.Param != tc.wantParam {
			t.Errorf("%s: param %q, want %q", tc.msg, m.Error.Param, tc.wantParam)
		}
	}
	// A duplicate id while the first is in flight.
	ts.backend.SetPaused(true)
	c.send(map[string]any{"type": "generate", "id": "dup", "prompt": "x", "max_tokens": 2})
	c.send(map[string]any{"type": "generate", "id": "dup", "prompt": "y", "max_tokens": 2})
	c.expectError("dup", "duplicate_id")
	ts.backend.SetPaused(false)
	res, _ := c.collect("dup")
	if res["dup"].text != wantText(2) {
		t.Errorf("the first dup request: %q", res["dup"].text)
	}
	// Still usable after all that.
	c.send(map[string]any{"type": "generate", "id": "ok", "prompt": "x", "max_tokens": 4})
	res, _ = c.collect("ok")
	if res["ok"].end.Type != "done" || res["ok"].text != wantText(4) {
		t.Errorf("after bad input: %+v %q", res["ok"].end, res["ok"].text)
	}
}

func TestWebsocketInFlightLimit(t *testing.T) {
	ts := start(t, serve.Config{WSMaxInFlight: 2}, &servetest.Options{})
	ts.backend.SetPaused(true)
	c := ts.dialWS(nil, "")
	for _, id := range []string{"a", "b"} {
		c.send(map[string]any{"type": "generate", "id": id, "prompt": "x", "max_tokens": 2})
	}
	c.send(map[string]any{"type": "generate", "id": "c", "prompt": "x", "max_tokens": 2})
	c.expectError("c", "too_many_in_flight")
	ts.backend.SetPaused(false)
	c.collect("a", "b")
}

func TestWebsocketGenerationFailure(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{FailOn: "FAIL"})
	c := ts.dialWS(nil, "")
	c.send(map[string]any{"type": "generate", "id": "x", "prompt": "please FAIL", "max_tokens": 10})
	res, _ := c.collect("x")
	if e := res["x"].end; e.Type != "error" || e.Error.Code != "generation_failed" || !strings.Contains(e.Error.Message, "FAIL") {
		t.Errorf("failed generation ended with %+v %+v", e, e.Error)
	}
}

func TestWebsocketReadLimit(t *testing.T) {
	ts := start(t, serve.Config{WSReadLimit: 1024}, &servetest.Options{})
	c := ts.dialWS(nil, "")
	// Under the limit is fine.
	c.send(map[string]any{"type": "generate", "id": "small", "prompt": strings.Repeat("x", 900), "max_tokens": 1})
	c.collect("small")
	// The server may refuse the message before it is all sent: a failed
	// write is no failure here.
	_ = c.conn.WriteJSON(map[string]any{"type": "generate", "id": "big", "prompt": strings.Repeat("x", 4096)})
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := c.conn.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Fatalf("after an oversized message: %v, want close 1009", err)
		}
		break
	}
	waitFor(t, "the connection to be dropped", 5*time.Second, func() bool {
		return !strings.Contains(scrape(t, ts), "wgllm_websocket_connections 1")
	})
}

func TestWebsocketOrigin(t *testing.T) {
	ts := start(t, serve.Config{AllowedOrigins: []string{"https://chat.example.org"}}, &servetest.Options{})
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},                               // not a browser
		{"http://" + ts.addr, true},              // the page's own origin
		{"https://chat.example.org", true},       // configured
		{"https://CHAT.example.org:443", true},   // same, spelled otherwise
		{"http://evil.example", false},           // elsewhere
		{"https://chat.example.org:8443", false}, // another port is another origin
		{"null", false},
	} {
		hdr := http.Header{}
		if tc.origin != "" {
			hdr.Set("Origin", tc.origin)
		}
		c, resp, err := ts.tryDialWS(hdr, "")
		if tc.ok {
			if err != nil {
				t.Errorf("origin %q refused: %v", tc.origin, err)
				continue
			}
			if m := c.read(); m.Type != "hello" {
				t.Errorf("origin %q: first message %+v", tc.origin, m)
			}
			c.conn.Close()
			continue
		}
		if err == nil {
			t.Errorf("origin %q accepted", tc.origin)
			c.conn.Close()
			continue
		}
		if resp == nil {
			t.Errorf("origin %q: %v without a response", tc.origin, err)
			continue
		}
		expectError(t, resp, http.StatusForbidden, "origin_not_allowed", "")
	}
}

func TestWebsocketAPIKey(t *testing.T) {
	const key = "sk-test-123"
	ts := start(t, serve.Config{APIKey: key}, &servetest.Options{})
	refused := []struct {
		name  string
		hdr   http.Header
		query string
		proto []string
	}{
		{"no key", nil, "", nil},
		{"wrong header", http.Header{"Authorization": {"Bearer sk-wrong"}}, "", nil},
		{"wrong query", nil, "api_key=sk-wrong", nil},
		{"wrong subprotocol", nil, "", []string{"wgllm", "bearer.sk-wrong"}},
		{"key as a prefix", nil, "api_key=sk-test-12", nil},
	}
	for _, tc := range refused {
		_, resp, err := ts.tryDialWS(tc.hdr, tc.query, tc.proto...)
		if err == nil || resp == nil {
			t.Errorf("%s: dial err %v, want a 401 refusal", tc.name, err)
			continue
		}
		expectError(t, resp, http.StatusUnauthorized, "invalid_api_key", "")
	}
	c := ts.dialWS(http.Header{"Authorization": {"Bearer " + key}}, "")
	c.send(map[string]any{"type": "generate", "id": "a", "prompt": "x", "max_tokens": 2})
	if res, _ := c.collect("a"); res["a"].text != wantText(2) {
		t.Errorf("with header key: %q", res["a"].text)
	}
	ts.dialWS(nil, "api_key="+key)
	c = ts.dialWS(nil, "", "wgllm", "bearer."+key)
	if got := c.resp.Header.Get("Sec-WebSocket-Protocol"); got != "wgllm" {
		t.Errorf("selected subprotocol %q, want wgllm (and never the key)", got)
	}
	if strings.Contains(ts.logs.String(), key) {
		t.Error("the API key appears in the logs")
	}
}

// A client that never reads must not hold up the engine or anyone else:
// its queue overflows, its job is cancelled and it is disconnected.
func TestWebsocketSlowClientDoesNotStallOthers(t *testing.T) {
	big := strings.Repeat("x", 64<<10)
	// The write deadline is far longer than the fast client may take: an
	// emit that waited for the slow socket would stall the engine until it.
	ts := start(t, serve.Config{WSSendQueue: 8, WriteTimeout: 30 * time.Second}, &servetest.Options{
		StepDelay: time.Millisecond,
		Piece: func(j engine.Job, i int) string {
			if strings.Contains(j.Prompt, "slow") {
				return big
			}
			return " w" + itoa(i)
		},
	})
	// A fixed small receive buffer (no autotuning) bounds what the network
	// holds for the slow client: about 4 MiB in all, 70 of its pieces. The
	// engine advances both jobs in lock step, so the slow socket is full
	// long before the fast client's 600 pieces are out.
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			err = conn.(*net.TCPConn).SetReadBuffer(32 << 10)
		}
		return conn, err
	}}
	slowConn, _, err := d.Dial("ws://"+ts.addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slowConn.Close()
	slow := &wsClient{t: t, conn: slowConn}
	if m := slow.read(); m.Type != "hello" {
		t.Fatalf("first message %+v", m)
	}
	fast := ts.dialWS(nil, "")
	slow.send(map[string]any{"type": "generate", "id": "s", "prompt": "slow", "max_tokens": 4000})
	began := time.Now()
	fast.send(map[string]any{"type": "generate", "id": "f", "prompt": "fast", "max_tokens": 600})
	res, _ := fast.collect("f")
	if res["f"].end.Type != "done" || res["f"].text != wantText(600) {
		t.Fatalf("fast client: %+v %q", res["f"].end, res["f"].text)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("fast client took %v", took)
	}

	slowJob := jobWithPrompt(t, ts.backend, "slow")
	waitFor(t, "the slow client's job to be cancelled", 10*time.Second, func() bool {
		st, _ := ts.backend.Status(slowJob.ID)
		return st.State == engine.Cancelled
	})
	st, _ := ts.backend.Status(slowJob.ID)
	if st.Usage.CompletionTokens >= 600 {
		t.Errorf("slow job ran to the end: %+v", st.Usage)
	}
	// The slow client finds its connection closed after what was queued.
	_ = slow.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := slow.conn.ReadMessage()
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("slow client's connection still open")
			}
			break
		}
	}
	// The fast client is unaffected.
	fast.send(map[string]any{"type": "generate", "id": "g", "prompt": "fast", "max_tokens": 3})
	if res, _ := fast.collect("g"); res["g"].text != wantText(3) {
		t.Errorf("fast client afterwards: %q", res["g"].text)
	}
}

// Closing the connection cancels its requests.
func TestWebsocketCloseCancelsJobs(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{StepDelay: 5 * time.Millisecond})
	c := ts.dialWS(nil, "")
	c.send(map[string]any{"type": "generate", "id": "a", "prompt": "orphan", "max_tokens": 4000})
	if m := c.read(); m.Type != "token" {
		t.Fatalf("first message %+v", m)
	}
	c.conn.Close()
	job := jobWithPrompt(t, ts.backend, "orphan")
	waitFor(t, "the job to be cancelled", 10*time.Second, func() bool {
		st, _ := ts.backend.Status(job.ID)
		return st.State == engine.Cancelled
	})
}

// The server pings; a client that answers (gorilla answers pings while
// reading) stays, one that goes silent is dropped after two intervals.
func TestWebsocketPingPong(t *testing.T) {
	// Intervals long enough that scheduling hiccups of a loaded machine
	// (the read deadline is two intervals) do not drop the live client.
	ts := start(t, serve.Config{WSPingInterval: 250 * time.Millisecond}, &servetest.Options{StepDelay: 250 * time.Millisecond})
	live := ts.dialWS(nil, "")
	silent := ts.dialWS(nil, "")
	pings := 0
	live.conn.SetPingHandler(func(data string) error {
		pings++
		return live.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	// 7 tokens 250ms apart: the live client sends nothing for three times
	// the read deadline, and only its pongs keep it.
	live.send(map[string]any{"type": "generate", "id": "x", "prompt": "x", "max_tokens": 7})
	if res, _ := live.collect("x"); res["x"].end.Type != "done" || res["x"].text != wantText(7) {
		t.Errorf("live client: %+v %q", res["x"].end, res["x"].text)
	}
	if pings < 4 {
		t.Errorf("%d pings in 1.5s at a 250ms interval", pings)
	}
	// The silent client's connection is gone.
	_ = silent.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := silent.conn.ReadMessage()
	var ne interface{ Timeout() bool }
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("silent client: %v, want its connection closed", err)
	}
}
