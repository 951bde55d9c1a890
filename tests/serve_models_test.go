package tests

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgllm/wgllm/internal/sharedfiles"
)

// TestServeSeveralModelsThroughOllamaAPI runs `wgllm serve` with a models
// directory: the bundled model is the default, stories260K is served under
// two names, and at most two models are loaded at once. An Ollama-style
// client lists the models, generates with one (its documented greedy
// text), chats with the other (which evicts the first), and names one
// that does not exist.
func TestServeSeveralModelsThroughOllamaAPI(t *testing.T) {
	needGPU(t)
	stories := sharedfiles.File(t, "models/stories260K.gguf")
	dir := t.TempDir()
	for _, name := range []string{"tiny-a", "tiny-b"} {
		if err := os.Symlink(stories, filepath.Join(dir, name+".gguf")); err != nil {
			t.Fatal(err)
		}
	}
	config := filepath.Join(t.TempDir(), "serve.yaml")
	if err := os.WriteFile(config, []byte("models:\n  serve_dir: "+dir+"\n  max_loaded: 2\nengine:\n  max_batch: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "serve", "--config", config, "-m", "../models/kjv-30m-q4_k_m.gguf", "--addr", "127.0.0.1:0", "--log-format", "json")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if t.Failed() {
			t.Logf("server log:\n%s", lastLines(stderr.String(), 30))
		}
	}()
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no address printed: %v", err)
	}
	base := strings.TrimSuffix(strings.Fields(line)[2], "/") // "wgllm: serving http://ADDR/ (…)"
	go io.Copy(io.Discard, stdout)

	deadline := time.Now().Add(3 * time.Minute)
	for {
		resp, err := http.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("/health never answered 200")
		}
		time.Sleep(200 * time.Millisecond)
	}
	post := func(path, body string) (int, string) {
		t.Helper()
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	running := func() string {
		t.Helper()
		resp, err := http.Get(base + "/api/ps")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ps struct{ Models []struct{ Name string } }
		if err := json.NewDecoder(resp.Body).Decode(&ps); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range ps.Models {
			names = append(names, m.Name)
		}
		sort.Strings(names)
		return strings.Join(names, ",")
	}

	resp, err := http.Get(base + "/api/tags")
	if err != nil {
		t.Fatal(err)
	}
	var tags struct {
		Models []struct {
			Name    string
			Size    int64
			Details struct {
				Family            string
				ParameterSize     string `json:"parameter_size"`
				QuantizationLevel string `json:"quantization_level"`
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&tags); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var listed []string
	for _, m := range tags.Models {
		listed = append(listed, m.Name+" "+m.Details.Family+" "+m.Details.ParameterSize+" "+m.Details.QuantizationLevel)
	}
	if got := strings.Join(listed, "; "); got != "kjv-30m:latest llama 29M Q4_K_M; tiny-a:latest llama 293K F32; tiny-b:latest llama 293K F32" {
		t.Errorf("/api/tags: %s", got)
	}
	if got := running(); got != "kjv-30m:latest" {
		t.Errorf("loaded before any request: %s", got)
	}
	// The digest is the file's sha256, computed in the background.
	data, err := os.ReadFile(stories)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%x", sha256.Sum256(data))
	digestDeadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/api/tags")
		if err != nil {
			t.Fatal(err)
		}
		var tags struct {
			Models []struct{ Name, Digest string }
		}
		err = json.NewDecoder(resp.Body).Decode(&tags)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		digest := ""
		for _, m := range tags.Models {
			if m.Name == "tiny-b:latest" {
				digest = m.Digest
			}
		}
		if digest == want {
			break
		}
		if digest != "" || time.Now().After(digestDeadline) {
			t.Fatalf("tiny-b digest %q, want the file's sha256 %s", digest, want)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// llama2.c's documented greedy text, from tiny-a, loaded for this request.
	code, body := post("/api/generate", `{"model":"tiny-a","prompt":"","raw":true,"stream":false,"options":{"temperature":0,"num_predict":12}}`)
	if code != http.StatusOK || !strings.Contains(body, `"done_reason":"load"`) {
		t.Fatalf("load tiny-a: %d %s", code, body)
	}
	code, body = post("/api/generate", `{"model":"tiny-a","prompt":"Once upon a time","raw":true,"stream":false,"options":{"temperature":0,"num_predict":12}}`)
	var gen struct {
		Response, DoneReason string
		EvalCount            int   `json:"eval_count"`
		EvalDuration         int64 `json:"eval_duration"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &gen) != nil {
		t.Fatalf("generate: %d %s", code, body)
	}
	if want := ", there was a little girl named Lily."; !strings.HasPrefix(gen.Response, want) || gen.EvalCount != 12 || gen.EvalDuration <= 0 {
		t.Errorf("tiny-a generated %q (eval_count %d, eval_duration %d), want it to start %q", gen.Response, gen.EvalCount, gen.EvalDuration, want)
	}
	if got := running(); got != "kjv-30m:latest,tiny-a:latest" {
		t.Errorf("loaded after tiny-a: %s", got)
	}

	// tiny-b needs tiny-a's place (max_loaded 2; the default stays).
	code, body = post("/api/chat", `{"model":"tiny-b","messages":[{"role":"user","content":"Tom had a little"}],"options":{"temperature":0,"num_predict":4}}`)
	lines := strings.Split(strings.TrimSpace(body), "\n")
	if code != http.StatusOK || len(lines) < 2 || !strings.Contains(lines[len(lines)-1], `"done":true`) {
		t.Fatalf("chat: %d %s", code, body)
	}
	if got := running(); got != "kjv-30m:latest,tiny-b:latest" {
		t.Errorf("loaded after tiny-b: %s (tiny-a should have been evicted)", got)
	}

	code, body = post("/v1/chat/completions", `{"model":"llama3","messages":[{"role":"user","content":"x"}]}`)
	if code != http.StatusNotFound || !strings.Contains(body, "model_not_found") {
		t.Errorf("unknown model: %d %s", code, body)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("serve exited with %v after SIGTERM", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
}
