package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestChatPageAgainstRealServer drives the bundled chat page in headless
// Chromium against the real server on the bundled model: the page's own
// browser steps (web's TestChatPageAgainstServer: send a prompt, see text
// stream in, press stop, hostile output stays text) run in a child `go
// test` pointed at this server. Screenshots go to $WGLLM_ARTIFACTS
// (default: artifacts/ in the repository).
func TestChatPageAgainstRealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	ls := startServer(t, "../models/kjv-30m-q4_k_m.gguf", 4)
	artifacts := os.Getenv("WGLLM_ARTIFACTS")
	if artifacts == "" {
		abs, _ := filepath.Abs("../artifacts")
		artifacts = abs
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "test", "-count=1", "-v", "-timeout", "25m", "-run", "^TestChatPageAgainstServer$", "../web")
	cmd.Env = append(os.Environ(), "WGLLM_E2E_URL="+ls.base+"/", "WGLLM_E2E_MODEL=test-model", "WGLLM_ARTIFACTS="+artifacts,
		"WGLLM_E2E_REPLY_TIMEOUT=8m")
	out, err := cmd.CombinedOutput()
	text := string(out)
	if strings.Contains(text, "--- SKIP") && strings.Contains(strings.ToLower(text), "chromium") {
		t.Skipf("no Chromium: %s", lastLines(text, 3))
	}
	if err != nil || !strings.Contains(text, "--- PASS: TestChatPageAgainstServer") {
		t.Fatalf("browser steps against the real server failed: %v\n%s", err, lastLines(text, 40))
	}
	t.Logf("screenshots in %s", artifacts)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
