// Package testdata finds the project's shared test files (models, tokenizer
// vectors, eval text) for tests. The repository is cloned to <x>/main (or a
// worktree below <x>) with the shared files at <x>/shared, so the lookup walks
// up from the working directory; tests skip when the files are absent.
//
// Note: the go tool leaves directories named testdata out of ./... patterns,
// so `go vet ./...` does not visit this package; vet it by its path.
package testdata

import (
	"os"
	"path/filepath"
	"testing"
)

// EnvVar, when set, names the shared directory and overrides the search.
const EnvVar = "WGLLM_SHARED"

// FindShared returns the shared directory, or "" when there is none: the
// value of $WGLLM_SHARED if it holds models/, else the first <dir>/shared/models
// found walking up from the working directory.
func FindShared() string {
	if d := os.Getenv(EnvVar); d != "" {
		if isDir(filepath.Join(d, "models")) {
			return d
		}
		return ""
	}
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for dir := wd; ; {
		cand := filepath.Join(dir, "shared")
		if isDir(filepath.Join(cand, "models")) {
			return cand
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// SharedDir returns the shared directory or skips the test.
func SharedDir(t testing.TB) string {
	t.Helper()
	d := FindShared()
	if d == "" {
		t.Skipf("shared test files not found (no shared/models beside or above the working directory; set $%s)", EnvVar)
	}
	return d
}

// File returns the path of a file below the shared directory (for example
// "models/kjv-30m-f16.gguf"), or skips the test when it is absent.
func File(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(SharedDir(t), filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared test file %s absent: %v", rel, err)
	}
	return p
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
