package serve_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// creatorSource is a ModelSource and a ModelManager that creates and
// copies models as a model store would: a created model is the source's
// description with its own template, system prompt and parameters. Its
// loaded models describe themselves from it, as cmd/wgllm's do.
type creatorSource struct {
	fakeStore
	mu     sync.Mutex
	models map[string]serve.ModelInfo
	loaded map[string]*servetest.Backend
}

func newCreatorSource() *creatorSource {
	return &creatorSource{fakeStore: fakeStore{models: map[string]bool{}},
		models: map[string]serve.ModelInfo{"main": {Name: "main", Format: "gguf", Family: "llama", Template: "{{ file }}"}},
		loaded: map[string]*servetest.Backend{}}
}

func (s *creatorSource) Catalog() ([]serve.ModelInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []serve.ModelInfo
	for _, m := range s.models {
		out = append(out, m)
	}
	return out, nil
}

type describedFake struct {
	*servetest.Backend
	src  *creatorSource
	name string
}

func (d describedFake) Describe() serve.ModelInfo {
	d.src.mu.Lock()
	defer d.src.mu.Unlock()
	return d.src.models[d.name]
}
func (d describedFake) MemoryBytes() uint64 { return 1 }

func (s *creatorSource) Load(info serve.ModelInfo) (serve.LoadedModel, error) {
	b := servetest.New(servetest.Options{Model: info.Name, EOSAfter: 2})
	s.mu.Lock()
	s.loaded[info.Name] = b
	s.mu.Unlock()
	return describedFake{b, s, info.Name}, nil
}

func (s *creatorSource) Create(ctx context.Context, spec serve.ModelSpec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.models[strings.TrimSuffix(spec.From, ":latest")]
	if !ok {
		return fmt.Errorf("%w: %s", serve.ErrUnknownModel, spec.From)
	}
	m.Name = spec.Name
	if spec.Template != "" {
		m.Template = spec.Template
	}
	m.System, m.Parameters = spec.System, spec.Parameters
	s.models[spec.Name] = m
	return nil
}

func (s *creatorSource) Copy(source, destination string) error {
	return s.Create(context.Background(), serve.ModelSpec{Name: destination, From: source})
}

func (s *creatorSource) Delete(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	name = strings.TrimSuffix(name, ":latest")
	if _, ok := s.models[name]; !ok {
		return fmt.Errorf("%w: %s", serve.ErrUnknownModel, name)
	}
	delete(s.models, name)
	return nil
}

func (s *creatorSource) jobs(name string) []string {
	s.mu.Lock()
	b := s.loaded[name]
	s.mu.Unlock()
	var prompts []string
	for _, j := range b.Jobs() {
		prompts = append(prompts, j.Prompt)
	}
	return prompts
}

func startCreator(t *testing.T) (*testServer, *creatorSource) {
	src := newCreatorSource()
	reg, err := serve.NewRegistry(src, serve.RegistryOptions{Default: "main", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ts := start(t, serve.Config{DefaultMaxTokens: 4, Manager: src}, nil)
	if err := reg.Preload(context.Background()); err != nil {
		t.Fatal(err)
	}
	ts.srv.SetBackend(reg)
	t.Cleanup(reg.Close)
	return ts, src
}

// /api/create streams Ollama's status lines and makes a model that is
// listed, shown with its template, system prompt and parameters, and
// served with them: the system prompt leads a chat that has none, the
// parameters are the defaults under the request's own settings.
func TestOllamaCreateServes(t *testing.T) {
	ts, src := startCreator(t)
	lines := ndjson(t, ts.do("POST", "/api/create", `{"model":"bible","from":"main","template":"{{ messages }}",
		"system":"Answer in verse.","parameters":{"temperature":0.25,"top_k":7,"stop":["Amen"],"num_ctx":512,"num_predict":3}}`, nil))
	if lines[0]["status"] != "reading model metadata" || lines[len(lines)-1]["status"] != "success" {
		t.Fatalf("create lines: %v", lines)
	}
	var tags struct{ Models []struct{ Name string } }
	decode(t, ts.do("GET", "/api/tags", nil, nil), &tags)
	var names []string
	for _, m := range tags.Models {
		names = append(names, m.Name)
	}
	if strings.Join(names, ",") != "bible:latest,main:latest" {
		t.Errorf("tags: %v", names)
	}
	var show map[string]any
	decode(t, ts.do("POST", "/api/show", `{"model":"bible:latest"}`, nil), &show)
	params, _ := show["parameters"].(string)
	if show["template"] != "{{ messages }}" || show["system"] != "Answer in verse." ||
		!strings.Contains(params, `stop                           "Amen"`) || !strings.Contains(params, "temperature                    0.25") ||
		!strings.Contains(show["modelfile"].(string), `SYSTEM """Answer in verse."""`) {
		t.Errorf("show: %v", show)
	}

	var out map[string]any
	decode(t, ts.do("POST", "/api/chat", `{"model":"bible","stream":false,"messages":[{"role":"user","content":"hi"}]}`, nil), &out)
	prompts := src.jobs("bible")
	if len(prompts) != 1 || !strings.HasPrefix(prompts[0], "<|system|>\nAnswer in verse.\n<|user|>\nhi\n") {
		t.Fatalf("the system prompt did not lead the chat: %q", prompts)
	}
	// The request's system prompt and options win.
	decode(t, ts.do("POST", "/api/chat", `{"model":"bible","stream":false,"options":{"temperature":0.9},
		"messages":[{"role":"system","content":"Be plain."},{"role":"user","content":"hi"}]}`, nil), &out)
	src.mu.Lock()
	b := src.loaded["bible"]
	src.mu.Unlock()
	jobs := b.Jobs()
	first, second := jobs[0], jobs[1]
	if first.Sampling.Temperature != 0.25 || first.Sampling.TopK != 7 || first.MaxTokens != 3 || strings.Join(first.Stop, ",") != "Amen" {
		t.Errorf("the model's parameters were not the defaults: %+v", first)
	}
	if second.Sampling.Temperature != 0.9 || second.Sampling.TopK != 7 || strings.Count(second.Prompt, "<|system|>") != 1 ||
		!strings.Contains(second.Prompt, "Be plain.") {
		t.Errorf("the request did not override the model: %+v", second)
	}
	// OpenAI's endpoint gets the same defaults; its stop replaces the model's.
	decode(t, ts.do("POST", "/v1/chat/completions", `{"model":"bible","stop":["x"],"messages":[{"role":"user","content":"hi"}]}`, nil), &out)
	third := b.Jobs()[2]
	if third.Sampling.TopK != 7 || strings.Join(third.Stop, ",") != "x" || !strings.HasPrefix(third.Prompt, "<|system|>\nAnswer in verse.") {
		t.Errorf("OpenAI request on a created model: %+v", third)
	}

	// Non-streamed create; create from a created model keeps what it does not change.
	decode(t, ts.do("POST", "/api/create", `{"model":"bible2","from":"bible:latest","stream":false,"system":"Short."}`, nil), &out)
	if out["status"] != "success" || src.models["bible2"].Template != "{{ messages }}" || src.models["bible2"].System != "Short." {
		t.Errorf("create from a created model: %v %+v", out, src.models["bible2"])
	}
}

func TestOllamaCopy(t *testing.T) {
	ts, src := startCreator(t)
	resp := ts.do("POST", "/api/copy", `{"source":"main","destination":"mine:v2"}`, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || src.models["mine:v2"].Template != "{{ file }}" {
		t.Fatalf("copy: %d %+v", resp.StatusCode, src.models)
	}
	var tags struct{ Models []struct{ Name string } }
	decode(t, ts.do("GET", "/api/tags", nil, nil), &tags)
	if len(tags.Models) != 2 || tags.Models[1].Name != "mine:v2" {
		t.Errorf("tags after copy: %+v", tags)
	}
	var out map[string]any
	decode(t, ts.do("POST", "/api/chat", `{"model":"mine:v2","stream":false,"messages":[{"role":"user","content":"hi"}]}`, nil), &out)
	if out["model"] != "mine:v2" {
		t.Errorf("chat with the copy: %v", out)
	}
	expectOllamaError(t, ts.do("POST", "/api/copy", `{"source":"absent","destination":"x"}`, nil), 404, "absent")
	resp = ts.do("DELETE", "/api/delete", `{"model":"mine:v2"}`, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("delete the copy: %d", resp.StatusCode)
	}
	expectOllamaError(t, ts.do("POST", "/api/show", `{"model":"mine:v2"}`, nil), 404, "mine:v2")
}

// Bad input to /api/create and /api/copy: 400 naming the field.
func TestOllamaCreateBadInput(t *testing.T) {
	ts, _ := startCreator(t)
	for _, c := range []struct{ path, body, field string }{
		{"/api/copy", `{"destination":"x"}`, "source"},
		{"/api/copy", `{"source":"main"}`, "destination"},
		{"/api/copy", `{"source":"main","destination":"a/b/c"}`, "destination"},
		{"/api/copy", `{"source":"main","destination":"../x"}`, "destination"},
		{"/api/create", `{"from":"main"}`, "model"},
		{"/api/create", `{"model":"bad name","from":"main"}`, "model"},
		{"/api/create", `{"model":"x"}`, "from"},
		{"/api/create", `{"model":"x","from":"main","template":"{% if %}"}`, "template"},
		{"/api/create", `{"model":"x","from":"main","parameters":{"temperature":-1}}`, "parameters.temperature"},
		{"/api/create", `{"model":"x","from":"main","parameters":{"top_k":"many"}}`, "parameters.top_k"},
		{"/api/create", `{"model":"x","from":"main","parameters":{"num_predict":0}}`, "parameters.num_predict"},
		{"/api/create", `{"model":"x","from":"main","parameters":{"warmth":1}}`, "parameters.warmth"},
		{"/api/create", `{"model":"x","from":"main","parameters":{"stop":[""]}}`, "parameters.stop"},
		{"/api/create", `{"model":"x","files":{"m.gguf":"sha256:ab"}}`, "files"},
		{"/api/create", `{"model":"x","from":"main","quantize":"q4_K_M"}`, "quantize"},
		{"/api/create", `{"model":"x","modelfile":"FROM main"}`, "modelfile"},
	} {
		t.Run(c.field, func(t *testing.T) {
			expectOllamaError(t, ts.do("POST", c.path, c.body, nil), 400, c.field)
		})
	}
	expectOllamaError(t, ts.do("POST", "/api/create", `{"model":"x","from":"absent","stream":false}`, nil), 404, "absent")
	// Streamed too: the manifest is written before the answer starts.
	expectOllamaError(t, ts.do("POST", "/api/create", `{"model":"x","from":"absent"}`, nil), 404, "absent")

	// A manager that cannot create: 501.
	ts2 := start(t, serve.Config{Manager: &fakeStore{models: map[string]bool{}}}, &servetest.Options{})
	expectOllamaError(t, ts2.do("POST", "/api/copy", `{"source":"fake-model","destination":"x"}`, nil), 501, "cannot create")
	expectOllamaError(t, ts2.do("POST", "/api/create", `{"model":"x","from":"fake-model"}`, nil), 501, "cannot create")
}
