package tests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/hub/hubtest"
	"github.com/wgllm/wgllm/internal/sharedfiles"
)

const kjvRepo = "wgllm/kjv-30m-GGUF"

// withHub runs the binary against a fake hub serving the shared kjv-30m
// files and a fresh model store.
type withHub struct {
	hub   *hubtest.Server
	store string
	files map[string][]byte
}

func newWithHub(t *testing.T) *withHub {
	t.Helper()
	w := &withHub{hub: hubtest.New(), store: t.TempDir(), files: map[string][]byte{}}
	t.Cleanup(w.hub.Close)
	for _, name := range []string{"kjv-30m-q4_0.gguf", "kjv-30m-q4_k_m.gguf", "kjv-30m-q8_0.gguf"} {
		b, err := os.ReadFile(sharedfiles.File(t, "models/"+name))
		if err != nil {
			t.Fatal(err)
		}
		w.files[name] = b
		w.hub.Add(kjvRepo, name, b, true)
	}
	w.hub.Add(kjvRepo, "README.md", []byte("# kjv-30m\n"), false)
	return w
}

// run runs wgllm with the hub and store in its environment.
func (w *withHub) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "WGLLM_HUB_URL="+w.hub.URL, "WGLLM_MODELS_DIR="+w.store, "WGLLM_LOG_FORMAT=json")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func (w *withHub) cdnRequests() int {
	n := 0
	for _, r := range w.hub.Requests() {
		if strings.HasPrefix(r.Path, "/cdn/") {
			n++
		}
	}
	return n
}

// pull picks the Q4_K_M file, shows progress as log lines (stderr is not a
// terminal here), and the model is then usable by its store names.
func TestPullListRun(t *testing.T) {
	w := newWithHub(t)
	out, errOut, err := w.run(t, "pull", kjvRepo)
	if err != nil {
		t.Fatalf("pull: %v\n%s", err, errOut)
	}
	name := kjvRepo + ":kjv-30m-q4_k_m.gguf"
	if out != name+"\n" {
		t.Fatalf("pull stdout %q, want the store name", out)
	}
	for _, want := range []string{`"message":"pulling"`, `"message":"downloaded"`, `"rate":`, `"message":"pulled and verified"`} {
		if !strings.Contains(errOut, want) {
			t.Errorf("pull stderr lacks %s:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "\r") || strings.Contains(errOut, "█") {
		t.Errorf("progress bar drawn on a non-terminal:\n%q", errOut)
	}
	path := filepath.Join(w.store, kjvRepo, "kjv-30m-q4_k_m.gguf")
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, w.files["kjv-30m-q4_k_m.gguf"]) {
		t.Fatalf("stored file: %v, %d bytes", err, len(got))
	}

	out, _, err = w.run(t, "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if f := strings.Fields(lines[1]); len(f) != 5 || f[0] != name || f[1]+" "+f[2] != "17.3 MiB" || f[3] != "Q4_K_M" || f[4] != path {
		t.Errorf("list row %q", lines[1])
	}

	// -m takes the full name, the repo, a tag or the file name.
	for _, m := range []string{name, kjvRepo, kjvRepo + ":Q4_K_M", "kjv-30m-q4_k_m"} {
		out, errOut, err := w.run(t, "tokenize", "-m", m, "In the beginning God created")
		if err != nil || out != "1 1050 261 2051 391 3372\n" {
			t.Errorf("tokenize -m %s: %q, %v\n%s", m, out, err, errOut)
		}
	}
	if _, errOut, err := w.run(t, "info", "-m", "no-such-model"); err == nil || !strings.Contains(errOut, "no model of that name in the store") {
		t.Errorf("unknown -m: %v, %s", err, errOut)
	}

	// Pulling again fetches nothing.
	before := w.cdnRequests()
	out, errOut, err = w.run(t, "pull", kjvRepo+":Q4_K_M")
	if err != nil || out != name+"\n" || !strings.Contains(errOut, "already in the store") || w.cdnRequests() != before {
		t.Errorf("second pull: %q, %v, %d new downloads\n%s", out, err, w.cdnRequests()-before, errOut)
	}

	// A second model makes the repo name ambiguous; rm takes either.
	if _, errOut, err := w.run(t, "pull", kjvRepo+":kjv-30m-q8_0.gguf"); err != nil {
		t.Fatalf("pull q8_0: %v\n%s", err, errOut)
	}
	if _, errOut, err := w.run(t, "tokenize", "-m", kjvRepo, "x"); err == nil || !strings.Contains(errOut, "matches 2 models") {
		t.Errorf("ambiguous -m: %v, %s", err, errOut)
	}
	out, _, err = w.run(t, "rm", kjvRepo+":Q8_0", name)
	if err != nil || out != "removed "+kjvRepo+":kjv-30m-q8_0.gguf\nremoved "+name+"\n" {
		t.Errorf("rm: %q, %v", out, err)
	}
	if out, _, _ := w.run(t, "list"); strings.Count(out, "\n") != 1 {
		t.Errorf("list after rm:\n%s", out)
	}
	if entries, _ := os.ReadDir(w.store); len(entries) != 0 {
		t.Errorf("store directory not emptied: %d entries", len(entries))
	}
}

// A cut connection: the pull fails (no retries asked for), nothing is in
// the store, and the next pull resumes with a Range request and verifies.
func TestPullResumesAfterCut(t *testing.T) {
	w := newWithHub(t)
	w.hub.CutAt("kjv-30m-q4_0.gguf", 7_000_000)
	_, errOut, err := w.run(t, "pull", "--retries", "0", kjvRepo+":Q4_0")
	if err == nil || !strings.Contains(errOut, "run the same pull again to resume") {
		t.Fatalf("cut pull: %v\n%s", err, errOut)
	}
	if out, _, _ := w.run(t, "list"); strings.Contains(out, "q4_0") {
		t.Errorf("an interrupted pull is listed:\n%s", out)
	}
	out, errOut, err := w.run(t, "pull", kjvRepo+":Q4_0")
	if err != nil || out != kjvRepo+":kjv-30m-q4_0.gguf\n" {
		t.Fatalf("resumed pull: %q, %v\n%s", out, err, errOut)
	}
	if !strings.Contains(errOut, `"message":"resuming"`) {
		t.Errorf("resume not reported:\n%s", errOut)
	}
	reqs := w.hub.Requests()
	if last := reqs[len(reqs)-1]; last.Range != "bytes=7000000-" {
		t.Errorf("last request %+v, want a range from byte 7000000", last)
	}
	got, _ := os.ReadFile(filepath.Join(w.store, kjvRepo, "kjv-30m-q4_0.gguf"))
	if !bytes.Equal(got, w.files["kjv-30m-q4_0.gguf"]) {
		t.Error("resumed file differs from the served one")
	}
}

func TestPullErrors(t *testing.T) {
	w := newWithHub(t)
	w.hub.Corrupt("kjv-30m-q8_0.gguf", true)
	cases := []struct {
		ref, want string
	}{
		{kjvRepo + ":Q8_0", "checksum mismatch"},
		{"nobody/nothing", "repository not found"},
		{kjvRepo + ":nothing.gguf", "has no file nothing.gguf"},
		{kjvRepo + ":Q2_K", "no GGUF file tagged Q2_K"},
		{"not-a-repo", "not a repository id"},
	}
	for _, c := range cases {
		_, errOut, err := w.run(t, "pull", c.ref)
		if err == nil || !strings.Contains(errOut, "wgllm: ") || strings.Contains(errOut, "panic") || !strings.Contains(errOut, c.want) {
			t.Errorf("pull %s: %v\n%s\nwant an error containing %q", c.ref, err, errOut, c.want)
		}
	}
	filepath.WalkDir(w.store, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("failed pulls left %s", p)
		}
		return nil
	})
}
