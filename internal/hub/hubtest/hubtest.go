// Package hubtest is a fake Hugging Face hub for tests: the tree listing
// (paginated, with lfs.oid), resolve URLs that redirect LFS files to a
// "CDN" path with X-Linked-Etag/X-Linked-Size as the hub sends them, HTTP
// Range, the hub's error codes, and faults to inject (a connection cut
// mid-file, wrong bytes, an ignored Range, a required token).
package hubtest

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Request is one request the server saw.
type Request struct {
	Method, Path, Range, Authorization string
}

type file struct {
	data   []byte
	sha256 string // "" for a non-LFS file
	oid    string
}

// Server is the fake hub. Its fields may be set between requests.
type Server struct {
	*httptest.Server

	mu       sync.Mutex
	repos    map[string]map[string]*file
	log      []Request
	cuts     map[string][]int64 // path -> offsets at which to drop the connection, one per request
	corrupt  map[string]bool
	pageSize int
	token    string
	noRange  bool
	drip     map[string]time.Duration // path -> send one byte per interval
}

// New starts a server; Close it when done.
func New() *Server {
	s := &Server{repos: map[string]map[string]*file{}, cuts: map[string][]int64{}, corrupt: map[string]bool{}, pageSize: 2}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Add puts a file in a repo, stored in LFS (listed with its sha256) when
// lfs is set, as the hub stores GGUF files.
func (s *Server) Add(repo, path string, data []byte, lfs bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.repos[repo] == nil {
		s.repos[repo] = map[string]*file{}
	}
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	f := &file{data: data, oid: hex.EncodeToString(h.Sum(nil))}
	if lfs {
		sum := sha256.Sum256(data)
		f.sha256 = hex.EncodeToString(sum[:])
	}
	s.repos[repo][path] = f
}

// CutAt makes the next requests for path drop the connection once the
// file's bytes up to offset have been sent, one offset per request.
func (s *Server) CutAt(path string, offsets ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cuts[path] = append(s.cuts[path], offsets...)
}

// Corrupt makes path's content differ from its listed checksum (one byte
// flipped, same size).
func (s *Server) Corrupt(path string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.corrupt[path] = on
}

// RequireToken makes every request need "Authorization: Bearer token".
func (s *Server) RequireToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = token
}

// Drip makes the server send path one byte every interval (0: at once
// again), as a hostile or broken server that never quite stalls.
func (s *Server) Drip(path string, every time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drip == nil {
		s.drip = map[string]time.Duration{}
	}
	s.drip[path] = every
}

// IgnoreRange makes the server answer Range requests with the whole file.
func (s *Server) IgnoreRange(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noRange = on
}

// SetPageSize sets how many entries a listing page holds.
func (s *Server) SetPageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageSize = n
}

// Requests returns the requests seen so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.log...)
}

// hubError answers as the hub does: a status, X-Error-Code and a JSON body.
func hubError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Error-Code", code)
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.log = append(s.log, Request{r.Method, r.URL.Path, r.Header.Get("Range"), r.Header.Get("Authorization")})
	token := s.token
	s.mu.Unlock()
	if token != "" && r.Header.Get("Authorization") != "Bearer "+token && !strings.HasPrefix(r.URL.Path, "/cdn/") {
		hubError(w, http.StatusUnauthorized, "GatedRepo", "Access to this model is restricted. You must have access to it and be authenticated to access it.")
		return
	}
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/api/models/"):
		s.serveTree(w, r, strings.TrimPrefix(p, "/api/models/"))
	case strings.HasPrefix(p, "/cdn/"):
		s.serveCDN(w, r, strings.TrimPrefix(p, "/cdn/"))
	default:
		s.serveResolve(w, r, strings.TrimPrefix(p, "/"))
	}
}

// serveTree answers /api/models/{owner}/{name}/tree/{revision}[/{dir}].
func (s *Server) serveTree(w http.ResponseWriter, r *http.Request, rest string) {
	parts := strings.SplitN(rest, "/", 5)
	if len(parts) < 4 || parts[2] != "tree" {
		hubError(w, http.StatusNotFound, "", "Not Found")
		return
	}
	repo, rev := parts[0]+"/"+parts[1], parts[3]
	s.mu.Lock()
	defer s.mu.Unlock()
	files, ok := s.repos[repo]
	if !ok {
		// The hub answers 401 for a repo it does not show, to not leak private ones.
		hubError(w, http.StatusUnauthorized, "RepoNotFound", "Repository not found")
		return
	}
	if rev != "main" {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	recursive := r.URL.Query().Get("recursive") == "true"
	type lfs struct {
		OID         string `json:"oid"`
		Size        int    `json:"size"`
		PointerSize int    `json:"pointerSize"`
	}
	type entry struct {
		Type string `json:"type"`
		OID  string `json:"oid"`
		Size int    `json:"size"`
		Path string `json:"path"`
		LFS  *lfs   `json:"lfs,omitempty"`
	}
	var entries []entry
	dirs := map[string]bool{}
	var paths []string
	for path := range files {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	for _, path := range paths {
		f := files[path]
		if dir, _, nested := strings.Cut(path, "/"); nested && !recursive {
			if !dirs[dir] {
				dirs[dir] = true
				entries = append(entries, entry{Type: "directory", OID: strings.Repeat("0", 40), Path: dir})
			}
			continue
		}
		e := entry{Type: "file", OID: f.oid, Size: len(f.data), Path: path}
		if f.sha256 != "" {
			e.LFS = &lfs{OID: f.sha256, Size: len(f.data), PointerSize: 134}
		}
		entries = append(entries, e)
	}
	cursor, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	end := min(cursor+s.pageSize, len(entries))
	if cursor > len(entries) {
		cursor = len(entries)
	}
	if end < len(entries) {
		q := r.URL.Query()
		q.Set("cursor", strconv.Itoa(end))
		next := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawQuery: q.Encode()}
		w.Header().Set("Link", fmt.Sprintf(`<%s>; rel="next"`, next.String()))
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(entries[cursor:end])
}

// serveResolve answers /{owner}/{name}/resolve/{revision}/{path}: LFS
// files redirect to the CDN with the hub's X-Linked-* headers, small
// files are served here.
func (s *Server) serveResolve(w http.ResponseWriter, r *http.Request, rest string) {
	parts := strings.SplitN(rest, "/", 5)
	if len(parts) < 5 || parts[2] != "resolve" {
		http.NotFound(w, r)
		return
	}
	repo, rev, path := parts[0]+"/"+parts[1], parts[3], parts[4]
	s.mu.Lock()
	files, ok := s.repos[repo]
	var f *file
	if ok {
		f = files[path]
	}
	s.mu.Unlock()
	switch {
	case !ok:
		hubError(w, http.StatusUnauthorized, "RepoNotFound", "Repository not found")
		return
	case rev != "main":
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	case f == nil:
		hubError(w, http.StatusNotFound, "EntryNotFound", "Entry not found")
		return
	}
	w.Header().Set("X-Repo-Commit", strings.Repeat("c", 40))
	if f.sha256 != "" {
		w.Header().Set("X-Linked-Etag", `"`+f.sha256+`"`)
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(f.data)))
		w.Header().Set("ETag", `"`+f.oid+`"`)
		w.Header().Set("Location", "http://"+r.Host+"/cdn/"+repo+"/"+path)
		w.WriteHeader(http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"`+f.oid+`"`)
	s.serveBytes(w, r, path, f)
}

// serveCDN serves /cdn/{owner}/{name}/{path}, as the hub's CDN does.
func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request, rest string) {
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 3 {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	f := s.repos[parts[0]+"/"+parts[1]][parts[2]]
	s.mu.Unlock()
	if f == nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", `"`+f.sha256+`"`)
	s.serveBytes(w, r, parts[2], f)
}

// serveBytes sends the file (or the "bytes=N-" range asked for), applying
// the faults set for path.
func (s *Server) serveBytes(w http.ResponseWriter, r *http.Request, path string, f *file) {
	s.mu.Lock()
	data := f.data
	if s.corrupt[path] {
		data = append([]byte(nil), data...)
		data[len(data)/2] ^= 0xff
	}
	cut := int64(-1)
	if c := s.cuts[path]; len(c) > 0 && r.Method == http.MethodGet {
		cut, s.cuts[path] = c[0], c[1:]
	}
	noRange := s.noRange
	drip := s.drip[path]
	s.mu.Unlock()

	start, status := 0, http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && !noRange {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		if err != nil || !strings.HasPrefix(rg, "bytes=") || !strings.HasSuffix(rg, "-") || n < 0 {
			http.Error(w, "unsupported range "+rg, http.StatusBadRequest)
			return
		}
		if n >= len(data) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(data)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start, status = n, http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(data)-1, len(data)))
	}
	body := data[start:]
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if drip > 0 {
		for i := range body {
			w.Write(body[i : i+1])
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(drip):
			}
		}
		return
	}
	if cut >= int64(start) && cut < int64(len(data)) {
		w.Write(body[:cut-int64(start)])
		w.(http.Flusher).Flush()
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	w.Write(body)
}
