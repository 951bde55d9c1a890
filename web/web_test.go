package web_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/web"
)

func readEmbedded(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(web.FS(), name)
	if err != nil {
		t.Fatalf("embedded %s: %v", name, err)
	}
	return string(b)
}

func embeddedFiles(t *testing.T) []string {
	t.Helper()
	var names []string
	err := fs.WalkDir(web.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

var srcHref = regexp.MustCompile(`(?i)\b(?:src|href)\s*=\s*["']?([^"'\s>]*)`)

func TestEmbedHasIndexAndItsAssets(t *testing.T) {
	index := readEmbedded(t, "index.html")
	if !strings.Contains(index, `id="messages"`) || !strings.Contains(index, `id="prompt"`) {
		t.Fatalf("index.html lacks the conversation or the message box")
	}
	refs := srcHref.FindAllStringSubmatch(index, -1)
	if len(refs) < 3 {
		t.Fatalf("index.html references %d files, want at least style.css, md.js and app.js", len(refs))
	}
	var local []string
	for _, m := range refs {
		ref := m[1]
		if strings.HasPrefix(ref, "data:") {
			continue
		}
		if _, err := fs.Stat(web.FS(), ref); err != nil {
			t.Errorf("index.html references %q, which is not embedded: %v", ref, err)
		}
		local = append(local, ref)
	}
	for _, want := range []string{"style.css", "md.js", "app.js"} {
		if !slices.Contains(local, want) {
			t.Errorf("index.html does not load %s (loads %v)", want, local)
		}
	}
	// Every embedded file is used by the page (nothing stale ships).
	for _, name := range embeddedFiles(t) {
		if name != "index.html" && !slices.Contains(local, name) {
			t.Errorf("%s is embedded but index.html does not load it", name)
		}
	}
}

// The page must work offline: no file may point outside the server.
func TestNoExternalReferences(t *testing.T) {
	external := []*regexp.Regexp{
		regexp.MustCompile(`(?i)https?://`),                             // any absolute web URL
		regexp.MustCompile(`(?i)\b(?:src|href)\s*=\s*["']?\s*//`),       // protocol-relative
		regexp.MustCompile(`(?i)url\(\s*["']?\s*(?:[a-z]+:)?//`),        // CSS url() to another host
		regexp.MustCompile(`(?i)@import`),                               // CSS imports
		regexp.MustCompile(`(?i)cdn|googleapis|gstatic|jsdelivr|unpkg`), // well-known CDNs
	}
	for _, name := range embeddedFiles(t) {
		text := readEmbedded(t, name)
		for _, re := range external {
			if loc := re.FindStringIndex(text); loc != nil {
				line := strings.Count(text[:loc[0]], "\n") + 1
				t.Errorf("%s:%d references something external: %q", name, line, text[loc[0]:min(loc[1]+40, len(text))])
			}
		}
	}
	for _, m := range srcHref.FindAllStringSubmatch(readEmbedded(t, "index.html"), -1) {
		if strings.Contains(m[1], ":") && !strings.HasPrefix(m[1], "data:") {
			t.Errorf("index.html references %q with a scheme", m[1])
		}
	}
}

// Model text must never reach an HTML parser; the scripts build DOM nodes.
func TestScriptsNeverParseHTML(t *testing.T) {
	banned := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|DOMParser|createContextualFragment|\beval\(|new Function|setHTML|srcdoc`)
	for _, name := range embeddedFiles(t) {
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		text := readEmbedded(t, name)
		for _, loc := range banned.FindAllStringIndex(text, -1) {
			line := strings.Count(text[:loc[0]], "\n") + 1
			t.Errorf("%s:%d uses %q", name, line, text[loc[0]:loc[1]])
		}
	}
	// The page's own CSP forbids inline scripts and foreign connections.
	index := readEmbedded(t, "index.html")
	if !strings.Contains(index, `Content-Security-Policy`) || !strings.Contains(index, `script-src 'self'`) {
		t.Errorf("index.html has no Content-Security-Policy limiting scripts to the page's own files")
	}
	if regexp.MustCompile(`(?is)<script(?:\s[^>]*)?>\s*[^<\s]`).MatchString(index) {
		t.Errorf("index.html has an inline script; the CSP would block it")
	}
}

func TestHandlerServesFiles(t *testing.T) {
	srv := httptest.NewServer(web.Handler())
	defer srv.Close()
	for _, c := range []struct{ path, contentType, contains string }{
		{"/", "text/html", `<textarea id="prompt"`},
		{"/app.js", "text/javascript", "renderMarkdown"},
		{"/md.js", "text/javascript", "window.renderMarkdown"},
		{"/style.css", "text/css", "prefers-color-scheme"},
	} {
		resp, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", c.path, resp.Status)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, c.contentType) {
			t.Errorf("GET %s: Content-Type %q, want %s", c.path, ct, c.contentType)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("GET %s: headers %v lack nosniff or no-cache", c.path, resp.Header)
		}
		if !strings.Contains(string(body), c.contains) {
			t.Errorf("GET %s: body lacks %q", c.path, c.contains)
		}
	}
	resp, err := http.Get(srv.URL + "/nope.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope.js: %s, want 404", resp.Status)
	}
}
