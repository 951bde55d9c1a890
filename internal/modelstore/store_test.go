package modelstore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func touch(t *testing.T, path string, size int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newStore(t *testing.T) Store {
	t.Helper()
	s := Store{Dir: t.TempDir()}
	for _, name := range []string{
		"bartowski/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q4_K_M.gguf",
		"bartowski/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q8_0.gguf",
		"Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf",
		"wgllm/kjv/sub/kjv-30m-f16.gguf",
	} {
		touch(t, filepath.Join(s.Dir, filepath.FromSlash(name)), 10)
	}
	// Not models: a download in progress, stray files, a file outside any repo.
	touch(t, filepath.Join(s.Dir, "wgllm/kjv/kjv-30m-q8_0.gguf.partial"), 5)
	touch(t, filepath.Join(s.Dir, "wgllm/kjv/notes.txt"), 5)
	touch(t, filepath.Join(s.Dir, "loose.gguf"), 5)
	touch(t, filepath.Join(s.Dir, "owner/loose.gguf"), 5)
	return s
}

func TestList(t *testing.T) {
	s := newStore(t)
	ms, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
		if m.Size != 10 || !strings.HasPrefix(m.Path, s.Dir) {
			t.Errorf("%s: size %d, path %s", m.Name, m.Size, m.Path)
		}
	}
	want := "Qwen/Qwen2.5-0.5B-Instruct-GGUF:qwen2.5-0.5b-instruct-q4_k_m.gguf," +
		"bartowski/Llama-3.2-1B-Instruct-GGUF:Llama-3.2-1B-Instruct-Q4_K_M.gguf," +
		"bartowski/Llama-3.2-1B-Instruct-GGUF:Llama-3.2-1B-Instruct-Q8_0.gguf," +
		"wgllm/kjv:sub/kjv-30m-f16.gguf"
	if got := strings.Join(names, ","); got != want {
		t.Errorf("list\n%s\nwant\n%s", got, want)
	}
	if ms, err := (Store{Dir: filepath.Join(s.Dir, "missing")}).List(); err != nil || len(ms) != 0 {
		t.Errorf("missing store: %v, %v", ms, err)
	}
}

func TestResolve(t *testing.T) {
	s := newStore(t)
	ok := map[string]string{
		"bartowski/Llama-3.2-1B-Instruct-GGUF:Llama-3.2-1B-Instruct-Q8_0.gguf": "Llama-3.2-1B-Instruct-Q8_0.gguf",
		"bartowski/Llama-3.2-1B-Instruct-GGUF:q4_k_m":                          "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
		"Qwen/Qwen2.5-0.5B-Instruct-GGUF":                                      "qwen2.5-0.5b-instruct-q4_k_m.gguf",
		"Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M":                               "qwen2.5-0.5b-instruct-q4_k_m.gguf",
		"wgllm/kjv:sub/kjv-30m-f16.gguf":                                       "sub/kjv-30m-f16.gguf",
		"kjv-30m-f16":                                                          "sub/kjv-30m-f16.gguf",
		"Llama-3.2-1B-Instruct-Q8_0.gguf":                                      "Llama-3.2-1B-Instruct-Q8_0.gguf",
	}
	for name, file := range ok {
		m, err := s.Resolve(name)
		if err != nil || m.File != file {
			t.Errorf("Resolve(%q) = %q, %v; want %q", name, m.File, err, file)
		}
	}
	bad := map[string]string{
		"bartowski/Llama-3.2-1B-Instruct-GGUF":      "matches 2 models in the store, name one: bartowski/Llama-3.2-1B-Instruct-GGUF:Llama-3.2-1B-Instruct-Q4_K_M.gguf, bartowski/Llama-3.2-1B-Instruct-GGUF:Llama-3.2-1B-Instruct-Q8_0.gguf",
		"bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K": "not in the model store",
		"nobody/nothing":             "not in the model store",
		"kjv-30m-q8_0":               "not in the model store", // only a partial download
		"models/kjv-30m-q4_k_m.gguf": "not in the model store",
	}
	for name, want := range bad {
		if _, err := s.Resolve(name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Resolve(%q): %v, want %q", name, err, want)
		}
	}
	if _, err := s.Resolve("nobody/nothing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("not found is not ErrNotFound: %v", err)
	}
}

func TestRemove(t *testing.T) {
	s := newStore(t)
	touch(t, filepath.Join(s.Dir, "Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf.partial"), 3)
	m, err := s.Remove("Qwen/Qwen2.5-0.5B-Instruct-GGUF")
	if err != nil || m.File != "qwen2.5-0.5b-instruct-q4_k_m.gguf" {
		t.Fatalf("Remove: %v, %v", m, err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "Qwen")); !os.IsNotExist(err) {
		t.Errorf("emptied owner directory kept: %v", err)
	}
	if _, err := os.Stat(s.Dir); err != nil {
		t.Errorf("store root removed: %v", err)
	}
	// An ambiguous name removes nothing.
	if _, err := s.Remove("bartowski/Llama-3.2-1B-Instruct-GGUF"); err == nil {
		t.Error("ambiguous remove succeeded")
	}
	if ms, _ := s.List(); len(ms) != 3 {
		t.Errorf("%d models left, want 3", len(ms))
	}
	// Only an interrupted download: removed by its full name.
	if _, err := s.Remove("wgllm/kjv:kjv-30m-q8_0.gguf"); err != nil {
		t.Errorf("removing a partial download: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "wgllm/kjv/kjv-30m-q8_0.gguf.partial")); !os.IsNotExist(err) {
		t.Errorf("partial kept: %v", err)
	}
	if _, err := s.Remove("wgllm/kjv:nothing.gguf"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing nothing: %v", err)
	}
}

func TestNames(t *testing.T) {
	for ref, want := range map[string][2]string{
		"bartowski/Llama-3.2-1B-Instruct-GGUF":                  {"bartowski/Llama-3.2-1B-Instruct-GGUF", ""},
		"hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M":     {"bartowski/Llama-3.2-1B-Instruct-GGUF", "Q4_K_M"},
		"https://huggingface.co/o/r:sub/m.gguf":                 {"o/r", "sub/m.gguf"},
		"TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:tinyllama.gguf": {"TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF", "tinyllama.gguf"},
		"a_b.c/x-y": {"a_b.c/x-y", ""},
		"Qwen/Qwen2.5-0.5B-Instruct-GGUF:qwen2.5-0.5b-q4_k_m.gguf": {"Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-q4_k_m.gguf"},
	} {
		repo, file, err := ParseRef(ref)
		if err != nil || repo != want[0] || file != want[1] {
			t.Errorf("ParseRef(%q) = %q, %q, %v; want %q, %q", ref, repo, file, err, want[0], want[1])
		}
	}
	for _, ref := range []string{"", "noslash", "a/b/c", "../x", "a/..", "-a/b", "a/b-", "a--b/c", "a/b..c", "o/r:../x.gguf", "o/r:/abs.gguf", "o/r:a\\b.gguf", "o/r:a//b.gguf", "o/r:x\x00.gguf", "o r/x", strings.Repeat("a", 97) + "/b"} {
		if _, _, err := ParseRef(ref); err == nil {
			t.Errorf("ParseRef(%q) accepted", ref)
		}
	}
	if p, err := (Store{Dir: "/s"}).Path("o/r", "sub/m.gguf"); err != nil || p != filepath.FromSlash("/s/o/r/sub/m.gguf") {
		t.Errorf("Path: %q, %v", p, err)
	}
	if _, err := (Store{}).Path("o/r", "m.gguf"); err == nil {
		t.Error("Path with no store directory accepted")
	}
}

func TestHasTag(t *testing.T) {
	yes := [][2]string{{"m-Q4_K_M.gguf", "q4_k_m"}, {"m.Q8_0.gguf", "Q8_0"}, {"dir/q6_k.gguf", "Q6_K"}, {"m-f16.gguf", "F16"}}
	no := [][2]string{{"m-Q4_K_M.gguf", "Q4_K"}, {"m-Q4_K_M.gguf", "K_M"}, {"mq8_0.gguf", "Q8_0"}, {"Q8_0/m.gguf", "Q8_0"}, {"m.gguf", ""}}
	for _, c := range yes {
		if !HasTag(c[0], c[1]) {
			t.Errorf("HasTag(%q, %q) = false", c[0], c[1])
		}
	}
	for _, c := range no {
		if HasTag(c[0], c[1]) {
			t.Errorf("HasTag(%q, %q) = true", c[0], c[1])
		}
	}
}
