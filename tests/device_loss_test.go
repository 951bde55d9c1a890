package tests

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/supervisor"
	"github.com/wgllm/wgllm/runtime/tokenizer"
	"github.com/wgllm/wgllm/serve"
)

// kjvLoader loads the bundled model on a device of its own (the test
// destroys it) for the supervisor; every load after the first waits for
// reload to be closed, so the test can see the server while it recovers.
func kjvLoader(t *testing.T, reload <-chan struct{}) supervisor.LoadFunc {
	f, err := gguf.Open(kjvModel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	loads := 0
	return func() (*supervisor.Instance, error) {
		mu.Lock()
		loads++
		n := loads
		mu.Unlock()
		if n > 1 {
			<-reload
		}
		ctx, err := gpu.New(gpu.OptionsFromEnv())
		if err != nil {
			return nil, err
		}
		m, err := model.Load(ctx, f, model.Options{Seqs: 2, KVType: ops.F16})
		if err != nil {
			ctx.Close()
			return nil, err
		}
		eng, err := engine.NewEngine(m, tok, engine.Options{Name: "kjv"})
		if err != nil {
			m.Close()
			ctx.Close()
			return nil, err
		}
		return &supervisor.Instance{Engine: eng, GPU: ctx, Close: func() {
			m.Close()
			ops.ReleaseAttentionScratch(ctx)
			ctx.Close()
		}}, nil
	}
}

// TestDeviceLossRecovery: a GPU device loss (injected through the test
// hook) fails the request in flight with an error, /health turns 503 and
// new requests get 503 while the supervisor re-creates the device and
// reloads the model; then /health is 200 again and requests give the same
// text as before the loss.
func TestDeviceLossRecovery(t *testing.T) {
	needGPU(t)
	reload := make(chan struct{})
	sup, err := supervisor.New(kjvLoader(t, reload), supervisor.Options{CheckInterval: 20 * time.Millisecond, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer sup.Close()
	srv := serve.New(serve.Config{}, zerolog.Nop())
	srv.SetBackend(sup)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()
	ls := &liveServer{base: "http://" + ln.Addr().String()}

	greedy := func(c *websocket.Conn, id string) (string, wsMsg) {
		c.WriteJSON(map[string]any{"type": "generate", "id": id, "prompt": "In the beginning God created", "max_tokens": 10, "temperature": 0})
		text, last := collect(t, c, id)
		return text[id], last[id]
	}
	c := ls.dial(t)
	before, end := greedy(c, "before")
	if end.Type != "done" || before == "" {
		t.Fatalf("before the loss: %+v %q", end, before)
	}

	// A long request is running when the device goes.
	c.WriteJSON(map[string]any{"type": "generate", "id": "victim", "prompt": "And it came to pass", "max_tokens": 400})
	var m wsMsg
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if err := c.ReadJSON(&m); err != nil || m.Type != "token" {
		t.Fatalf("victim's first token: %+v %v", m, err)
	}
	sup.InjectDeviceLoss()
	_, last := collect(t, c, "victim")
	if v := last["victim"]; v.Type != "error" || v.Error == nil || v.Error.Code != "generation_failed" || !strings.Contains(v.Error.Message, "device lost") {
		t.Fatalf("request in flight at the loss ended with %+v (error %+v), want generation_failed naming the device loss", v, v.Error)
	}

	// Recovering (the reload waits for the test): 503 everywhere.
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := ls.get(t, "/health")
		if code == http.StatusServiceUnavailable {
			var h map[string]string
			json.Unmarshal([]byte(body), &h)
			if h["status"] != "unavailable" || !strings.Contains(h["error"], "device") {
				t.Errorf("/health while recovering: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health stayed %d after the loss: %s", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Post(ls.base+"/v1/completions", "application/json", strings.NewReader(`{"prompt":"x","max_tokens":2}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("request while recovering: %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	close(reload)
	if err := sup.Wait(contextWithTimeout(t, 2*time.Minute)); err != nil {
		t.Fatalf("no recovery: %v (health: %v)", err, sup.Health())
	}
	if code, body := ls.get(t, "/health"); code != http.StatusOK {
		t.Fatalf("/health after recovery: %d %s", code, body)
	}
	if n := sup.Recoveries(); n != 1 {
		t.Errorf("%d recoveries, want 1", n)
	}
	// The old connection still works, and so does a new one.
	after, end := greedy(c, "after")
	if end.Type != "done" || after != before {
		t.Errorf("after recovery: %+v %q, want %q", end, after, before)
	}
	again, _ := greedy(ls.dial(t), "again")
	if again != before {
		t.Errorf("new connection after recovery: %q, want %q", again, before)
	}
}

func contextWithTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
