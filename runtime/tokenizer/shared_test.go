package tokenizer

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/wgllm/wgllm/runtime/gguf"
)

// sharedDir finds the project's shared data directory (a "shared" folder
// with testdata inside) by walking up from the working directory: the
// repository is cloned to <x>/main with <x>/shared beside it.
func sharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for {
		cand := filepath.Join(dir, "shared")
		if st, err := os.Stat(filepath.Join(cand, "testdata")); err == nil && st.IsDir() {
			return cand
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("shared data directory not found: no ancestor of the working directory has shared/testdata (expected <x>/shared beside the <x>/main checkout)")
		}
		dir = parent
	}
}

var (
	tokCacheMu sync.Mutex
	tokCache   = map[string]*Tokenizer{}
)

// loadTokenizer opens shared/<rel> and builds its tokenizer, once per test binary.
func loadTokenizer(t testing.TB, rel string) *Tokenizer {
	t.Helper()
	path := filepath.Join(sharedDir(t), rel)
	tokCacheMu.Lock()
	defer tokCacheMu.Unlock()
	if tok, ok := tokCache[path]; ok {
		return tok
	}
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s not available: %v", path, err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	tok, err := FromGGUF(f)
	if err != nil {
		t.Fatalf("FromGGUF(%s): %v", path, err)
	}
	tokCache[path] = tok
	return tok
}
