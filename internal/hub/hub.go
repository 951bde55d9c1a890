// Package hub downloads model files from a Hugging Face-style file server
// through the same HTTP API the hub's own clients use:
//
//   - GET {base}/api/models/{repo}/tree/{revision}?recursive=true lists the
//     files (JSON entries with path, size, git oid and, for LFS files, the
//     content's sha256 as lfs.oid), paginated with a Link rel="next" header;
//   - GET {base}/{repo}/resolve/{revision}/{path} serves a file, usually by a
//     redirect to a CDN; the hub's response carries the sha256 and size in
//     X-Linked-Etag and X-Linked-Size.
//
// Downloads resume (HTTP Range on a .partial file), are checked against
// the listed sha256 (or git blob id for small non-LFS files) and appear
// under their final name only complete, verified and synced.
package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/wgllm/wgllm/internal/modelstore"
)

// DefaultURL is the public Hugging Face hub.
const DefaultURL = "https://huggingface.co"

// Client talks to one hub.
type Client struct {
	BaseURL   string // e.g. https://huggingface.co; DefaultURL when empty
	Token     string // sent as "Authorization: Bearer" (gated and private repos)
	UserAgent string
	// HTTP is the client to use; nil means one with connection and
	// response-header timeouts but no overall limit (downloads are long).
	HTTP *http.Client
	// Retries is how many times a download that broke off (connection
	// reset, stall, 5xx) resumes before giving up.
	Retries int
	// RetryDelay is the wait before the first retry, doubled each time.
	RetryDelay time.Duration
	// StallTimeout ends an attempt that received nothing for this long
	// (0: one minute).
	StallTimeout time.Duration
	// MinRate ends an attempt that averaged fewer bytes a second than
	// this over RateWindow (0: 4 KiB/s; negative: no floor), so a server
	// that drips a byte now and then, which the stall timeout never
	// catches, is left like a stalled one.
	MinRate int64
	// RateWindow is the span MinRate is measured over (0: one minute).
	RateWindow time.Duration
	// Deadline bounds a whole Download, retries included (0: none).
	Deadline time.Duration
	// OnRetry, when set, hears of each resumption before its wait.
	OnRetry func(attempt int, err error, wait time.Duration)
}

// File is one file of a repo as the listing describes it.
type File struct {
	Path   string // in the repo, slash-separated
	Size   int64
	SHA256 string // the content's sha256 (lfs.oid), hex; "" for a non-LFS file
	OID    string // git blob id (sha1 of "blob <size>\x00" + content)
}

func (c *Client) base() string {
	if c.BaseURL == "" {
		return DefaultURL
	}
	return strings.TrimRight(c.BaseURL, "/")
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

var defaultHTTP = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout:   30 * time.Second,
	ResponseHeaderTimeout: 60 * time.Second,
	IdleConnTimeout:       90 * time.Second,
	ForceAttemptHTTP2:     true,
}}

func (c *Client) newRequest(ctx context.Context, method, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	ua := c.UserAgent
	if ua == "" {
		ua = "wgllm"
	}
	req.Header.Set("User-Agent", ua)
	return req, nil
}

// HTTPError is a response the client could not use, with the hub's error
// code (X-Error-Code: RepoNotFound, EntryNotFound, RevisionNotFound,
// GatedRepo, ...) when it sent one.
type HTTPError struct {
	What    string // what was asked for
	Status  int
	Code    string
	Message string
}

func (e *HTTPError) Error() string {
	var hint string
	switch {
	case e.Code == "RepoNotFound":
		hint = "repository not found (a private or gated one needs a token: set HF_TOKEN or hub.token)"
	case e.Code == "RevisionNotFound":
		hint = "revision not found"
	case e.Code == "EntryNotFound" || e.Status == http.StatusNotFound:
		hint = "not found"
	case e.Code == "GatedRepo" || e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		hint = "access denied (a gated or private repository needs a token with access: set HF_TOKEN or hub.token)"
	}
	msg := fmt.Sprintf("%s: HTTP %d", e.What, e.Status)
	if hint != "" {
		msg += ": " + hint
	}
	if e.Message != "" {
		msg += " (" + e.Message + ")"
	}
	return msg
}

// Temporary reports whether trying again may help (rate limits, server errors).
func (e *HTTPError) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout || e.Status >= 500
}

func httpError(what string, resp *http.Response) *HTTPError {
	e := &HTTPError{What: what, Status: resp.StatusCode, Code: resp.Header.Get("X-Error-Code"), Message: resp.Header.Get("X-Error-Message")}
	if e.Message == "" && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		var body struct {
			Error string `json:"error"`
		}
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&body) == nil {
			e.Message = body.Error
		}
	}
	return e
}

// treeEntry is one element of the tree listing.
type treeEntry struct {
	Type string `json:"type"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	OID  string `json:"oid"`
	LFS  *struct {
		OID  string `json:"oid"`
		Size int64  `json:"size"`
	} `json:"lfs"`
}

const (
	maxListPages = 1000
	maxPageBytes = 64 << 20
)

var hexRE = regexp.MustCompile(`^[0-9a-f]+$`)

// ListFiles lists every file of repo at revision ("" means main).
func (c *Client) ListFiles(ctx context.Context, repo, revision string) ([]File, error) {
	if err := modelstore.ValidRepo(repo); err != nil {
		return nil, err
	}
	if revision == "" {
		revision = "main"
	}
	base, err := url.Parse(c.base())
	if err != nil {
		return nil, fmt.Errorf("hub URL %q: %w", c.base(), err)
	}
	next := c.base() + "/api/models/" + repo + "/tree/" + url.PathEscape(revision) + "?recursive=true"
	what := "listing " + repo
	var files []File
	for page := 0; next != ""; page++ {
		if page == maxListPages {
			return nil, fmt.Errorf("%s: more than %d pages", what, maxListPages)
		}
		req, err := c.newRequest(ctx, http.MethodGet, next)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json")
		resp, err := c.httpClient().Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		var entries []treeEntry
		if resp.StatusCode != http.StatusOK {
			err = httpError(what, resp)
		} else if err = json.NewDecoder(io.LimitReader(resp.Body, maxPageBytes)).Decode(&entries); err != nil {
			err = fmt.Errorf("%s: the server's answer is not a file listing: %w", what, err)
		}
		link := resp.Header.Get("Link")
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.Type != "file" {
				continue
			}
			f := File{Path: e.Path, Size: e.Size, OID: strings.ToLower(e.OID)}
			if e.LFS != nil {
				f.SHA256, f.Size = strings.ToLower(e.LFS.OID), e.LFS.Size
			}
			files = append(files, f)
		}
		if next, err = nextLink(base, link); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, nil
}

// nextLink is the rel="next" target of a Link header, which must stay on
// the hub's host (the token goes with it).
func nextLink(base *url.URL, header string) (string, error) {
	for _, part := range strings.Split(header, ",") {
		target, params, ok := strings.Cut(strings.TrimSpace(part), ";")
		if !ok || !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
			continue
		}
		target = strings.Trim(strings.TrimSpace(target), "<>")
		u, err := base.Parse(target)
		if err != nil {
			return "", fmt.Errorf("bad Link header %q: %w", header, err)
		}
		if u.Scheme != base.Scheme || u.Host != base.Host {
			return "", fmt.Errorf("Link header points away from the hub: %s", u)
		}
		return u.String(), nil
	}
	return "", nil
}

// DefaultTag is the quantization picked when a repo has several GGUF files
// and the pull names none, as llama.cpp and Ollama pick it.
const DefaultTag = "Q4_K_M"

var splitRE = regexp.MustCompile(`(?i)-\d{5}-of-\d{5}\.gguf$`)

// ChooseGGUF picks the file to pull. want is a file path (it ends in .gguf
// or has a slash), a quantization tag such as Q8_0 matched as a word in
// the file names, or "" for the repo's only model or else its Q4_K_M.
// Multimodal projectors (mmproj) are never picked by tag, and split models
// (-00001-of-00003.gguf) are not supported.
func ChooseGGUF(repo string, files []File, want string) (File, error) {
	var models []File
	for _, f := range files {
		if strings.HasSuffix(strings.ToLower(f.Path), ".gguf") && !strings.Contains(strings.ToLower(path.Base(f.Path)), "mmproj") {
			models = append(models, f)
		}
	}
	if want != "" && (strings.HasSuffix(strings.ToLower(want), ".gguf") || strings.Contains(want, "/")) {
		for _, f := range files {
			if f.Path == want {
				return notSplit(repo, f)
			}
		}
		return File{}, fmt.Errorf("%s has no file %s%s", repo, want, choices(models))
	}
	var match []File
	if want == "" && len(models) == 1 {
		match = models
	} else {
		tag := want
		if tag == "" {
			tag = DefaultTag
		}
		for _, f := range models {
			if modelstore.HasTag(f.Path, tag) {
				match = append(match, f)
			}
		}
	}
	switch {
	case len(models) == 0:
		return File{}, fmt.Errorf("%s has no GGUF file", repo)
	case len(match) == 0 && want == "":
		return File{}, fmt.Errorf("%s has several GGUF files and none is %s: name one as %s:FILE or %s:TAG%s", repo, DefaultTag, repo, repo, choices(models))
	case len(match) == 0:
		return File{}, fmt.Errorf("%s has no GGUF file tagged %s%s", repo, want, choices(models))
	}
	for _, f := range match {
		if _, err := notSplit(repo, f); err != nil {
			return File{}, err
		}
	}
	if len(match) > 1 {
		return File{}, fmt.Errorf("%s has %d GGUF files that match, name one as %s:FILE%s", repo, len(match), repo, choices(match))
	}
	return match[0], nil
}

// notSplit refuses one part of a split model.
func notSplit(repo string, f File) (File, error) {
	if splitRE.MatchString(f.Path) {
		return File{}, fmt.Errorf("%s: %s is one part of a split model, which wgllm cannot load", repo, f.Path)
	}
	return f, nil
}

// choices lists files with their sizes for an error message.
func choices(fs []File) string {
	if len(fs) == 0 {
		return ""
	}
	fs = append([]File(nil), fs...)
	sort.Slice(fs, func(i, j int) bool { return fs[i].Path < fs[j].Path })
	var b strings.Builder
	b.WriteString("; GGUF files:")
	for _, f := range fs {
		fmt.Fprintf(&b, "\n  %s (%s)", f.Path, HumanBytes(f.Size))
	}
	return b.String()
}

// HumanBytes formats a size in binary units: 1.5 GiB.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// ErrChecksum is returned (wrapped) when a download's content does not
// match the hub's checksum.
var ErrChecksum = errors.New("checksum mismatch")
