package hub_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgllm/wgllm/internal/hub"
)

// TestDripFeedingHubIsLeft: a hub that sends a byte every 20 ms never
// trips the stall timeout (each read restarts it), so the download waited
// forever. With a rate floor each attempt ends after one window, is
// retried, and the download gives up with the rate in the error.
func TestDripFeedingHubIsLeft(t *testing.T) {
	s, _ := newHub(t)
	c := client(s)
	c.MinRate, c.RateWindow, c.Retries = 1024, 300*time.Millisecond, 1
	f := find(t, list(t, c), "stories260K.gguf")
	s.Drip(f.Path, 20*time.Millisecond)
	var retried []error
	c.OnRetry = func(_ int, err error, _ time.Duration) { retried = append(retried, err) }
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	err := c.Download(ctx, repo, "main", f, filepath.Join(t.TempDir(), "m.gguf"), nil)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "below the minimum") || !strings.Contains(err.Error(), "hub.min_rate") {
		t.Fatalf("drip-fed download: %v after %v", err, took)
	}
	if ctx.Err() != nil {
		t.Fatalf("the rate floor did not end the download; the test's own deadline did: %v", err)
	}
	if len(retried) != 1 {
		t.Errorf("%d retries, want 1", len(retried))
	}
	t.Logf("given up after %v: %v", took, err)
}

// TestDownloadDeadline: Client.Deadline bounds the whole download, and the
// error says so (and that the pull resumes).
func TestDownloadDeadline(t *testing.T) {
	s, _ := newHub(t)
	c := client(s)
	c.MinRate, c.Deadline = -1, 400*time.Millisecond
	f := find(t, list(t, c), "stories260K.gguf")
	s.Drip(f.Path, 5*time.Millisecond)
	start := time.Now()
	err := c.Download(context.Background(), repo, "main", f, filepath.Join(t.TempDir(), "m.gguf"), nil)
	if err == nil || !strings.Contains(err.Error(), "deadline") || !strings.Contains(err.Error(), "resume") {
		t.Fatalf("download past its deadline: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v with a deadline of 400ms", took)
	}
}

// TestNonGGUFIsNotVerified: a .gguf whose bytes match the listed sha256 but
// are not GGUF was reported "pulled and verified". Now it is an error
// wrapping ErrNotGGUF, nothing is left behind, and a real GGUF still passes.
func TestNonGGUFIsNotVerified(t *testing.T) {
	s, files := newHub(t)
	fake := map[string][]byte{
		"html.gguf":      []byte("<!doctype html><title>Sign in</title>"),
		"badmagic.gguf":  append([]byte("GGUX"), bytes.Repeat([]byte{0}, 64)...),
		"truncated.gguf": files["stories260K.gguf"][:4096],
	}
	for name, b := range fake {
		s.Add(repo, name, b, true)
	}
	c := client(s)
	listed := list(t, c)
	for name := range fake {
		dir := t.TempDir()
		err := c.Download(context.Background(), repo, "main", find(t, listed, name), filepath.Join(dir, name), nil)
		if !errors.Is(err, hub.ErrNotGGUF) {
			t.Errorf("%s: %v, want ErrNotGGUF", name, err)
			continue
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%s: left %d files behind", name, len(entries))
		}
	}
	dest := filepath.Join(t.TempDir(), "ok.gguf")
	if err := c.Download(context.Background(), repo, "main", find(t, listed, "stories260K.gguf"), dest, nil); err != nil {
		t.Fatalf("a real GGUF: %v", err)
	}
	checkDone(t, dest, files["stories260K.gguf"])
}
