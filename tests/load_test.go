package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/serve"
)

// The load test: many clients on loopback, over the websocket and HTTP,
// streaming and not, against the real engine on the bundled kjv model.
// Every request must finish or get a clean 429; afterwards nothing may be
// left behind (goroutines, KV blocks, sequences, heap).

const kjvModel = "../models/kjv-30m-q4_k_m.gguf"

var loadPrompts = []string{"In the beginning God created", "Verily, verily, I say unto you,", "And the LORD said unto Moses,",
	"Blessed are the", "The LORD is my shepherd;", "And it came to pass", "For God so loved", "Then said Jesus"}

// loadStats is what the clients saw.
type loadStats struct {
	mu       sync.Mutex
	ok, busy int
	tokens   int
	ttft     []time.Duration // streaming requests: from sending to the first text
	itl      []time.Duration // streaming requests: between consecutive pieces of text
	failures []string
}

func (s *loadStats) add(f func(*loadStats)) {
	s.mu.Lock()
	f(s)
	s.mu.Unlock()
}

func (s *loadStats) fail(format string, args ...any) {
	s.add(func(s *loadStats) {
		if len(s.failures) < 20 {
			s.failures = append(s.failures, fmt.Sprintf(format, args...))
		}
	})
}

// Client kinds.
const (
	kindWebsocket = iota
	kindChatStream
	kindCompletion
	kindCompletionStream
	kinds
)

// loadSpec is what a load's clients send.
type loadSpec struct {
	maxTokens int
	kind      func(client int) int // one of the kinds
	greedy    bool                 // temperature 0, else the server's default sampling
}

// mixedKinds gives client i the kind i mod 4: websocket, HTTP chat
// streamed, HTTP completion, HTTP completion streamed.
func mixedKinds(i int) int { return i % kinds }

// loadClient is one client's request loop until the deadline.
func loadClient(ls *liveServer, i int, until time.Time, spec loadSpec, st *loadStats) {
	httpc := &http.Client{Timeout: 5 * time.Minute}
	defer httpc.CloseIdleConnections()
	kind := spec.kind(i)
	maxTokens := spec.maxTokens
	var ws *websocket.Conn
	if kind == kindWebsocket {
		var err error
		ws, _, err = websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ls.base, "http")+"/ws", nil)
		if err != nil {
			st.fail("client %d: dial: %v", i, err)
			return
		}
		defer ws.Close()
		var hello map[string]any
		if err := ws.ReadJSON(&hello); err != nil {
			st.fail("client %d: hello: %v", i, err)
			return
		}
	}
	for n := 0; time.Now().Before(until); n++ {
		prompt := loadPrompts[(i+n)%len(loadPrompts)]
		body := map[string]any{"max_tokens": maxTokens}
		if spec.greedy {
			body["temperature"] = 0
		}
		var busy bool
		switch kind {
		case kindWebsocket:
			body["prompt"], body["seed"] = prompt, n
			busy = wsRequest(ws, i, n, body, st)
		case kindChatStream:
			body["messages"] = []map[string]string{{"role": "user", "content": prompt}}
			busy = httpRequest(httpc, ls.base+"/v1/chat/completions", i, true, st, body)
		case kindCompletion:
			body["prompt"] = prompt
			busy = httpRequest(httpc, ls.base+"/v1/completions", i, false, st, body)
		case kindCompletionStream:
			body["prompt"] = prompt
			busy = httpRequest(httpc, ls.base+"/v1/completions", i, true, st, body)
		}
		if busy {
			time.Sleep(250 * time.Millisecond) // less than Retry-After: keep the pressure on
		}
	}
}

// pieceClock records the time to the first piece of a stream's text and
// the gaps between the next ones.
type pieceClock struct {
	last time.Time
	ttft time.Duration
	itl  []time.Duration
}

func (c *pieceClock) piece(sent time.Time) {
	now := time.Now()
	if c.last.IsZero() {
		c.ttft = now.Sub(sent)
	} else {
		c.itl = append(c.itl, now.Sub(c.last))
	}
	c.last = now
}

// record adds a finished stream's times.
func (c *pieceClock) record(st *loadStats) {
	if c.last.IsZero() {
		return
	}
	st.add(func(s *loadStats) { s.ttft = append(s.ttft, c.ttft); s.itl = append(s.itl, c.itl...) })
}

// wsRequest runs one generation (body: the generate message's fields) on ws;
// it reports a 429-equivalent.
func wsRequest(ws *websocket.Conn, i, n int, body map[string]any, st *loadStats) bool {
	id := fmt.Sprintf("c%d-%d", i, n)
	body["type"], body["id"] = "generate", id
	sent := time.Now()
	if err := ws.WriteJSON(body); err != nil {
		st.fail("client %d: ws write: %v", i, err)
		return false
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Minute))
	var clock pieceClock
	for {
		var m wsMsg
		if err := ws.ReadJSON(&m); err != nil {
			st.fail("client %d: ws read: %v", i, err)
			return false
		}
		if m.ID != id {
			st.fail("client %d: message for %q while waiting for %q", i, m.ID, id)
			return false
		}
		switch m.Type {
		case "token":
			if m.Text != "" {
				clock.piece(sent)
			}
		case "done":
			if m.FinishReason != "length" && m.FinishReason != "stop" {
				st.fail("client %d: ws done with %q", i, m.FinishReason)
				return false
			}
			clock.record(st)
			st.add(func(s *loadStats) { s.ok++; s.tokens += m.Usage.CompletionTokens })
			return false
		case "error":
			if m.Error != nil && m.Error.Code == "server_busy" {
				st.add(func(s *loadStats) { s.busy++ })
				return true
			}
			st.fail("client %d: ws error %+v", i, m.Error)
			return false
		}
	}
}

// httpRequest posts one OpenAI request; it reports a 429.
func httpRequest(c *http.Client, url string, i int, stream bool, st *loadStats, body map[string]any) bool {
	body["stream"] = stream
	if stream {
		body["stream_options"] = map[string]bool{"include_usage": true}
	}
	data, _ := json.Marshal(body)
	sent := time.Now()
	resp, err := c.Post(url, "application/json", bytes.NewReader(data))
	if err != nil {
		st.fail("client %d: %v", i, err)
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests {
		var e struct{ Error struct{ Code string } }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		if e.Error.Code != "server_busy" || resp.Header.Get("Retry-After") == "" {
			st.fail("client %d: unclean 429: %+v, Retry-After %q", i, e, resp.Header.Get("Retry-After"))
			return false
		}
		st.add(func(s *loadStats) { s.busy++ })
		return true
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		st.fail("client %d: %s: %d %s", i, url, resp.StatusCode, b)
		return false
	}
	type usage struct {
		CompletionTokens int `json:"completion_tokens"`
	}
	if !stream {
		var out struct {
			Choices []struct {
				FinishReason string `json:"finish_reason"`
			}
			Usage usage
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || len(out.Choices) != 1 || out.Choices[0].FinishReason == "" {
			st.fail("client %d: response %+v, %v", i, out, err)
			return false
		}
		st.add(func(s *loadStats) { s.ok++; s.tokens += out.Usage.CompletionTokens })
		return false
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	done, tokens, reason := false, 0, ""
	var clock pieceClock
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			break
		}
		var chunk struct {
			Choices []struct {
				Text         string  `json:"text"`
				FinishReason *string `json:"finish_reason"`
				Delta        struct {
					Content string `json:"content"`
				} `json:"delta"`
			}
			Usage *usage
			Error any
		}
		if err := json.Unmarshal([]byte(line), &chunk); err != nil || chunk.Error != nil {
			st.fail("client %d: chunk %q: %v", i, line, err)
			return false
		}
		for _, ch := range chunk.Choices {
			if ch.Text+ch.Delta.Content != "" {
				clock.piece(sent)
			}
			if ch.FinishReason != nil {
				reason = *ch.FinishReason
			}
		}
		if chunk.Usage != nil {
			tokens = chunk.Usage.CompletionTokens
		}
	}
	if !done || (reason != "length" && reason != "stop") {
		st.fail("client %d: stream ended without [DONE] or finish reason (%q): %v", i, reason, sc.Err())
		return false
	}
	clock.record(st)
	st.add(func(s *loadStats) { s.ok++; s.tokens += tokens })
	return false
}

// loadResult summarises a run.
type loadResult struct {
	requests, busy, tokens int
	elapsed                time.Duration
	ttftP50, ttftP99       time.Duration
	itlP50, itlP99         time.Duration // between pieces of one stream
}

// runLoad drives clients against ls for d (each finishes the request in
// hand) and checks that the server is left clean.
func runLoad(t testing.TB, ls *liveServer, clients int, d time.Duration, spec loadSpec) loadResult {
	t.Helper()
	http.DefaultClient.CloseIdleConnections()
	runtime.GC()
	baseGoroutines := runtime.NumGoroutine()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	st := &loadStats{}
	start := time.Now()
	until := start.Add(d)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loadClient(ls, i, until, spec, st)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	for _, f := range st.failures {
		t.Error(f)
	}
	if st.ok == 0 {
		t.Fatalf("no request completed (%d got 429)", st.busy)
	}
	// Nothing left behind.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		m := ls.eng.Metrics()
		if m.ActiveSequences == 0 && m.QueueDepth == 0 && m.KVBlocksUsed == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("engine not idle after the load: %+v", m)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for runtime.NumGoroutine() > baseGoroutines {
		if ctx.Err() != nil {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after the load, %d before:\n%s", runtime.NumGoroutine(), baseGoroutines, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	// Finished jobs' records are kept (engine.Options.KeepFinished) and
	// caches warm up, so some growth is expected; a leak per request is not.
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 64<<20 {
		t.Errorf("heap grew by %d MiB over the load", grown>>20)
	}
	return loadResult{requests: st.ok, busy: st.busy, tokens: st.tokens, elapsed: elapsed,
		ttftP50: percentile(st.ttft, 0.50), ttftP99: percentile(st.ttft, 0.99),
		itlP50: percentile(st.itl, 0.50), itlP99: percentile(st.itl, 0.99)}
}

// percentile sorts ds and returns its p-quantile (0 when empty).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(p*float64(len(ds))))]
}

// fastGPU turns per-dispatch validation off for a timing-sensitive test.
func fastGPU(t testing.TB) {
	ctx := gputest.Ctx(t)
	debug := ctx.Debug
	ctx.Debug = false
	t.Cleanup(func() { ctx.Debug = debug })
}

// TestServerLoad is the load test in CI's short form: 64 clients for a
// second, two tokens each, a small queue so that most get 429 (a software
// adapter serves a few requests a second).
func TestServerLoad(t *testing.T) {
	fastGPU(t)
	ls := startServerWith(t, kjvModel, 4, serve.Config{}, func(o *engine.Options) { o.QueueLimit = 4 })
	r := runLoad(t, ls, 64, time.Second, loadSpec{maxTokens: 2, kind: mixedKinds})
	t.Logf("%d requests done, %d got 429, %d tokens in %v; time to first token p50 %v p99 %v; inter-token p50 %v p99 %v",
		r.requests, r.busy, r.tokens, r.elapsed.Round(time.Millisecond), r.ttftP50, r.ttftP99, r.itlP50, r.itlP99)
}

// BenchmarkServerLoad is the full load test: 64 clients for 60 s, 32
// tokens a request, 16 sequences (WGLLM_LOAD_SECONDS and WGLLM_LOAD_SEQS
// change them). It runs once whatever b.N is. docs/PERFORMANCE.md has its
// numbers.
func BenchmarkServerLoad(b *testing.B) {
	secs, seqs := 60, 16
	if s := envInt("WGLLM_LOAD_SECONDS"); s > 0 {
		secs = s
	}
	if s := envInt("WGLLM_LOAD_SEQS"); s > 0 {
		seqs = s
	}
	fastGPU(b)
	ls := startServerWith(b, kjvModel, seqs, serve.Config{}, nil)
	b.ResetTimer()
	r := runLoad(b, ls, 64, time.Duration(secs)*time.Second, loadSpec{maxTokens: 32, kind: mixedKinds})
	b.StopTimer()
	b.ReportMetric(float64(r.requests)/r.elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(r.tokens)/r.elapsed.Seconds(), "tok/s")
	b.ReportMetric(float64(r.ttftP50.Milliseconds()), "ttft-p50-ms")
	b.ReportMetric(float64(r.ttftP99.Milliseconds()), "ttft-p99-ms")
	b.ReportMetric(float64(r.busy), "429s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkServerConcurrent is the throughput the server gives N clients
// that each stream one greedy request after another: for the websocket and
// for streamed HTTP chat, and each N of WGLLM_LOAD_CLIENTS (default
// "1,4,16,64"), it reports aggregate completion tokens/s, time to first
// token and inter-token latency (between streamed pieces) at p50 and p99.
// The engine has N sequence slots; WGLLM_LOAD_MODEL (a path) replaces the
// bundled model, WGLLM_LOAD_SECONDS (default 10) and WGLLM_LOAD_TOKENS
// (default 128) size each run. It runs once whatever b.N is; compare
// `wgllm bench --parallel` at the same N.
func BenchmarkServerConcurrent(b *testing.B) {
	secs, tokens := 10, 128
	if s := envInt("WGLLM_LOAD_SECONDS"); s > 0 {
		secs = s
	}
	if s := envInt("WGLLM_LOAD_TOKENS"); s > 0 {
		tokens = s
	}
	modelFile := kjvModel
	if p := os.Getenv("WGLLM_LOAD_MODEL"); p != "" {
		modelFile = p
	}
	counts := []int{1, 4, 16, 64}
	if s := os.Getenv("WGLLM_LOAD_CLIENTS"); s != "" {
		counts = counts[:0]
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("WGLLM_LOAD_CLIENTS=%q: want comma-separated counts ≥ 1", s)
			}
			counts = append(counts, n)
		}
	}
	fastGPU(b)
	for _, proto := range []struct {
		name string
		kind int
	}{{"ws", kindWebsocket}, {"http", kindChatStream}} {
		for _, n := range counts {
			b.Run(fmt.Sprintf("%s/clients=%d", proto.name, n), func(b *testing.B) {
				ls := startServerWith(b, modelFile, n, serve.Config{}, func(o *engine.Options) { o.QueueLimit = n })
				spec := loadSpec{maxTokens: tokens, greedy: true, kind: func(int) int { return proto.kind }}
				b.ResetTimer()
				r := runLoad(b, ls, n, time.Duration(secs)*time.Second, spec)
				b.StopTimer()
				b.ReportMetric(float64(r.tokens)/r.elapsed.Seconds(), "tok/s")
				b.ReportMetric(float64(r.ttftP50.Microseconds())/1e3, "ttft-p50-ms")
				b.ReportMetric(float64(r.ttftP99.Microseconds())/1e3, "ttft-p99-ms")
				b.ReportMetric(float64(r.itlP50.Microseconds())/1e3, "itl-p50-ms")
				b.ReportMetric(float64(r.itlP99.Microseconds())/1e3, "itl-p99-ms")
				b.ReportMetric(float64(r.requests), "requests")
				b.ReportMetric(float64(r.busy), "429s")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

func envInt(name string) int {
	n, _ := strconv.Atoi(os.Getenv(name))
	return n
}

// TestServerVanishingClientsFreeKV: clients that go away mid-stream (an
// HTTP stream, a websocket) have their sequences cancelled and their KV
// freed, while another client's request finishes.
func TestServerVanishingClientsFreeKV(t *testing.T) {
	ls := startServerWith(t, kjvModel, 4, serve.Config{}, nil)
	const vanisherTokens = 400
	before := ls.eng.Metrics().TokensGenerated

	// An HTTP stream read up to its first text, then dropped.
	body := fmt.Sprintf(`{"prompt":"And it came to pass","max_tokens":%d,"stream":true}`, vanisherTokens)
	resp, err := http.Post(ls.base+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.Contains(l, `"text":"`) && !strings.Contains(l, `"text":""`) {
			break
		}
	}
	resp.Body.Close()
	// A websocket that gets its first token and closes.
	c := ls.dial(t)
	c.WriteJSON(map[string]any{"type": "generate", "id": "v", "prompt": "The LORD is my shepherd;", "max_tokens": vanisherTokens})
	var m wsMsg
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if err := c.ReadJSON(&m); err != nil || m.Type != "token" {
		t.Fatalf("first token: %+v %v", m, err)
	}
	c.Close()

	// Meanwhile another client gets its whole answer.
	r, err := http.Post(ls.base+"/v1/completions", "application/json",
		strings.NewReader(`{"prompt":"Blessed are the","max_tokens":6,"temperature":0}`))
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Choices []struct{ Text, FinishReason string }
		Usage   struct{ CompletionTokens int } `json:"usage"`
	}
	json.NewDecoder(r.Body).Decode(&out)
	r.Body.Close()
	if r.StatusCode != 200 || len(out.Choices) != 1 || out.Choices[0].Text == "" {
		t.Fatalf("bystander: %d %+v", r.StatusCode, out)
	}

	deadline := time.Now().Add(time.Minute)
	for {
		m := ls.eng.Metrics()
		if m.ActiveSequences == 0 && m.KVBlocksUsed == 0 && m.QueueDepth == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vanished clients still hold the engine: %+v", m)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Had they run to the end, the two would have made 2*400 tokens.
	if n := ls.eng.Metrics().TokensGenerated - before; n >= vanisherTokens {
		t.Errorf("%d tokens generated: the vanished clients' sequences were not cancelled", n)
	}
}
