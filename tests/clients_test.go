package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wgllm/wgllm/internal/ggufedit"
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

	files, err := filepath.Glob("clients/test/*.test.mjs")
	if err != nil || len(files) == 0 {
		t.Fatalf("no client tests in tests/clients/test: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".test.mjs"), func(t *testing.T) {
			runClientTests(t, node, model, filepath.Base(f))
		})
	}
}

var (
	passSummary = regexp.MustCompile(`(?m)^\s*(ℹ|#) pass [1-9]`)
	failNone    = regexp.MustCompile(`(?m)^\s*(ℹ|#) fail 0$`)
)

// crashRetries is how many fresh servers a test file gets when the server
// dies under it: lavapipe segfaults now and then on longer prompts
// (docs/RELIABILITY.md, "Open"), which is not the clients' doing. Each
// crash is logged.
const crashRetries = 3

// runClientTests runs one test file of tests/clients against a fresh
// `wgllm serve` of model.
func runClientTests(t *testing.T, node, model, file string) {
	for attempt := 1; ; attempt++ {
		sb := serveBinary(t, []string{"WGLLM_ENGINE_MAX_BATCH=4"}, "-m", model)
		sb.waitHealthy(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "--test-concurrency=1", "test/"+file)
		cmd.Dir = "clients"
		cmd.Env = append(os.Environ(), "WGLLM_URL="+sb.base, "WGLLM_MODEL=kjv-tools")
		out, err := cmd.CombinedOutput()
		cancel()
		t.Logf("node --test %s:\n%s", file, out)
		select {
		case exit := <-sb.exited:
			if attempt > crashRetries {
				t.Fatalf("wgllm serve died under the client tests %d times (last: %v): docs/RELIABILITY.md, \"Open\"", attempt, exit)
			}
			t.Logf("CRASH: wgllm serve died under the client tests (%v; the lavapipe segfault of docs/RELIABILITY.md); again on a fresh server", exit)
			continue
		default:
		}
		if err != nil {
			t.Fatalf("the client tests failed: %v", err)
		}
		// The summary: "ℹ pass N" and "ℹ fail 0" (spec reporter).
		if !passSummary.Match(out) || !failNone.Match(out) {
			t.Fatal("the client tests did not report passes and no failures")
		}
		return
	}
}

// withChatTemplate copies the GGUF at src to dst with its chat template
// replaced, and checks that the template parses.
func withChatTemplate(t *testing.T, src, dst, template string) {
	t.Helper()
	if _, err := chat.New(template, chat.Options{}); err != nil {
		t.Fatalf("the template does not parse: %v", err)
	}
	ggufedit.CopyWithTemplate(t, src, dst, template, func(*gguf.File) map[string]gguf.Value {
		return map[string]gguf.Value{"general.name": gguf.Val("kjv-tools")}
	})
}
