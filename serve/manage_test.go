package serve_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// fakeStore is a ModelManager holding names.
type fakeStore struct {
	mu     sync.Mutex
	models map[string]bool
}

func (f *fakeStore) Pull(ctx context.Context, ref string, progress func(serve.PullProgress)) (string, error) {
	if strings.HasPrefix(ref, "missing/") {
		return "", fmt.Errorf("%w: %s: repository not found", serve.ErrUnknownModel, ref)
	}
	for done := int64(0); done <= 100; done += 50 {
		progress(serve.PullProgress{Status: "pulling x.gguf", Digest: "sha256:ab", Total: 100, Completed: done})
	}
	f.mu.Lock()
	f.models[ref] = true
	f.mu.Unlock()
	return ref, nil
}

func (f *fakeStore) Delete(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.models[name] {
		return fmt.Errorf("%w: %s", serve.ErrUnknownModel, name)
	}
	delete(f.models, name)
	return nil
}

func TestOllamaPullDelete(t *testing.T) {
	store := &fakeStore{models: map[string]bool{}}
	ts := start(t, serve.Config{Manager: store}, &servetest.Options{})
	lines := ndjson(t, ts.do("POST", "/api/pull", `{"model":"owner/repo:Q4_K_M"}`, nil))
	if len(lines) < 4 || lines[0]["status"] != "pulling manifest" || lines[len(lines)-1]["status"] != "success" {
		t.Fatalf("pull lines: %v", lines)
	}
	var sawDone bool
	for _, l := range lines {
		if l["digest"] == "sha256:ab" && l["completed"] == 100.0 && l["total"] == 100.0 {
			sawDone = true
		}
	}
	if !sawDone || !store.models["owner/repo:Q4_K_M"] {
		t.Errorf("no completed download line, or not stored: %v", lines)
	}
	var one map[string]any
	decode(t, ts.do("POST", "/api/pull", `{"model":"a/b","stream":false}`, nil), &one)
	if one["status"] != "success" || len(one) != 1 {
		t.Errorf("pull stream false: %v", one)
	}
	expectOllamaError(t, ts.do("POST", "/api/pull", `{"model":"missing/x","stream":false}`, nil), 404, "not found")
	last := ndjson(t, ts.do("POST", "/api/pull", `{"model":"missing/x"}`, nil))
	if msg, _ := last[len(last)-1]["error"].(string); !strings.Contains(msg, "not found") {
		t.Errorf("a failed streamed pull ends with %v", last[len(last)-1])
	}
	expectOllamaError(t, ts.do("POST", "/api/pull", `{}`, nil), 400, "model is required")

	resp := ts.do("DELETE", "/api/delete", `{"model":"a/b"}`, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || store.models["a/b"] {
		t.Errorf("delete: %d", resp.StatusCode)
	}
	expectOllamaError(t, ts.do("DELETE", "/api/delete", `{"model":"a/b"}`, nil), 404, "a/b")
	expectOllamaError(t, ts.do("DELETE", "/api/delete", `{"model":"fake-model"}`, nil), 400, "cannot be deleted")
	expectOllamaError(t, ts.do("POST", "/api/delete", `{"model":"x"}`, nil), 405, "not allowed")

	// Without a manager: 501.
	ts2 := start(t, serve.Config{}, &servetest.Options{})
	expectOllamaError(t, ts2.do("POST", "/api/pull", `{"model":"a/b"}`, nil), 501, "no model store")
}
