package tests

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// verseTemplate renders "role: content" lines and refuses a chat without
// a system prompt, so a chat that succeeds shows the created model's
// system prompt reached its template.
const verseTemplate = `{% if messages[0].role != 'system' %}{{ raise_exception('no system prompt') }}{% endif %}` +
	`{% for m in messages %}{{ m.role }}: {{ m.content }}
{% endfor %}assistant:`

// Ollama's /api/create and /api/copy on the real server: a model made
// from the bundled GGUF file with its own template, system prompt and
// parameters is listed, shown and served with them, its copy too, and
// deleting the copy leaves the file.
func TestServeOllamaCreateCopy(t *testing.T) {
	needGPU(t)
	store, serveDir := t.TempDir(), t.TempDir()
	sb := serveBinary(t, []string{"WGLLM_MODELS_DIR=" + store, "WGLLM_MODELS_SERVE_DIR=" + serveDir}, "-m", kjvModel)
	sb.waitHealthy(t)
	file, err := filepath.Abs(kjvModel)
	if err != nil {
		t.Fatal(err)
	}
	base := sb.base
	post := func(path string, body any) (int, []byte) {
		t.Helper()
		data, _ := json.Marshal(body)
		resp, err := http.Post(base+path, "application/json", strings.NewReader(string(data)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	const system = "Thou art the Preacher; answer in the words of the King James Bible."
	status, body := post("/api/create", map[string]any{"model": "verse", "from": file, "template": verseTemplate,
		"system": system, "parameters": map[string]any{"temperature": 0, "num_predict": 3, "num_ctx": 256}})
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("create line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	if status != http.StatusOK || len(lines) < 2 || lines[len(lines)-1]["status"] != "success" {
		t.Fatalf("create: %d %s", status, body)
	}
	if status, body = post("/api/copy", map[string]string{"source": "verse:latest", "destination": "verse-copy:v1"}); status != http.StatusOK {
		t.Fatalf("copy: %d %s", status, body)
	}

	listed := func() (tags, models string) {
		var tl struct{ Models []struct{ Name string } }
		var ml struct{ Data []struct{ ID string } }
		get := func(path string, v any) {
			resp, err := http.Get(sb.base + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
		}
		get("/api/tags", &tl)
		get("/v1/models", &ml)
		for _, m := range tl.Models {
			tags += m.Name + " "
		}
		for _, m := range ml.Data {
			models += m.ID + " "
		}
		return tags, models
	}
	tags, models := listed()
	if !strings.Contains(tags, "verse:latest ") || !strings.Contains(tags, "verse-copy:v1 ") ||
		!strings.Contains(models, "verse ") || !strings.Contains(models, "verse-copy:v1 ") {
		t.Fatalf("listed: tags %q, models %q", tags, models)
	}
	var show struct{ Template, System, Parameters string }
	status, body = post("/api/show", map[string]string{"model": "verse-copy:v1"})
	if err := json.Unmarshal(body, &show); err != nil || status != http.StatusOK {
		t.Fatalf("show: %d %s", status, body)
	}
	if show.Template != verseTemplate || show.System != system || !strings.Contains(show.Parameters, "num_predict                    3") {
		t.Errorf("show: %+v", show)
	}

	type chatOut struct {
		Message         struct{ Content string }
		EvalCount       int    `json:"eval_count"`
		PromptEvalCount int    `json:"prompt_eval_count"`
		DoneReason      string `json:"done_reason"`
		Error           string
	}
	chatWith := func(model string, messages ...map[string]string) (int, chatOut) {
		t.Helper()
		var out chatOut
		status, body := post("/api/chat", map[string]any{"model": model, "stream": false, "messages": messages})
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("chat %s: %d %s", model, status, body)
		}
		return status, out
	}
	user := map[string]string{"role": "user", "content": "Who made the heaven and the earth?"}
	status, plain := chatWith("verse", user)
	if status != http.StatusOK || plain.EvalCount < 1 || plain.EvalCount > 3 || plain.DoneReason != "length" {
		t.Fatalf("chat with the created model (its system prompt, num_predict 3): %d %+v", status, plain)
	}
	// The same system prompt sent by the request renders the same prompt;
	// a request's own system prompt replaces the model's.
	_, same := chatWith("verse", map[string]string{"role": "system", "content": system}, user)
	_, other := chatWith("verse", map[string]string{"role": "system", "content": "Be brief."}, user)
	if same.PromptEvalCount != plain.PromptEvalCount || other.PromptEvalCount >= plain.PromptEvalCount {
		t.Errorf("prompt tokens: model's system %d, the same sent %d, a shorter one sent %d",
			plain.PromptEvalCount, same.PromptEvalCount, other.PromptEvalCount)
	}
	// temperature 0 from the parameters: the copy answers the same.
	if _, again := chatWith("verse-copy:v1", user); again.Message.Content != plain.Message.Content || again.PromptEvalCount != plain.PromptEvalCount {
		t.Errorf("the copy answered %+v, the model %+v", again, plain)
	}
	// Without a system prompt the template refuses: it is the template given.
	if status, body = post("/api/create", map[string]any{"model": "nosys", "from": "verse", "system": ""}); status != http.StatusOK {
		t.Fatalf("create nosys: %d %s", status, body)
	}
	if status, out := chatWith("nosys", user); status != http.StatusOK || out.PromptEvalCount != plain.PromptEvalCount {
		t.Errorf("a model created from verse keeps its system prompt: %d %+v", status, out)
	}
	if status, body = post("/api/create", map[string]any{"model": "bare", "from": file, "template": verseTemplate, "stream": false}); status != http.StatusOK {
		t.Fatalf("create bare: %d %s", status, body)
	}
	if status, out := chatWith("bare", user); status/100 != 4 || !strings.Contains(out.Error, "no system prompt") {
		t.Errorf("a model with the template and no system prompt: %d %+v", status, out)
	}

	// Bad input names the field.
	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"model": "x", "from": file, "parameters": map[string]any{"temperature": "hot"}}, "parameters.temperature"},
		{map[string]any{"model": "x", "from": file, "template": "{% for %}"}, "template"},
		{map[string]any{"model": "a b", "from": file}, "model"},
		{map[string]any{"model": "x", "from": filepath.Join(serveDir, "absent.gguf")}, "absent.gguf"},
		{map[string]any{"model": "x", "from": "nothing", "stream": false}, "nothing"},
	} {
		status, body := post("/api/create", c.body)
		if status/100 != 4 || !strings.Contains(string(body), c.field) {
			t.Errorf("create %v: %d %s", c.body, status, body)
		}
	}
	if status, body = post("/api/copy", map[string]string{"source": "nothing", "destination": "x"}); status != http.StatusNotFound {
		t.Errorf("copy of an unknown model: %d %s", status, body)
	}

	req, _ := http.NewRequest(http.MethodDelete, sb.base+"/api/delete", strings.NewReader(`{"model":"verse-copy:v1"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("delete: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("deleting a created model removed its file: %v", err)
	}
	if tags, _ := listed(); strings.Contains(tags, "verse-copy") || !strings.Contains(tags, "verse:latest ") {
		t.Errorf("after delete: %q", tags)
	}
	if status, _ = post("/api/show", map[string]string{"model": "verse-copy:v1"}); status != http.StatusNotFound {
		t.Errorf("show after delete: %d", status)
	}

	// One-model mode: `serve -m verse` serves the created model under its
	// name with its template, system prompt and parameters; creating
	// another there is refused (it could not be served).
	one := serveBinary(t, []string{"WGLLM_MODELS_DIR=" + store}, "-m", "verse")
	one.waitHealthy(t)
	base = one.base
	if status, out := chatWith("verse", user); status != http.StatusOK || out.PromptEvalCount != plain.PromptEvalCount ||
		out.Message.Content != plain.Message.Content || out.DoneReason != "length" {
		t.Errorf("serve -m verse: %d %+v, want %+v", status, out, plain)
	}
	if status, body = post("/api/show", map[string]string{"model": "verse"}); status != http.StatusOK || !strings.Contains(string(body), system) {
		t.Errorf("show on serve -m verse: %d %s", status, body)
	}
	if status, body = post("/api/create", map[string]any{"model": "y", "from": "verse"}); status != http.StatusNotImplemented {
		t.Errorf("create in one-model mode: %d %s", status, body)
	}
}
