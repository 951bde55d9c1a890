package serve_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// /wasm/ serves the two files of the browser runtime from WasmDir, and
// nothing else; a missing build gets a 404 that says to run make wasm.
func TestWasmFiles(t *testing.T) {
	dir := t.TempDir()
	wasm := []byte("\x00asm\x01\x00\x00\x00")
	if err := os.WriteFile(filepath.Join(dir, "wgllm.wasm"), wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("no"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := start(t, serve.Config{WasmDir: dir, APIKey: "k"}, &servetest.Options{})
	resp := ts.do("GET", "/wasm/wgllm.wasm", nil, nil) // no key needed: it is code, not the model
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != string(wasm) || resp.Header.Get("Content-Type") != "application/wasm" {
		t.Errorf("GET /wasm/wgllm.wasm: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	e := expectError(t, ts.do("GET", "/wasm/wasm_exec.js", nil, nil), http.StatusNotFound, "not_found", "")
	if !strings.Contains(e.Error.Message, "make wasm") {
		t.Errorf("missing build: message %q does not say to run make wasm", e.Error.Message)
	}
	expectError(t, ts.do("GET", "/wasm/secret.txt", nil, nil), http.StatusNotFound, "not_found", "")
	expectError(t, ts.do("GET", "/wasm/..%2fsecret.txt", nil, nil), http.StatusNotFound, "not_found", "")
	expectError(t, ts.do("POST", "/wasm/wgllm.wasm", nil, nil), http.StatusMethodNotAllowed, "method_not_allowed", "")

	unset := start(t, serve.Config{}, &servetest.Options{})
	expectError(t, unset.do("GET", "/wasm/wgllm.wasm", nil, nil), http.StatusNotFound, "not_found", "")
}

// /v1/models/{model}/file sends only the file ModelFile names, behind the
// API key.
func TestModelFileDownload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.gguf")
	data := []byte("GGUF fake model bytes")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var asked []string
	ts := start(t, serve.Config{APIKey: "k", ModelFile: func(name string) (string, bool) {
		asked = append(asked, name)
		return path, name == ""
	}}, &servetest.Options{Model: "tiny"})
	key := http.Header{"Authorization": {"Bearer k"}}

	expectError(t, ts.do("GET", "/v1/models/tiny/file", nil, nil), http.StatusUnauthorized, "invalid_api_key", "")
	resp := ts.do("GET", "/v1/models/tiny/file", nil, key)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != string(data) || resp.Header.Get("Content-Length") != "21" ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), `filename="m.gguf"`) {
		t.Errorf("GET file: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	expectError(t, ts.do("GET", "/v1/models/other/file", nil, key), http.StatusNotFound, "model_not_found", "model")
	if len(asked) != 2 || asked[0] != "" || asked[1] != "other" {
		t.Errorf("ModelFile asked for %q; want the default as \"\", then \"other\"", asked)
	}
	// The model's own description is still at /v1/models/{model}.
	resp = ts.do("GET", "/v1/models/tiny", nil, key)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /v1/models/tiny: %d", resp.StatusCode)
	}

	none := start(t, serve.Config{}, &servetest.Options{Model: "tiny"})
	expectError(t, none.do("GET", "/v1/models/tiny/file", nil, nil), http.StatusNotFound, "model_not_found", "model")
}
