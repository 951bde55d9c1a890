package serve_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// describedBackend is the fake engine with a model description, as
// cmd/wgllm gives the engine of a server with one model.
type describedBackend struct {
	*servetest.Backend
	info serve.ModelInfo
}

func (d describedBackend) Describe() serve.ModelInfo { return d.info }

var fakeInfo = serve.ModelInfo{
	Name: "fake-model", Size: 18135456, ModifiedAt: time.Date(2026, 11, 25, 22, 7, 0, 0, time.UTC),
	Digest: strings.Repeat("ab", 32), Format: "gguf", Family: "llama", ParameterSize: "30M",
	QuantizationLevel: "Q4_K_M", ContextLength: 256, Template: "{{ messages }}",
	Metadata: map[string]any{"general.architecture": "llama", "llama.context_length": 256, "tokenizer.ggml.tokens": []any{}},
	GPUBytes: 40 << 20,
}

// startOllama serves the fake engine (with its description) on loopback.
func startOllama(t *testing.T, cfg serve.Config, opts servetest.Options) *testServer {
	t.Helper()
	ts := start(t, cfg, nil)
	if opts.Model == "" {
		opts.Model = "llama3.2" // the name in Ollama's documented examples
	}
	ts.backend = servetest.New(opts)
	ts.srv.SetBackend(describedBackend{ts.backend, fakeInfo})
	return ts
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "ollama", name))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(name, ".request.json") {
		// The documented examples name two models; the one model served
		// here is llama3.2, and a server of one model checks the name.
		data = bytes.ReplaceAll(data, []byte(`"mistral"`), []byte(`"llama3.2"`))
	}
	return data
}

func fixtureValue(t *testing.T, names ...string) map[string]any {
	t.Helper()
	merged := map[string]any{}
	for _, name := range names {
		var v map[string]any
		if err := json.Unmarshal(fixture(t, name), &v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		mergeShape(merged, v)
	}
	return merged
}

// mergeShape adds src's fields to dst (objects merged recursively): the
// union of several documented examples of one kind of response.
func mergeShape(dst, src map[string]any) {
	for k, v := range src {
		if sub, ok := v.(map[string]any); ok {
			if d, ok := dst[k].(map[string]any); ok {
				mergeShape(d, sub)
				continue
			}
		}
		if _, ok := dst[k]; !ok || dst[k] == nil {
			dst[k] = v
		}
	}
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// shapeRules says which documented fields this server may leave out
// (with why) and which of its fields the documented example lacks.
type shapeRules struct {
	optional map[string]string // path → why ours may lack it
	extra    map[string]string // path → why ours may have it
	opaque   map[string]bool   // paths whose contents depend on the model
}

// checkShape compares got with the documented example doc: the same field
// names, each with the same JSON type (a documented null matches any).
// Paths look like "details.family" and "models[].name".
func checkShape(t *testing.T, what string, got, doc any, rules shapeRules, path string) {
	t.Helper()
	gk, dk := jsonKind(got), jsonKind(doc)
	if dk == "null" {
		return
	}
	if gk != dk {
		t.Errorf("%s: %s is JSON %s, documented as %s", what, path, gk, dk)
		return
	}
	if rules.opaque[path] {
		return
	}
	switch d := doc.(type) {
	case map[string]any:
		g := got.(map[string]any)
		join := func(k string) string {
			if path == "" {
				return k
			}
			return path + "." + k
		}
		for k, dv := range d {
			gv, ok := g[k]
			if !ok {
				if _, opt := rules.optional[join(k)]; !opt {
					t.Errorf("%s: documented field %s missing", what, join(k))
				}
				continue
			}
			checkShape(t, what, gv, dv, rules, join(k))
		}
		for k := range g {
			if _, ok := d[k]; !ok {
				if _, ok := rules.extra[join(k)]; !ok {
					t.Errorf("%s: field %s is not in the documented example", what, join(k))
				}
			}
		}
	case []any:
		if len(d) == 0 {
			return
		}
		for _, gv := range got.([]any) {
			checkShape(t, what, gv, d[0], rules, path+"[]")
		}
	}
}

var generateRules = shapeRules{optional: map[string]string{
	"context":     "Ollama omits it in raw mode; this server keeps no token context (send the chat to /api/chat)",
	"done_reason": "only the final line has one",
}}

var chatRules = shapeRules{optional: map[string]string{
	"message.images": "no images",
	"done_reason":    "only the final line has one",
}}

// ndjson reads every line of a stream.
func ndjson(t *testing.T, resp *http.Response) []map[string]any {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: status %d: %s", resp.Request.URL.Path, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("stream Content-Type %q, want application/x-ndjson", ct)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", sc.Text(), err)
		}
		lines = append(lines, v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

func object(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("%s: status %d: %s", resp.Request.URL.Path, resp.StatusCode, body)
	}
	var v map[string]any
	decode(t, resp, &v)
	return v
}

// checkFinal checks the statistics of a final line: counts match the
// engine's, durations are nanoseconds consistent with each other.
func checkFinal(t *testing.T, what string, final map[string]any, evalCount int, reason string) {
	t.Helper()
	if final["done"] != true || final["done_reason"] != reason {
		t.Errorf("%s: done %v done_reason %v, want true %q", what, final["done"], final["done_reason"], reason)
	}
	num := func(k string) float64 { f, _ := final[k].(float64); return f }
	if int(num("eval_count")) != evalCount || num("prompt_eval_count") < 1 {
		t.Errorf("%s: eval_count %v prompt_eval_count %v, want %d and ≥ 1", what, final["eval_count"], final["prompt_eval_count"], evalCount)
	}
	total, eval := num("total_duration"), num("eval_duration")
	// The fake engine steps every 2ms, so a generation of several tokens
	// takes milliseconds: nanoseconds, not milliseconds or seconds.
	if eval < 1e6 || total < eval || total > 60e9 {
		t.Errorf("%s: total_duration %v eval_duration %v: not nanoseconds of this generation", what, total, eval)
	}
	if _, ok := final["created_at"].(string); !ok {
		t.Errorf("%s: created_at %v", what, final["created_at"])
	} else if _, err := time.Parse(time.RFC3339Nano, final["created_at"].(string)); err != nil {
		t.Errorf("%s: created_at: %v", what, err)
	}
}

func TestOllamaGenerateDocumentedExamples(t *testing.T) {
	ts := startOllama(t, serve.Config{DefaultMaxTokens: 8, MaxTokensLimit: 128}, servetest.Options{})
	chunkDoc := fixtureValue(t, "generate_stream.chunk.json")
	finalDoc := fixtureValue(t, "generate_stream.final.json", "generate_suffix.response.json", "generate_nostream.response.json")

	// Streaming (the default): pieces, then the final line.
	lines := ndjson(t, ts.do("POST", "/api/generate", fixture(t, "generate_stream.request.json"), nil))
	if len(lines) != 9 {
		t.Fatalf("%d lines, want 8 pieces and the final line: %v", len(lines), lines)
	}
	var text strings.Builder
	for i, l := range lines[:8] {
		checkShape(t, fmt.Sprintf("generate chunk %d", i), l, chunkDoc, generateRules, "")
		if l["model"] != "llama3.2" || l["done"] != false {
			t.Errorf("chunk %d: %v", i, l)
		}
		text.WriteString(l["response"].(string))
	}
	if text.String() != wantText(8) {
		t.Errorf("streamed text %q, want %q", text.String(), wantText(8))
	}
	final := lines[8]
	checkShape(t, "generate final", final, finalDoc, generateRules, "")
	checkFinal(t, "generate final", final, 8, "length")
	if final["response"] != "" {
		t.Errorf("final line of a stream carries response %q", final["response"])
	}
	job := jobWithPrompt(t, ts.backend, "Why is the sky blue?")
	if job.Prompt != "<|user|>\nWhy is the sky blue?\n<|assistant|>\n" || !job.Chat {
		t.Errorf("the prompt did not go through the chat template: %+v", job)
	}

	// stream: false: one object with the whole response.
	resp := object(t, ts.do("POST", "/api/generate", fixture(t, "generate_nostream.request.json"), nil))
	checkShape(t, "generate stream:false", resp, finalDoc, generateRules, "")
	checkFinal(t, "generate stream:false", resp, 8, "length")
	if resp["response"] != wantText(8) {
		t.Errorf("response %q", resp["response"])
	}

	// raw: the prompt as is.
	resp = object(t, ts.do("POST", "/api/generate", fixture(t, "generate_raw.request.json"), nil))
	checkShape(t, "generate raw", resp, finalDoc, generateRules, "")
	job = jobWithPrompt(t, ts.backend, "[INST] why is the sky blue? [/INST]")
	if job.Prompt != "[INST] why is the sky blue? [/INST]" || job.Chat {
		t.Errorf("raw prompt was changed: %+v", job)
	}

	// A system prompt goes through the template too.
	object(t, ts.do("POST", "/api/generate", `{"model":"llama3.2","prompt":"hi there","system":"Be brief.","stream":false}`, nil))
	if job = jobWithPrompt(t, ts.backend, "hi there"); job.Prompt != "<|system|>\nBe brief.\n<|user|>\nhi there\n<|assistant|>\n" {
		t.Errorf("system prompt: %q", job.Prompt)
	}

	// Every option of the documented example: the sampling ones reach the
	// engine; load-time ones and the samplers this server lacks are
	// accepted and ignored.
	before := len(ts.backend.Jobs())
	resp = object(t, ts.do("POST", "/api/generate", fixture(t, "generate_options.request.json"), nil))
	checkShape(t, "generate options", resp, finalDoc, generateRules, "")
	jobs := ts.backend.Jobs()
	if len(jobs) != before+1 {
		t.Fatalf("%d jobs", len(jobs)-before)
	}
	job = jobs[before]
	p := job.Sampling
	if p.Seed != 42 || job.MaxTokens != 100 || p.TopK != 20 || p.TopP != 0.9 || p.MinP != 0 || p.PenaltyLastN != 33 ||
		p.Temperature != 0.8 || p.RepeatPenalty != 1.2 || p.PresencePenalty != 1.5 || p.FrequencyPenalty != 1.0 ||
		strings.Join(job.Stop, "|") != "\n|user:" {
		t.Errorf("options reached the engine as %+v (max %d, stop %q)", p, job.MaxTokens, job.Stop)
	}
	if !strings.Contains(ts.logs.String(), "unsupported Ollama sampler ignored") {
		t.Error("mirostat 1 and typical_p 0.7 were ignored without a warning")
	}

	// options.seed, streamed.
	lines = ndjson(t, ts.do("POST", "/api/generate", fixture(t, "generate_seed.request.json"), nil))
	checkFinal(t, "generate seed", lines[len(lines)-1], 8, "length")
	jobs = ts.backend.Jobs()
	if s := jobs[len(jobs)-1].Sampling.Seed; s != 123 {
		t.Errorf("seed %d, want 123", s)
	}

	// num_predict -1: as many as the server allows.
	object(t, ts.do("POST", "/api/generate", `{"model":"llama3.2","prompt":"unbounded","stream":false,"options":{"num_predict":-1,"top_k":20.0}}`, nil))
	if job = jobWithPrompt(t, ts.backend, "unbounded"); job.MaxTokens != 128 || job.Sampling.TopK != 20 {
		t.Errorf("num_predict -1: max tokens %d top_k %d", job.MaxTokens, job.Sampling.TopK)
	}

	// Load and unload: no generation.
	before = len(ts.backend.Jobs())
	for _, name := range []string{"generate_load", "generate_unload"} {
		resp = object(t, ts.do("POST", "/api/generate", fixture(t, name+".request.json"), nil))
		doc := fixtureValue(t, name+".response.json")
		checkShape(t, name, resp, doc, shapeRules{optional: map[string]string{"done_reason": "Ollama's load example has none"}, extra: map[string]string{"done_reason": "load"}}, "")
		if resp["done"] != true || resp["model"] != "llama3.2" || resp["response"] != "" {
			t.Errorf("%s: %v", name, resp)
		}
		if want, _ := doc["done_reason"].(string); want != "" && resp["done_reason"] != want {
			t.Errorf("%s: done_reason %v, want %q", name, resp["done_reason"], want)
		}
	}
	if n := len(ts.backend.Jobs()) - before; n != 0 {
		t.Errorf("load and unload started %d generations", n)
	}
}

func TestOllamaChatDocumentedExamples(t *testing.T) {
	ts := startOllama(t, serve.Config{DefaultMaxTokens: 5}, servetest.Options{})
	chunkDoc := fixtureValue(t, "chat_stream.chunk.json", "chat_history.chunk.json")
	finalDoc := fixtureValue(t, "chat_stream.final.json", "chat_nostream.response.json", "chat_structured.response.json")

	for _, name := range []string{"chat_stream", "chat_history", "chat_seed"} {
		lines := ndjson(t, ts.do("POST", "/api/chat", fixture(t, name+".request.json"), nil))
		if len(lines) != 6 {
			t.Fatalf("%s: %d lines, want 5 pieces and the final line", name, len(lines))
		}
		var text strings.Builder
		for i, l := range lines[:5] {
			checkShape(t, fmt.Sprintf("%s chunk %d", name, i), l, chunkDoc, chatRules, "")
			msg, _ := l["message"].(map[string]any)
			if msg["role"] != "assistant" || l["done"] != false {
				t.Errorf("%s chunk %d: %v", name, i, l)
			}
			text.WriteString(fmt.Sprint(msg["content"]))
		}
		if text.String() != wantText(5) {
			t.Errorf("%s: text %q", name, text.String())
		}
		checkShape(t, name+" final", lines[5], finalDoc, chatRules, "")
		checkFinal(t, name+" final", lines[5], 5, "length")
	}
	job := jobWithPrompt(t, ts.backend, "mie scattering")
	want := "<|user|>\nwhy is the sky blue?\n<|assistant|>\ndue to rayleigh scattering.\n<|user|>\nhow is that different than mie scattering?\n<|assistant|>\n"
	if job.Prompt != want || !job.Chat {
		t.Errorf("history rendered as %q", job.Prompt)
	}
	if job = jobWithPrompt(t, ts.backend, "Hello!"); job.Sampling.Seed != 101 || job.Sampling.Temperature != 0 {
		t.Errorf("chat options: %+v", job.Sampling)
	}

	resp := object(t, ts.do("POST", "/api/chat", fixture(t, "chat_nostream.request.json"), nil))
	checkShape(t, "chat stream:false", resp, finalDoc, chatRules, "")
	checkFinal(t, "chat stream:false", resp, 5, "length")
	if msg, _ := resp["message"].(map[string]any); msg["content"] != wantText(5) || msg["role"] != "assistant" {
		t.Errorf("chat stream:false message %v", resp["message"])
	}

	for _, name := range []string{"chat_load", "chat_unload"} {
		resp := object(t, ts.do("POST", "/api/chat", fixture(t, name+".request.json"), nil))
		doc := fixtureValue(t, name+".response.json")
		checkShape(t, name, resp, doc, shapeRules{}, "")
		if resp["done_reason"] != doc["done_reason"] {
			t.Errorf("%s: done_reason %v, want %v", name, resp["done_reason"], doc["done_reason"])
		}
	}
}

func TestOllamaModelEndpoints(t *testing.T) {
	ts := startOllama(t, serve.Config{}, servetest.Options{})
	detailsRules := shapeRules{
		extra:  map[string]string{"models[].model": "in Ollama's ListModelResponse; the documented example predates it", "models[].details.parent_model": "as in /api/show and /api/ps"},
		opaque: map[string]bool{"model_info": true},
	}
	tags := object(t, ts.do("GET", "/api/tags", nil, nil))
	checkShape(t, "/api/tags", tags, fixtureValue(t, "tags.response.json"), detailsRules, "")
	models := tags["models"].([]any)
	if len(models) != 1 {
		t.Fatalf("/api/tags: %v", tags)
	}
	m := models[0].(map[string]any)
	details := m["details"].(map[string]any)
	if m["name"] != "llama3.2:latest" || m["size"] != float64(fakeInfo.Size) || m["digest"] != fakeInfo.Digest ||
		details["family"] != "llama" || details["quantization_level"] != "Q4_K_M" || details["parameter_size"] != "30M" {
		t.Errorf("/api/tags model %v", m)
	}
	if mod, err := time.Parse(time.RFC3339Nano, m["modified_at"].(string)); err != nil || !mod.Equal(fakeInfo.ModifiedAt) {
		t.Errorf("modified_at %v (%v)", m["modified_at"], err)
	}

	show := object(t, ts.do("POST", "/api/show", fixture(t, "show.request.json"), nil))
	checkShape(t, "/api/show", show, fixtureValue(t, "show.response.json"),
		shapeRules{extra: map[string]string{"capabilities": "in Ollama's ShowResponse", "modified_at": "in Ollama's ShowResponse"},
			opaque: map[string]bool{"model_info": true}}, "")
	if show["template"] != fakeInfo.Template || !strings.Contains(show["parameters"].(string), "temperature") {
		t.Errorf("/api/show: %v", show)
	}
	if info := show["model_info"].(map[string]any); info["llama.context_length"] != float64(256) {
		t.Errorf("model_info %v", info)
	}

	ps := object(t, ts.do("GET", "/api/ps", nil, nil))
	checkShape(t, "/api/ps", ps, fixtureValue(t, "ps.response.json"), shapeRules{}, "")
	if running := ps["models"].([]any); len(running) != 1 || running[0].(map[string]any)["size_vram"] != float64(fakeInfo.GPUBytes) {
		t.Errorf("/api/ps %v", ps)
	}

	version := object(t, ts.do("GET", "/api/version", nil, nil))
	checkShape(t, "/api/version", version, fixtureValue(t, "version.response.json"), shapeRules{}, "")
}

// expectOllamaError checks an error answer in Ollama's shape: exactly
// {"error":"…"}.
func expectOllamaError(t *testing.T, resp *http.Response, status int, contains string) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, body)
	}
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	msg, ok := v["error"].(string)
	if len(v) != 1 || !ok || msg == "" {
		t.Errorf("error body %s is not {\"error\":\"…\"}", body)
	}
	if !strings.Contains(msg, contains) {
		t.Errorf("error %q does not mention %q", msg, contains)
	}
}

func TestOllamaErrors(t *testing.T) {
	const key = "sk-ollama"
	ts := start(t, serve.Config{APIKey: key, MaxBodyBytes: 4096}, nil)
	auth := http.Header{"Authorization": {"Bearer " + key}}
	expectOllamaError(t, ts.do("POST", "/api/generate", `{"model":"llama3.2","prompt":"x"}`, nil), http.StatusUnauthorized, "API key")
	expectOllamaError(t, ts.do("POST", "/api/generate", `{"model":"llama3.2","prompt":"x"}`, auth), http.StatusServiceUnavailable, "loading")
	ts.backend = servetest.New(servetest.Options{FailOn: "explode", Model: "llama3.2"})
	ts.srv.SetBackend(ts.backend)

	for _, c := range []struct {
		method, path, body string
		status             int
		contains           string
	}{
		{"GET", "/api/nope", "", 404, "no such endpoint"},
		{"GET", "/api/generate", "", 405, "not allowed"},
		{"POST", "/api/generate", `{"prompt":"x"}`, 400, "model is required"},
		{"POST", "/api/chat", `{"messages":[{"role":"user","content":"x"}]}`, 400, "model is required"},
		{"POST", "/api/show", `{}`, 400, "model is required"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":`, 400, "malformed JSON"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":"x","options":{"temperature":"hot"}}`, 400, "options.temperature"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":"x","options":{"top_k":2.5}}`, 400, "integer"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":"x","options":{"temperature":-1}}`, 400, "temperature"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":"x","options":{"num_predict":0}}`, 400, "num_predict"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":"x","options":{"stop":7}}`, 400, "options.stop"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":"x","format":"yaml"}`, 400, "format"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":"x","format":{"type":"strin"}}`, 400, "format at /type"},
		{"POST", "/api/chat", `{"model":"llama3.2","messages":[{"role":"user","content":"x"}],"format":{"properties":{"a":{"pattern":"x"}}}}`, 400, "format at /properties/a/pattern"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":"x","top_logprobs":21}`, 400, "top_logprobs"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":"x","images":["aGk="]}`, 400, "images"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":"x","suffix":"y"}`, 400, "suffix"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":"x","context":[1,2]}`, 400, "context"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":"x","stream":"no"}`, 400, "stream"},
		{"POST", "/api/chat", `{"model":"llama3.2","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}`, 400, "tools"},
		{"POST", "/api/chat", `{"model":"llama3.2","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}]}`, 400, "does not support tools"},
		{"POST", "/api/chat", `{"model":"llama3.2","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"thing"}}}]}`, 400, "tools[0].function.parameters is not a valid JSON schema"},
		{"POST", "/api/chat", `{"model":"llama3.2","messages":[{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":[1]}}]}]}`, 400, "messages[0].tool_calls[0].function.arguments"},
		{"POST", "/api/chat", `{"model":"llama3.2","messages":[{"role":"wizard","content":"x"}]}`, 400, "role"},
		{"POST", "/api/chat", `{"model":"llama3.2","messages":[{"role":"user","content":"x"}],"think":true}`, 400, "think"},
		{"POST", "/api/generate", `{"model":"llama3.2","prompt":"` + strings.Repeat("x", 5000) + `"}`, 413, "exceeds"},
	} {
		expectOllamaError(t, ts.do(c.method, c.path, c.body, auth), c.status, c.contains)
	}

	// A generation that fails: one object with the error, or the stream's
	// last line.
	expectOllamaError(t, ts.do("POST", "/api/generate", `{"model":"llama3.2","prompt":"explode","stream":false}`, auth), 500, "generation failed")
	lines := ndjson(t, ts.do("POST", "/api/chat", `{"model":"llama3.2","messages":[{"role":"user","content":"explode now"}]}`, auth))
	last := lines[len(lines)-1]
	if msg, _ := last["error"].(string); len(last) != 1 || !strings.Contains(msg, "generation failed") {
		t.Errorf("last line of a failed stream: %v", last)
	}
	// The /v1 API keeps OpenAI's error shape.
	expectError(t, ts.do("GET", "/v1/nope", nil, auth), 404, "not_found", "")
}

func TestOllamaStreamDisconnectCancels(t *testing.T) {
	ts := startOllama(t, serve.Config{}, servetest.Options{StepDelay: 20 * time.Millisecond})
	resp := ts.do("POST", "/api/chat", `{"model":"llama3.2","messages":[{"role":"user","content":"long one"}],"options":{"num_predict":1000}}`, nil)
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() {
		t.Fatal("no first line")
	}
	resp.Body.Close()
	waitFor(t, "the job to be cancelled", 5*time.Second, func() bool {
		st, ok := ts.backend.Status(jobWithPrompt(t, ts.backend, "long one").ID)
		return ok && st.State == "cancelled"
	})
}

// TestOllamaFixturesAreUsed keeps the fixtures and the tests in step: a
// fixture no test reads is a documented example left unchecked.
func TestOllamaFixturesAreUsed(t *testing.T) {
	src, err := os.ReadFile("ollama_test.go")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join("testdata", "ollama"))
	if err != nil {
		t.Fatal(err)
	}
	var unused []string
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		stem := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, ".json"), ".request"), ".response")
		if !strings.Contains(string(src), `"`+name+`"`) && !strings.Contains(string(src), `"`+stem+`"`) {
			unused = append(unused, name)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("fixtures no test reads: %v", unused)
	}
}

// FuzzOllamaRequest posts arbitrary bodies to Ollama's endpoints: the
// server answers with a documented status, errors are {"error":"…"}, a
// stream is lines of JSON, and nothing panics. The documented requests
// are the seeds.
func FuzzOllamaRequest(f *testing.F) {
	entries, err := os.ReadDir(filepath.Join("testdata", "ollama"))
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".request.json") {
			data, err := os.ReadFile(filepath.Join("testdata", "ollama", e.Name()))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(string(data))
		}
	}
	for _, seed := range []string{
		`{"model":"llama3.2","prompt":"x","options":{"num_predict":-2,"stop":"a","top_k":1e300}}`,
		`{"model":"llama3.2","messages":[{"role":"user","content":"\xff"}],"keep_alive":"5m"}`,
		`{"model":"llama3.2","options":[]}`, `{"model":"llama3.2","options":{"seed":-1.5}}`, `[]`, `null`, `{"model":7}`,
	} {
		f.Add(seed)
	}
	backend := servetest.New(servetest.Options{Model: "llama3.2"})
	srv := serve.New(serve.Config{MaxBodyBytes: 4096, MaxPromptBytes: 1024, DefaultMaxTokens: 4, MaxTokensLimit: 8}, zerolog.Nop())
	srv.SetBackend(describedBackend{backend, fakeInfo})
	h := srv.Handler()
	allowed := map[int]bool{200: true, 400: true, 404: true, 413: true, 429: true}
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/api/generate", "/api/chat", "/api/show"} {
			req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
			req.Host = "localhost" // httptest names example.com, which the Host check refuses
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if !allowed[rec.Code] {
				t.Fatalf("%s %q: status %d: %s", path, body, rec.Code, rec.Body.String())
			}
			if rec.Code >= 400 {
				var e map[string]any
				if json.Unmarshal(rec.Body.Bytes(), &e) != nil || len(e) != 1 || e["error"] == nil {
					t.Fatalf("%s %q: error body %q is not {\"error\":…}", path, body, rec.Body.String())
				}
				continue
			}
			for _, line := range strings.Split(strings.TrimSpace(rec.Body.String()), "\n") {
				if !json.Valid([]byte(line)) {
					t.Fatalf("%s %q: line %q is not JSON", path, body, line)
				}
			}
		}
	})
}
