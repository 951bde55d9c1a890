package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/gguf"
)

// TestRealClients runs tests/clients (node --test): the openai, ollama and
// LangChain JavaScript packages, at the versions of its lockfile, against
// `wgllm serve` on a copy of the bundled model whose GGUF carries a
// Qwen-style tool template (tests/clients/tool-template.jinja).
func TestRealClients(t *testing.T) {
	needGPU(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed (make deps-test installs it)")
	}
	if _, err := os.Stat("clients/node_modules/.package-lock.json"); err != nil {
		t.Skip("tests/clients has no node_modules: run make deps-test (make test does), which runs npm ci there")
	}
	tmpl, err := os.ReadFile("clients/tool-template.jinja")
	if err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(t.TempDir(), "kjv-tools.gguf")
	withChatTemplate(t, kjvModel, model, string(tmpl))

	sb := serveBinary(t, []string{"WGLLM_ENGINE_MAX_BATCH=4"}, "-m", model)
	sb.waitHealthy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "--test-concurrency=1")
	cmd.Dir = "clients"
	cmd.Env = append(os.Environ(), "WGLLM_URL="+sb.base, "WGLLM_MODEL=kjv-tools")
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	select {
	case exit := <-sb.exited:
		// Not the clients' fault: lavapipe segfaults now and then on
		// longer prompts (docs/RELIABILITY.md, "Open").
		t.Fatalf("wgllm serve died during the client tests (%v); the tests after that failed to connect", exit)
	default:
	}
	if err != nil {
		t.Fatalf("the client tests failed: %v", err)
	}
	if !strings.Contains(string(out), "# fail 0") {
		t.Fatal("the client tests did not report # fail 0")
	}
}

// withChatTemplate copies the GGUF at src to dst with its chat template
// replaced, and checks that the template parses.
func withChatTemplate(t *testing.T, src, dst, template string) {
	t.Helper()
	if _, err := chat.New(template, chat.Options{}); err != nil {
		t.Fatalf("the template does not parse: %v", err)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := gguf.ParseBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	meta := make([]gguf.KV, 0, len(f.Keys)+1)
	replaced := false
	for _, k := range f.Keys {
		v := f.Metadata[k]
		switch k {
		case chat.KeyChatTemplate:
			v, replaced = gguf.Val(template), true
		case "general.name":
			v = gguf.Val("kjv-tools")
		}
		meta = append(meta, gguf.KV{Key: k, Value: v})
	}
	if !replaced {
		meta = append(meta, gguf.KV{Key: chat.KeyChatTemplate, Value: gguf.Val(template)})
	}
	tensors := make([]gguf.TensorToWrite, len(f.Tensors))
	for i, ti := range f.Tensors {
		start := f.DataOffset + ti.Offset
		tensors[i] = gguf.TensorToWrite{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: data[start : start+ti.Size]}
	}
	if err := gguf.WriteFile(dst, meta, tensors); err != nil {
		t.Fatal(err)
	}
}
