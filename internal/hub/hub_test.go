package hub_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgllm/wgllm/internal/hub"
	"github.com/wgllm/wgllm/internal/hub/hubtest"
	"github.com/wgllm/wgllm/internal/sharedfiles"
)

const repo = "wgllm/kjv-30m-GGUF"

// newHub serves the shared kjv-30m and stories260K files the way the hub
// stores GGUF files (in LFS), with a README (not in LFS) and a nested file.
func newHub(t *testing.T) (*hubtest.Server, map[string][]byte) {
	t.Helper()
	files := map[string][]byte{}
	for _, name := range []string{"kjv-30m-q4_0.gguf", "kjv-30m-q4_k_m.gguf", "stories260K.gguf"} {
		b, err := os.ReadFile(sharedfiles.File(t, "models/"+name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	files["README.md"] = []byte("# kjv-30m\n")
	files["extra/stories260K-F32.gguf"] = files["stories260K.gguf"]
	s := hubtest.New()
	t.Cleanup(s.Close)
	for name, b := range files {
		s.Add(repo, name, b, strings.HasSuffix(name, ".gguf"))
	}
	return s, files
}

func client(s *hubtest.Server) *hub.Client {
	return &hub.Client{BaseURL: s.URL, RetryDelay: time.Millisecond, StallTimeout: 5 * time.Second}
}

func list(t *testing.T, c *hub.Client) []hub.File {
	t.Helper()
	files, err := c.ListFiles(context.Background(), repo, "")
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func find(t *testing.T, files []hub.File, path string) hub.File {
	t.Helper()
	for _, f := range files {
		if f.Path == path {
			return f
		}
	}
	t.Fatalf("%s not listed", path)
	return hub.File{}
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// The listing follows the Link header through every page, recursively, and
// gives LFS files their content sha256.
func TestListFiles(t *testing.T) {
	s, files := newHub(t)
	got := list(t, client(s))
	if len(got) != len(files) {
		t.Fatalf("%d files listed, want %d: %v", len(got), len(files), got)
	}
	pages := 0
	for _, r := range s.Requests() {
		if strings.HasPrefix(r.Path, "/api/models/"+repo+"/tree/main") {
			pages++
		}
	}
	if pages != 3 { // 5 entries, 2 a page
		t.Errorf("%d listing pages fetched, want 3", pages)
	}
	for _, f := range got {
		want := files[f.Path]
		if f.Size != int64(len(want)) {
			t.Errorf("%s: size %d, want %d", f.Path, f.Size, len(want))
		}
		if lfs := strings.HasSuffix(f.Path, ".gguf"); lfs && f.SHA256 != sha(want) || !lfs && f.SHA256 != "" {
			t.Errorf("%s: sha256 %q", f.Path, f.SHA256)
		}
		if len(f.OID) != 40 {
			t.Errorf("%s: oid %q", f.Path, f.OID)
		}
	}
}

func TestChooseGGUF(t *testing.T) {
	f := func(paths ...string) []hub.File {
		var fs []hub.File
		for _, p := range paths {
			fs = append(fs, hub.File{Path: p, Size: 1000})
		}
		return fs
	}
	cases := []struct {
		files      []hub.File
		want, pick string
		err        string
	}{
		{f("README.md", "m.Q8_0.gguf"), "", "m.Q8_0.gguf", ""},
		{f("m.Q8_0.gguf", "m.Q4_K_M.gguf", "m.Q4_K_S.gguf"), "", "m.Q4_K_M.gguf", ""},
		{f("m-q8_0.gguf", "m-q4_k_m.gguf"), "", "m-q4_k_m.gguf", ""},
		{f("m.Q8_0.gguf", "m.Q4_K_M.gguf"), "q8_0", "m.Q8_0.gguf", ""},
		{f("m.Q8_0.gguf", "m.Q4_K_M.gguf", "mmproj-m-f16.gguf"), "", "m.Q4_K_M.gguf", ""},
		{f("m.Q8_0.gguf", "sub/m.Q4_K_M.gguf"), "sub/m.Q4_K_M.gguf", "sub/m.Q4_K_M.gguf", ""},
		{f("m.Q8_0.gguf", "m.Q6_K.gguf"), "", "", "none is Q4_K_M: name one as o/r:FILE or o/r:TAG; GGUF files:\n  m.Q6_K.gguf (1000 B)\n  m.Q8_0.gguf (1000 B)"},
		{f("m.Q8_0.gguf", "m.Q6_K.gguf"), "Q5_K_M", "", "no GGUF file tagged Q5_K_M"},
		{f("m.Q4_K.gguf"), "Q4_K_M", "", "no GGUF file tagged Q4_K_M"},
		{f("a.Q4_K_M.gguf", "b.Q4_K_M.gguf"), "", "", "2 GGUF files that match"},
		{f("m.Q8_0.gguf"), "m.Q4_0.gguf", "", "o/r has no file m.Q4_0.gguf"},
		{f("README.md"), "", "", "o/r has no GGUF file"},
		{f("m-Q4_K_M-00001-of-00002.gguf", "m-Q4_K_M-00002-of-00002.gguf", "m.Q8_0.gguf"), "", "", "one part of a split model"},
	}
	for _, c := range cases {
		got, err := hub.ChooseGGUF("o/r", c.files, c.want)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v %q: error %v, want %q", c.files, c.want, err, c.err)
			}
			continue
		}
		if err != nil || got.Path != c.pick {
			t.Errorf("%v %q: %q, %v; want %q", c.files, c.want, got.Path, err, c.pick)
		}
	}
}

// checkDone checks that dest holds want and nothing else is left beside it.
func checkDone(t *testing.T, dest string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(dest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes differ from the served %d", dest, len(got), len(want))
	}
	entries, _ := os.ReadDir(filepath.Dir(dest))
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only %s", names, filepath.Base(dest))
	}
}

func TestDownloadThroughRedirect(t *testing.T) {
	s, files := newHub(t)
	c := client(s)
	fs := list(t, c)
	var last hub.Progress
	dest := filepath.Join(t.TempDir(), "m", "stories.gguf")
	if err := c.Download(context.Background(), repo, "main", find(t, fs, "extra/stories260K-F32.gguf"), dest, func(p hub.Progress) { last = p }); err != nil {
		t.Fatal(err)
	}
	checkDone(t, dest, files["stories260K.gguf"])
	if last.Done != last.Total || last.Total != int64(len(files["stories260K.gguf"])) {
		t.Errorf("last progress %+v", last)
	}
	var resolve, cdn bool
	for _, r := range s.Requests() {
		resolve = resolve || r.Path == "/"+repo+"/resolve/main/extra/stories260K-F32.gguf"
		cdn = cdn || strings.HasPrefix(r.Path, "/cdn/")
	}
	if !resolve || !cdn {
		t.Errorf("requests did not go resolve -> CDN: %v", s.Requests())
	}
	// A small file outside LFS is checked against its git blob id.
	readme := filepath.Join(t.TempDir(), "README.md")
	if err := c.Download(context.Background(), repo, "", find(t, fs, "README.md"), readme, nil); err != nil {
		t.Fatal(err)
	}
	checkDone(t, readme, files["README.md"])
}

// A connection cut mid-file leaves the bytes so far in .partial and no
// file under the final name; the next Download asks for the rest with a
// Range header, then verifies the whole.
func TestResumeAfterCut(t *testing.T) {
	s, files := newHub(t)
	c := client(s)
	f := find(t, list(t, c), "kjv-30m-q4_0.gguf")
	dest := filepath.Join(t.TempDir(), "kjv.gguf")
	const cut = 5_000_000
	s.CutAt(f.Path, cut)
	err := c.Download(context.Background(), repo, "main", f, dest, nil)
	if err == nil || !strings.Contains(err.Error(), "run the same pull again to resume") {
		t.Fatalf("cut download: %v", err)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Fatalf("final name exists after a cut: %v", err)
	}
	st, err := os.Stat(dest + ".partial")
	if err != nil || st.Size() != cut {
		t.Fatalf("partial file: %v, %d bytes, want %d", err, st.Size(), cut)
	}
	if err := c.Download(context.Background(), repo, "main", f, dest, nil); err != nil {
		t.Fatal(err)
	}
	checkDone(t, dest, files[f.Path])
	reqs := s.Requests()
	if last := reqs[len(reqs)-1]; last.Range != "bytes=5000000-" || !strings.HasPrefix(last.Path, "/cdn/") {
		t.Errorf("resume request %+v, want Range bytes=5000000- at the CDN", last)
	}
}

// With Retries, one call rides out several cuts, each attempt resuming
// where the last stopped.
func TestRetriesResume(t *testing.T) {
	s, files := newHub(t)
	c := client(s)
	c.Retries = 3
	var retries []int
	c.OnRetry = func(n int, err error, wait time.Duration) { retries = append(retries, n) }
	f := find(t, list(t, c), "kjv-30m-q4_k_m.gguf")
	s.CutAt(f.Path, 1_000_000, 9_000_000, 9_000_001)
	dest := filepath.Join(t.TempDir(), "kjv.gguf")
	if err := c.Download(context.Background(), repo, "main", f, dest, nil); err != nil {
		t.Fatal(err)
	}
	checkDone(t, dest, files[f.Path])
	var ranges []string
	for _, r := range s.Requests() {
		if strings.HasPrefix(r.Path, "/cdn/") {
			ranges = append(ranges, r.Range)
		}
	}
	if strings.Join(ranges, ",") != ",bytes=1000000-,bytes=9000000-,bytes=9000001-" || len(retries) != 3 {
		t.Errorf("CDN requests with ranges %q, %d retries", ranges, len(retries))
	}
	// Out of retries, the error says where it stopped.
	s.CutAt(f.Path, 100, 200)
	c.Retries = 1
	dest2 := filepath.Join(t.TempDir(), "kjv.gguf")
	if err := c.Download(context.Background(), repo, "main", f, dest2, nil); err == nil || !strings.Contains(err.Error(), "stopped at 200 B of 17.3 MiB") {
		t.Errorf("after two cuts with one retry: %v", err)
	}
}

// Wrong bytes: an error, nothing under the final name, and no partial
// file to resume from.
func TestChecksumMismatch(t *testing.T) {
	s, _ := newHub(t)
	c := client(s)
	f := find(t, list(t, c), "stories260K.gguf")
	s.Corrupt(f.Path, true)
	dir := t.TempDir()
	dest := filepath.Join(dir, "stories.gguf")
	err := c.Download(context.Background(), repo, "main", f, dest, nil)
	if !errors.Is(err, hub.ErrChecksum) || !strings.Contains(err.Error(), f.SHA256) {
		t.Fatalf("corrupt download: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left %d files behind", len(entries))
	}
}

// A partial file from an earlier run whose bytes are wrong is detected at
// the end and the file is fetched again from the start.
func TestBadPartialStartsOver(t *testing.T) {
	s, files := newHub(t)
	c := client(s)
	f := find(t, list(t, c), "stories260K.gguf")
	dest := filepath.Join(t.TempDir(), "stories.gguf")
	s.CutAt(f.Path, 500_000)
	if err := c.Download(context.Background(), repo, "main", f, dest, nil); err == nil {
		t.Fatal("cut download succeeded")
	}
	p, _ := os.ReadFile(dest + ".partial")
	p[1000] ^= 1
	os.WriteFile(dest+".partial", p, 0o644)
	if err := c.Download(context.Background(), repo, "main", f, dest, nil); err != nil {
		t.Fatal(err)
	}
	checkDone(t, dest, files[f.Path])
	// A partial file for other content (its digest record differs) is not
	// resumed at all.
	os.Remove(dest)
	os.WriteFile(dest+".partial", p[:100], 0o644)
	os.WriteFile(dest+".partial.digest", []byte("sha256:"+strings.Repeat("0", 64)), 0o644)
	n := len(s.Requests())
	if err := c.Download(context.Background(), repo, "main", f, dest, nil); err != nil {
		t.Fatal(err)
	}
	checkDone(t, dest, files[f.Path])
	for _, r := range s.Requests()[n:] {
		if r.Range != "" {
			t.Errorf("resumed a partial file made for other content: %+v", r)
		}
	}
}

// A server that ignores Range gets the whole file again, which replaces
// the partial one.
func TestServerIgnoresRange(t *testing.T) {
	s, files := newHub(t)
	c := client(s)
	c.Retries = 1
	f := find(t, list(t, c), "stories260K.gguf")
	s.CutAt(f.Path, 300_000)
	s.IgnoreRange(true)
	dest := filepath.Join(t.TempDir(), "stories.gguf")
	if err := c.Download(context.Background(), repo, "main", f, dest, nil); err != nil {
		t.Fatal(err)
	}
	checkDone(t, dest, files[f.Path])
}

// A connection that stops sending is dropped after StallTimeout and resumed.
func TestStall(t *testing.T) {
	data := bytes.Repeat([]byte("stall "), 100_000)
	release := make(chan struct{})
	var mu sync.Mutex
	var ranges []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		first := len(ranges) == 1
		mu.Unlock()
		if first {
			w.Header().Set("Content-Length", "600000")
			w.Write(data[:1000])
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	defer close(release)
	c := &hub.Client{BaseURL: srv.URL, Retries: 1, RetryDelay: time.Millisecond, StallTimeout: 200 * time.Millisecond}
	f := hub.File{Path: "f.bin", Size: int64(len(data)), SHA256: sha(data)}
	dest := filepath.Join(t.TempDir(), "f.gguf")
	if err := c.Download(context.Background(), "o/r", "main", f, dest, nil); err != nil {
		t.Fatal(err)
	}
	checkDone(t, dest, data)
	if len(ranges) != 2 || ranges[1] != "bytes=1000-" {
		t.Errorf("requests with ranges %q", ranges)
	}
}

// Cancelling (Ctrl-C) keeps the partial file for a later resume.
func TestCancelKeepsPartial(t *testing.T) {
	s, _ := newHub(t)
	c := client(s)
	f := find(t, list(t, c), "kjv-30m-q4_k_m.gguf")
	ctx, cancel := context.WithCancel(context.Background())
	dest := filepath.Join(t.TempDir(), "kjv.gguf")
	err := c.Download(ctx, repo, "main", f, dest, func(p hub.Progress) {
		if p.Done > 2_000_000 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "run the same pull again to resume") {
		t.Fatalf("cancelled download: %v", err)
	}
	if st, err := os.Stat(dest + ".partial"); err != nil || st.Size() < 2_000_000 {
		t.Errorf("partial after cancel: %v", err)
	}
}

func TestHubErrors(t *testing.T) {
	s, _ := newHub(t)
	c := client(s)
	ctx := context.Background()
	good := find(t, list(t, c), "stories260K.gguf")
	dir := t.TempDir()
	cases := []struct {
		name string
		run  func() error
		want string
	}{
		{"unknown repo", func() error { _, err := c.ListFiles(ctx, "nobody/nothing", ""); return err }, "listing nobody/nothing: HTTP 401: repository not found"},
		{"unknown revision", func() error { _, err := c.ListFiles(ctx, repo, "v9"); return err }, "HTTP 404: revision not found (Invalid rev id: v9)"},
		{"invalid repo id", func() error { _, err := c.ListFiles(ctx, "../etc", ""); return err }, "not a repository id"},
		{"unknown file", func() error {
			return c.Download(ctx, repo, "main", hub.File{Path: "gone.gguf", Size: 10, SHA256: good.SHA256}, filepath.Join(dir, "gone.gguf"), nil)
		}, "downloading gone.gguf: HTTP 404: not found (Entry not found)"},
		{"path traversal", func() error {
			return c.Download(ctx, repo, "main", hub.File{Path: "../../x.gguf", Size: 10, SHA256: good.SHA256}, filepath.Join(dir, "x.gguf"), nil)
		}, "not a clean relative path"},
		{"no checksum", func() error {
			return c.Download(ctx, repo, "main", hub.File{Path: "stories260K.gguf", Size: good.Size}, filepath.Join(dir, "s.gguf"), nil)
		}, "no usable checksum"},
		{"size differs from the hub's", func() error {
			f := good
			f.Size--
			return c.Download(ctx, repo, "main", f, filepath.Join(dir, "s.gguf"), nil)
		}, "the hub now serves 1185376 bytes, the listing said 1185375"},
		{"sha256 differs from the hub's", func() error {
			f := good
			f.SHA256 = strings.Repeat("ab", 32)
			return c.Download(ctx, repo, "main", f, filepath.Join(dir, "s.gguf"), nil)
		}, "the hub now serves a different version (sha256 " + good.SHA256},
		{"not a hub", func() error {
			_, err := (&hub.Client{BaseURL: s.URL + "/nothing-here"}).ListFiles(ctx, repo, "")
			return err
		}, "listing wgllm/kjv-30m-GGUF: HTTP 404: not found"},
	}
	for _, c := range cases {
		err := c.run()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		for _, e := range entries {
			t.Errorf("left %s behind", e.Name())
		}
	}
	// A gated repo needs the token, which the client sends.
	s.RequireToken("hf_secret")
	if _, err := c.ListFiles(ctx, repo, ""); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("gated without token: %v", err)
	}
	c.Token = "hf_secret"
	dest := filepath.Join(t.TempDir(), "s.gguf")
	if err := c.Download(ctx, repo, "main", good, dest, nil); err != nil {
		t.Errorf("gated with token: %v", err)
	}
}
