package tests

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Ollama's /api/pull on the real server downloads from the hub into the
// store with NDJSON progress, and /api/delete removes the model again.
func TestServeOllamaPullDelete(t *testing.T) {
	needGPU(t)
	w := newWithHub(t)
	sb := serveBinary(t, []string{"WGLLM_HUB_URL=" + w.hub.URL, "WGLLM_MODELS_DIR=" + w.store}, "-m", kjvModel)
	sb.waitHealthy(t)

	resp, err := http.Post(sb.base+"/api/pull", "application/json", strings.NewReader(`{"model":"`+kjvRepo+`:Q8_0"}`))
	if err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	resp.Body.Close()
	size := float64(len(w.files["kjv-30m-q8_0.gguf"]))
	var done bool
	for _, l := range lines {
		if l["total"] == size && l["completed"] == size && strings.HasPrefix(l["digest"].(string), "sha256:") {
			done = true
		}
	}
	if len(lines) < 3 || lines[0]["status"] != "pulling manifest" || lines[len(lines)-1]["status"] != "success" || !done {
		t.Fatalf("pull lines: %v", lines)
	}
	path := filepath.Join(w.store, kjvRepo, "kjv-30m-q8_0.gguf")
	if st, err := os.Stat(path); err != nil || st.Size() != int64(size) {
		t.Fatalf("stored file: %v", err)
	}

	req, _ := http.NewRequest(http.MethodDelete, sb.base+"/api/delete", strings.NewReader(`{"model":"`+kjvRepo+`:Q8_0"}`))
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("delete: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the file is still there: %v", err)
	}
	resp, _ = http.DefaultClient.Do(req)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("second delete: %s", resp.Status)
	}
	resp.Body.Close()
	resp, _ = http.Post(sb.base+"/api/pull", "application/json", strings.NewReader(`{"model":"nobody/nothing-GGUF","stream":false}`))
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("pull of an unknown repo: %s", resp.Status)
	}
	resp.Body.Close()
}
