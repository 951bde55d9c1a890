package serve_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// fakeSource serves fake engines by name. A model listed in gates loads
// only when its channel is closed (or receives); fail makes a load fail.
type fakeSource struct {
	mu      sync.Mutex
	catalog []serve.ModelInfo
	gates   map[string]chan struct{}
	fail    map[string]error
	loads   map[string]int
	open    map[string]*fakeLoaded // loaded and not closed
	opts    servetest.Options
}

type fakeLoaded struct {
	*servetest.Backend
	src   *fakeSource
	name  string
	bytes uint64
}

func (m *fakeLoaded) MemoryBytes() uint64 { return m.bytes }

func (m *fakeLoaded) Close() {
	m.src.mu.Lock()
	delete(m.src.open, m.name)
	m.src.mu.Unlock()
	m.Backend.Close()
}

func newFakeSource(models map[string]uint64) *fakeSource {
	src := &fakeSource{gates: map[string]chan struct{}{}, fail: map[string]error{}, loads: map[string]int{}, open: map[string]*fakeLoaded{}}
	for name, bytes := range models {
		src.catalog = append(src.catalog, serve.ModelInfo{Name: name, Format: "gguf", Family: "llama", GPUBytes: bytes})
	}
	return src
}

func (s *fakeSource) Catalog() ([]serve.ModelInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]serve.ModelInfo(nil), s.catalog...), nil
}

func (s *fakeSource) Load(info serve.ModelInfo) (serve.LoadedModel, error) {
	s.mu.Lock()
	s.loads[info.Name]++
	gate, err := s.gates[info.Name], s.fail[info.Name]
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if err != nil {
		return nil, err
	}
	opts := s.opts
	opts.Model = info.Name
	m := &fakeLoaded{Backend: servetest.New(opts), src: s, name: info.Name, bytes: info.GPUBytes}
	s.mu.Lock()
	s.open[info.Name] = m
	s.mu.Unlock()
	return m, nil
}

func (s *fakeSource) loaded() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for n := range s.open {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (s *fakeSource) loadCount(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loads[name]
}

func (s *fakeSource) gate(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := make(chan struct{})
	s.gates[name] = g
	return g
}

func (s *fakeSource) backend(t *testing.T, name string) *servetest.Backend {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.open[name]
	if m == nil {
		t.Fatalf("model %q is not loaded", name)
	}
	return m.Backend
}

// startRegistry serves a Registry over src with the default "main".
func startRegistry(t *testing.T, src *fakeSource, opt serve.RegistryOptions) (*testServer, *serve.Registry) {
	t.Helper()
	if opt.Default == "" {
		opt.Default = "main"
	}
	opt.Log = zerolog.Nop()
	reg, err := serve.NewRegistry(src, opt)
	if err != nil {
		t.Fatal(err)
	}
	ts := start(t, serve.Config{DefaultMaxTokens: 4}, nil)
	if err := reg.Preload(context.Background()); err != nil {
		t.Fatal(err)
	}
	ts.srv.SetBackend(reg)
	t.Cleanup(reg.Close) // after the server's shutdown (cleanups run last first)
	return ts, reg
}

// chat asks the OpenAI chat endpoint for model and returns the model the
// answer names.
func chatWith(t *testing.T, ts *testServer, model string) string {
	t.Helper()
	var out struct {
		Model   string `json:"model"`
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	resp := ts.do("POST", "/v1/chat/completions", map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": "hi"}}}, nil)
	if resp.StatusCode != http.StatusOK {
		expectError(t, resp, http.StatusOK, "", "")
	}
	decode(t, resp, &out)
	if len(out.Choices) != 1 || out.Choices[0].Message.Content != wantText(4) {
		t.Errorf("chat with %s: %+v", model, out)
	}
	return out.Model
}

const mib = 1 << 20

// post sends body and returns "status model" from the JSON answer; it is
// safe in a goroutine (no t.Fatal).
func post(ts *testServer, path, body string) string {
	resp, err := http.Post(ts.url(path), "application/json", strings.NewReader(body))
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return fmt.Sprint(resp.StatusCode, " ", err)
	}
	return fmt.Sprint(resp.StatusCode, " ", v["model"])
}

func TestRegistryLoadsOnDemandAndEvictsLeastRecentlyUsed(t *testing.T) {
	src := newFakeSource(map[string]uint64{"main": 100 * mib, "a": 300 * mib, "b": 300 * mib, "c": 300 * mib})
	ts, _ := startRegistry(t, src, serve.RegistryOptions{MemoryBudget: 800 * mib})
	if got := src.loaded(); strings.Join(got, ",") != "main" {
		t.Fatalf("after preload: %v loaded", got)
	}
	// No model named, or the default's name: the default.
	if m := chatWith(t, ts, ""); m != "main" {
		t.Errorf("no model answered by %q", m)
	}
	if m := chatWith(t, ts, "a"); m != "a" {
		t.Errorf("model a answered by %q", m)
	}
	if m := chatWith(t, ts, "b:latest"); m != "b" { // Ollama's tag
		t.Errorf("model b:latest answered by %q", m)
	}
	if got := src.loaded(); strings.Join(got, ",") != "a,b,main" {
		t.Fatalf("loaded %v", got)
	}
	// Use a again, so b is the least recently used: c evicts b, not a.
	chatWith(t, ts, "a")
	chatWith(t, ts, "c")
	if got := src.loaded(); strings.Join(got, ",") != "a,c,main" {
		t.Errorf("after loading c: %v (b, the least recently used, should have gone)", got)
	}
	if n := src.loadCount("a"); n != 1 {
		t.Errorf("a loaded %d times", n)
	}

	// The listings show every model, loaded or not.
	var list struct {
		Data []struct{ ID string } `json:"data"`
	}
	decode(t, ts.do("GET", "/v1/models", nil, nil), &list)
	var ids []string
	for _, d := range list.Data {
		ids = append(ids, d.ID)
	}
	if strings.Join(ids, ",") != "a,b,c,main" {
		t.Errorf("/v1/models: %v", ids)
	}
	tags := object(t, ts.do("GET", "/api/tags", nil, nil))
	if n := len(tags["models"].([]any)); n != 4 {
		t.Errorf("/api/tags lists %d models", n)
	}
	ps := object(t, ts.do("GET", "/api/ps", nil, nil))
	var running []string
	for _, m := range ps["models"].([]any) {
		running = append(running, m.(map[string]any)["name"].(string))
	}
	if strings.Join(running, ",") != "a:latest,c:latest,main:latest" {
		t.Errorf("/api/ps: %v", running)
	}
	var one struct{ ID string }
	decode(t, ts.do("GET", "/v1/models/b", nil, nil), &one)
	if one.ID != "b" {
		t.Errorf("/v1/models/b: %+v", one)
	}

	// Ollama's keep_alive 0 unloads an idle model, never the default.
	object(t, ts.do("POST", "/api/generate", `{"model":"a","keep_alive":0}`, nil))
	object(t, ts.do("POST", "/api/generate", `{"model":"main","keep_alive":"0s"}`, nil))
	if got := src.loaded(); strings.Join(got, ",") != "c,main" {
		t.Errorf("after unloading a and main: %v", got)
	}
	// An empty prompt loads.
	resp := object(t, ts.do("POST", "/api/generate", `{"model":"b"}`, nil))
	if resp["done_reason"] != "load" || strings.Join(src.loaded(), ",") != "b,c,main" {
		t.Errorf("load: %v, loaded %v", resp, src.loaded())
	}
}

func TestRegistryUnknownModel(t *testing.T) {
	src := newFakeSource(map[string]uint64{"main": mib, "other": mib})
	ts, _ := startRegistry(t, src, serve.RegistryOptions{})
	e := expectError(t, ts.do("POST", "/v1/chat/completions", `{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}`, nil),
		http.StatusNotFound, "model_not_found", "model")
	if !strings.Contains(e.Error.Message, `"gpt-4"`) || !strings.Contains(e.Error.Message, "main, other") {
		t.Errorf("404 message %q should name the model and what is served", e.Error.Message)
	}
	expectError(t, ts.do("POST", "/v1/completions", `{"model":"nope","prompt":"x"}`, nil), http.StatusNotFound, "model_not_found", "model")
	expectError(t, ts.do("POST", "/v1/requests", `{"model":"nope","prompt":"x"}`, nil), http.StatusNotFound, "model_not_found", "model")
	expectError(t, ts.do("GET", "/v1/models/nope", nil, nil), http.StatusNotFound, "model_not_found", "model")
	expectOllamaError(t, ts.do("POST", "/api/chat", `{"model":"nope","messages":[{"role":"user","content":"x"}]}`, nil), 404, `"nope"`)
	expectOllamaError(t, ts.do("POST", "/api/show", `{"model":"nope"}`, nil), 404, `"nope"`)
	expectOllamaError(t, ts.do("POST", "/api/generate", `{"model":"nope"}`, nil), 404, `"nope"`)

	// A model added to the catalog later is found without a restart.
	src.mu.Lock()
	src.catalog = append(src.catalog, serve.ModelInfo{Name: "new", GPUBytes: mib})
	src.mu.Unlock()
	time.Sleep(1100 * time.Millisecond) // the catalog is read at most once a second
	if m := chatWith(t, ts, "new"); m != "new" {
		t.Errorf("new model answered by %q", m)
	}
}

func TestRegistryLoadingOneModelDoesNotBlockAnother(t *testing.T) {
	src := newFakeSource(map[string]uint64{"main": mib, "slow": mib})
	ts, _ := startRegistry(t, src, serve.RegistryOptions{})
	gate := src.gate("slow")
	var openGate sync.Once
	t.Cleanup(func() { openGate.Do(func() { close(gate) }) }) // before the registry's Close, which waits for loads
	slowDone := make(chan string, 2)
	for range 2 { // two requests for the loading model: one load
		go func() {
			slowDone <- post(ts, "/api/chat", `{"model":"slow","stream":false,"messages":[{"role":"user","content":"x"}]}`)
		}()
	}
	waitFor(t, "slow to start loading", 5*time.Second, func() bool { return src.loadCount("slow") == 1 })
	// While it loads, the default model serves, and so do the listings.
	for range 3 {
		done := make(chan string, 1)
		go func() {
			done <- post(ts, "/api/chat", `{"model":"main","stream":false,"messages":[{"role":"user","content":"x"}]}`)
		}()
		select {
		case got := <-done:
			if got != "200 main" {
				t.Errorf("request for main: %s", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a request to the loaded model waited for the other model's load")
		}
	}
	models := object(t, ts.do("GET", "/api/ps", nil, nil))["models"].([]any)
	if len(models) != 1 {
		t.Errorf("/api/ps while slow loads: %v", models)
	}
	select {
	case got := <-slowDone:
		t.Fatalf("the request for the loading model finished before its load: %s", got)
	default:
	}
	openGate.Do(func() { close(gate) })
	for range 2 {
		select {
		case got := <-slowDone:
			if got != "200 slow" {
				t.Errorf("request for slow: %s", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the request for slow did not finish after its load")
		}
	}
	if n := src.loadCount("slow"); n != 1 {
		t.Errorf("slow loaded %d times for two requests", n)
	}
}

func TestRegistryBusyModelIsNotEvicted(t *testing.T) {
	src := newFakeSource(map[string]uint64{"main": 100 * mib, "a": 300 * mib, "b": 300 * mib})
	src.opts = servetest.Options{StepDelay: 5 * time.Millisecond}
	ts, reg := startRegistry(t, src, serve.RegistryOptions{MemoryBudget: 500 * mib, LoadWait: 300 * time.Millisecond})
	chatWith(t, ts, "a")
	// A long job holds a; b needs its room.
	src.backend(t, "a").SetPaused(true)
	resp := ts.do("POST", "/v1/requests", `{"model":"a","prompt":"hold","max_tokens":4}`, nil)
	var created struct{ ID string }
	decode(t, resp, &created)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/requests: %d", resp.StatusCode)
	}
	e := expectError(t, ts.do("POST", "/v1/completions", `{"model":"b","prompt":"x"}`, nil), http.StatusServiceUnavailable, "server_busy", "")
	if !strings.Contains(e.Error.Message, "busy") {
		t.Errorf("503 message %q", e.Error.Message)
	}
	if got := src.loaded(); strings.Join(got, ",") != "a,main" {
		t.Fatalf("a busy model was evicted: %v", got)
	}
	// The job's status is found on its model through the registry.
	var st struct{ Status string }
	decode(t, ts.do("GET", "/v1/requests/"+created.ID, nil, nil), &st)
	if st.Status != "queued" && st.Status != "running" {
		t.Errorf("status of the held job: %q", st.Status)
	}
	// A waiting request gets the room once the job ends.
	waited := make(chan string, 1)
	go func() {
		_, release, err := reg.Acquire(context.Background(), "b")
		if err != nil {
			waited <- err.Error()
			return
		}
		release()
		waited <- "ok"
	}()
	time.Sleep(50 * time.Millisecond)
	src.backend(t, "a").SetPaused(false)
	select {
	case got := <-waited:
		if got != "ok" {
			// LoadWait is short; the job of 4 tokens takes ~20ms.
			t.Errorf("waiting for room: %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting request never got room")
	}
	if got := src.loaded(); strings.Join(got, ",") != "b,main" {
		t.Errorf("after a's job ended: %v", got)
	}
}

func TestRegistryBudgetAndLoadErrors(t *testing.T) {
	src := newFakeSource(map[string]uint64{"main": 400 * mib, "huge": 700 * mib, "broken": mib})
	src.fail["broken"] = errors.New("bad tensor data")
	ts, reg := startRegistry(t, src, serve.RegistryOptions{MemoryBudget: 1000 * mib})
	e := expectError(t, ts.do("POST", "/v1/completions", `{"model":"huge","prompt":"x"}`, nil), http.StatusInsufficientStorage, "model_too_large", "model")
	if !strings.Contains(e.Error.Message, "700.0 MiB") {
		t.Errorf("too large: %q", e.Error.Message)
	}
	e = expectError(t, ts.do("POST", "/v1/completions", `{"model":"broken","prompt":"x"}`, nil), http.StatusInternalServerError, "model_load_failed", "")
	if !strings.Contains(e.Error.Message, "bad tensor data") {
		t.Errorf("load failure: %q", e.Error.Message)
	}
	// A failed load is tried again by the next request.
	src.mu.Lock()
	delete(src.fail, "broken")
	src.mu.Unlock()
	if m := chatWith(t, ts, "broken"); m != "broken" || src.loadCount("broken") != 2 {
		t.Errorf("retry after a failed load: %q, %d loads", m, src.loadCount("broken"))
	}
	// The metrics sum the loaded models.
	m := reg.Metrics()
	if m.QueueLimit != 16 || m.TokensGenerated != 4 {
		t.Errorf("summed metrics %+v (two fake engines, 4 tokens generated)", m)
	}

	if _, err := serve.NewRegistry(src, serve.RegistryOptions{Default: "absent"}); err == nil || !strings.Contains(err.Error(), "absent") {
		t.Errorf("a default not in the catalog: %v", err)
	}
	// max_loaded 1 leaves no room beside the default.
	src2 := newFakeSource(map[string]uint64{"main": mib, "x": mib})
	ts2, _ := startRegistry(t, src2, serve.RegistryOptions{MaxLoaded: 1})
	expectError(t, ts2.do("POST", "/v1/completions", `{"model":"x","prompt":"x"}`, nil), http.StatusInsufficientStorage, "model_too_large", "model")
}
