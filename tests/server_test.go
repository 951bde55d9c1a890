package tests

import (
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
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/tokenizer"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/web"
)

// liveServer is the real server on loopback over the real engine and model.
type liveServer struct {
	base string
	eng  *engine.Engine
}

// startServer serves modelFile (under shared/models, or a repository path)
// with seqs sequence slots. The model loads after the listener is up, so
// /health is first 503.
func startServer(t *testing.T, modelFile string, seqs int) *liveServer {
	t.Helper()
	return startServerWith(t, modelFile, seqs, serve.Config{Static: web.FS()}, nil)
}

// startServerWith is startServer with a server configuration and a hook
// that may change the engine's options.
func startServerWith(t testing.TB, modelFile string, seqs int, cfg serve.Config, tune func(*engine.Options)) *liveServer {
	t.Helper()
	ctx := gputest.Ctx(t)
	path := modelFile
	if !strings.Contains(modelFile, "/") {
		path = sharedfiles.File(t, "models/"+modelFile)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	srv := serve.New(cfg, zerolog.Nop())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	ls := &liveServer{base: "http://" + ln.Addr().String()}
	if code, _ := ls.get(t, "/health"); code != http.StatusServiceUnavailable {
		t.Errorf("/health before the model is set: %d, want 503", code)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(ctx, f, model.Options{Seqs: seqs, KVType: ops.F16, Batch: 64})
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := chat.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	eopt := engine.Options{MaxBatch: seqs, Name: "test-model", ChatStop: []string{"<|im_end|>", "<|im_start|>"},
		RenderChat: engine.TemplateRenderer(tmpl)}
	if tune != nil {
		tune(&eopt)
	}
	ls.eng, err = engine.NewEngine(m, tok, eopt)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetBackend(ls.eng)
	t.Cleanup(func() {
		cancel()
		<-served
		ls.eng.Close()
		m.Close()
	})
	return ls
}

func (ls *liveServer) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(ls.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (ls *liveServer) dial(t *testing.T) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ls.base, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var hello map[string]any
	if err := c.ReadJSON(&hello); err != nil || hello["type"] != "hello" {
		t.Fatalf("hello: %v %v", hello, err)
	}
	return c
}

type wsMsg struct {
	Type         string `json:"type"`
	ID           string `json:"id"`
	Text         string `json:"text"`
	FinishReason string `json:"finish_reason"`
	Error        *struct {
		Code, Message string
	} `json:"error"`
	Usage struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

// collect reads messages until every id in want has its done or error.
func collect(t *testing.T, c *websocket.Conn, want ...string) (map[string]string, map[string]wsMsg) {
	t.Helper()
	text, last := map[string]string{}, map[string]wsMsg{}
	pending := map[string]bool{}
	for _, id := range want {
		pending[id] = true
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Minute))
	for len(pending) > 0 {
		var m wsMsg
		if err := c.ReadJSON(&m); err != nil {
			t.Fatalf("reading: %v (still waiting for %v)", err, pending)
		}
		switch m.Type {
		case "token":
			text[m.ID] += m.Text
		case "done", "error":
			last[m.ID] = m
			delete(pending, m.ID)
		}
	}
	return text, last
}

func TestServerWebsocketInterleavedCancelMalformed(t *testing.T) {
	ls := startServer(t, "stories260K.gguf", 4)
	if code, body := ls.get(t, "/health"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("/health after load: %d %s", code, body)
	}
	c := ls.dial(t)
	// Alone first, for the reference texts.
	c.WriteJSON(map[string]any{"type": "generate", "id": "a0", "prompt": "Tom had a little", "max_tokens": 30, "temperature": 0})
	alone, _ := collect(t, c, "a0")
	c.WriteJSON(map[string]any{"type": "generate", "id": "b0", "prompt": "Once upon a time", "max_tokens": 30, "temperature": 0})
	aloneB, _ := collect(t, c, "b0")
	// Two interleaved requests on one connection get the same texts.
	c.WriteJSON(map[string]any{"type": "generate", "id": "a", "prompt": "Tom had a little", "max_tokens": 30, "temperature": 0})
	c.WriteJSON(map[string]any{"type": "generate", "id": "b", "prompt": "Once upon a time", "max_tokens": 30, "temperature": 0})
	got, last := collect(t, c, "a", "b")
	if got["a"] != alone["a0"] || got["b"] != aloneB["b0"] {
		t.Errorf("interleaved texts differ from alone:\n%q vs %q\n%q vs %q", got["a"], alone["a0"], got["b"], aloneB["b0"])
	}
	if last["a"].FinishReason != "length" || last["a"].Usage.CompletionTokens != 30 {
		t.Errorf("done a: %+v", last["a"])
	}
	// Malformed input gets an error and the connection stays usable.
	c.WriteMessage(websocket.TextMessage, []byte("{not json"))
	var m wsMsg
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := c.ReadJSON(&m); err != nil || m.Type != "error" {
		t.Fatalf("malformed message: %+v %v", m, err)
	}
	c.WriteJSON(map[string]any{"type": "bogus", "id": "z"})
	if err := c.ReadJSON(&m); err != nil || m.Type != "error" {
		t.Fatalf("unknown type: %+v %v", m, err)
	}
	// Cancel mid-stream.
	c.WriteJSON(map[string]any{"type": "generate", "id": "c", "prompt": "Once upon a time", "max_tokens": 200, "temperature": 0})
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if err := c.ReadJSON(&m); err != nil || m.Type != "token" {
		t.Fatalf("first token: %+v %v", m, err)
	}
	c.WriteJSON(map[string]any{"type": "cancel", "id": "c"})
	_, last = collect(t, c, "c")
	if last["c"].FinishReason != "cancelled" {
		t.Errorf("cancelled request ended %+v", last["c"])
	}
	// Chat through the model's template works on the same connection.
	c.WriteJSON(map[string]any{"type": "chat", "id": "d", "messages": []map[string]string{{"role": "user", "content": "Tell me a story"}}, "max_tokens": 8, "temperature": 0})
	got, last = collect(t, c, "d")
	if last["d"].Type != "done" || got["d"] == "" {
		t.Errorf("chat: %+v %q", last["d"], got["d"])
	}
}

// TestServerConcurrentClientsGetTheirAloneText: 16 websocket clients at
// once on the bundled kjv model; greedy texts equal what each gets alone.
func TestServerConcurrentClientsGetTheirAloneText(t *testing.T) {
	ls := startServer(t, "../models/kjv-30m-q4_k_m.gguf", 16)
	prompts := []string{"In the beginning God created", "Verily, verily, I say unto you,", "And the LORD said unto Moses,",
		"Blessed are the", "The LORD is my shepherd;", "And it came to pass", "For God so loved", "Then said Jesus",
		"And Abraham", "Let not your heart", "In my Father's house", "And he said,", "Hear, O Israel:", "Thou shalt",
		"Praise ye the LORD.", "And the angel"}
	req := func(c *websocket.Conn, id, p string) {
		c.WriteJSON(map[string]any{"type": "generate", "id": id, "prompt": p, "max_tokens": 24, "temperature": 0})
	}
	c := ls.dial(t)
	alone := make([]string, len(prompts))
	for i, p := range prompts {
		req(c, "alone", p)
		got, _ := collect(t, c, "alone")
		alone[i] = got["alone"]
	}
	var wg sync.WaitGroup
	got := make([]string, len(prompts))
	for i, p := range prompts {
		wg.Add(1)
		go func(i int, p string) {
			defer wg.Done()
			cc, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ls.base, "http")+"/ws", nil)
			if err != nil {
				t.Error(err)
				return
			}
			defer cc.Close()
			var hello wsMsg
			cc.ReadJSON(&hello)
			req(cc, "r", p)
			text, _ := collect(t, cc, "r")
			got[i] = text["r"]
		}(i, p)
	}
	wg.Wait()
	for i := range prompts {
		if got[i] != alone[i] {
			t.Errorf("%q: with 16 clients\n%q\nalone\n%q", prompts[i], got[i], alone[i])
		}
	}
}

func TestServerOpenAIClientStatusHealthMetrics(t *testing.T) {
	ls := startServer(t, "stories260K.gguf", 4)
	client := openai.NewClient(option.WithBaseURL(ls.base+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ctx := context.Background()
	resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:       "test-model",
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story")},
		MaxTokens:   openai.Int(12),
		Temperature: openai.Float(0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 1 || resp.Choices[0].Message.Content == "" || resp.Usage.CompletionTokens == 0 {
		t.Fatalf("chat completion: %+v", resp)
	}
	stream := client.Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model:       "test-model",
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("Tom had a little")},
		MaxTokens:   openai.Int(40),
		Temperature: openai.Float(0),
	})
	var text strings.Builder
	chunks := 0
	for stream.Next() {
		for _, ch := range stream.Current().Choices {
			text.WriteString(ch.Text)
		}
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	want := " boy named Tim. He loved to play with his toys. One day, he saw a big box. He wanted to play with it. He wanted to"
	if text.String() != want || chunks < 10 {
		t.Errorf("streamed completion (%d chunks):\n%q\nwant\n%q", chunks, text.String(), want)
	}
	// Request status: start, poll, 404 for an unknown id, cancel.
	r, err := http.Post(ls.base+"/v1/requests", "application/json", strings.NewReader(`{"prompt":"Once upon a time","max_tokens":100,"temperature":0}`))
	if err != nil {
		t.Fatal(err)
	}
	var started struct{ ID, Status string }
	json.NewDecoder(r.Body).Decode(&started)
	r.Body.Close()
	if r.StatusCode/100 != 2 || started.ID == "" {
		t.Fatalf("POST /v1/requests: %d %+v", r.StatusCode, started)
	}
	var st engine.Status
	for i := 0; i < 200; i++ {
		code, body := ls.get(t, "/v1/requests/"+started.ID)
		if code != 200 {
			t.Fatalf("status: %d %s", code, body)
		}
		json.Unmarshal([]byte(body), &st)
		if st.Text != "" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.State != engine.Running && st.State != engine.Done {
		t.Errorf("status while generating: %+v", st)
	}
	del, _ := http.NewRequest(http.MethodDelete, ls.base+"/v1/requests/"+started.ID, nil)
	dr, err := http.DefaultClient.Do(del)
	if err != nil {
		t.Fatal(err)
	}
	dr.Body.Close()
	if code, body := ls.get(t, "/v1/requests/no-such-id"); code != 404 || !strings.Contains(body, "error") {
		t.Errorf("unknown id: %d %s", code, body)
	}
	code, metrics := ls.get(t, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, name := range []string{"queue", "active", "tokens", "first_token", "kv"} {
		if !strings.Contains(strings.ToLower(metrics), name) {
			t.Errorf("/metrics lacks %q", name)
		}
	}
	if code, page := ls.get(t, "/"); code != 200 || !strings.Contains(page, "<html") {
		t.Errorf("chat page: %d", code)
	}
}
