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
	dir := findSharedDir()
	if dir == "" {
		t.Skip("shared data directory not found: no ancestor of the working directory has shared/testdata (expected <x>/shared beside the <x>/main checkout)")
	}
	return dir
}

// findSharedDir is sharedDir without the skip: "" when there is none.
func findSharedDir() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		cand := filepath.Join(dir, "shared")
		if st, err := os.Stat(filepath.Join(cand, "testdata")); err == nil && st.IsDir() {
			return cand
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
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
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s not available: %v", path, err)
	}
	return loadTokenizerFile(t, path)
}

// loadTokenizerFile builds the tokenizer of the GGUF file at path, once per
// test binary.
func loadTokenizerFile(t testing.TB, path string) *Tokenizer {
	t.Helper()
	tokCacheMu.Lock()
	defer tokCacheMu.Unlock()
	if tok, ok := tokCache[path]; ok {
		return tok
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
