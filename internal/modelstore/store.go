// Package modelstore is the local store of models that `wgllm pull`
// downloads: <dir>/<owner>/<repo>/<path of the file in the repo>. A model
// is named "owner/repo:file"; shorter names resolve when they are
// unambiguous: "owner/repo" (the repo's only model), "owner/repo:Q4_K_M" (a
// quantization tag in the file name) or the file name alone.
package modelstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) when no model in the store has a name.
var ErrNotFound = errors.New("not in the model store")

// Store is a model store rooted at Dir.
type Store struct{ Dir string }

// DefaultDir is <user cache dir>/wgllm/models ($XDG_CACHE_HOME or
// ~/.cache on Linux), or "" when the system has no cache directory.
func DefaultDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "wgllm", "models")
}

// Model is one file in the store.
type Model struct {
	Name    string // owner/repo:file
	Repo    string // owner/repo
	File    string // the file's path in the repo, slash-separated
	Path    string // on disk
	Size    int64
	ModTime time.Time
}

// validPart is a Hugging Face user or repo name: 1 to 96 of A-Z a-z 0-9 . _ -,
// not starting or ending with . or -, without "--" or "..".
func validPart(s string) bool {
	if len(s) == 0 || len(s) > 96 || strings.Contains(s, "--") || strings.Contains(s, "..") {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return !strings.ContainsAny(s[:1], ".-") && !strings.ContainsAny(s[len(s)-1:], ".-")
}

// ValidRepo checks a repo id, "owner/name".
func ValidRepo(repo string) error {
	owner, name, ok := strings.Cut(repo, "/")
	if !ok || !validPart(owner) || !validPart(name) {
		return fmt.Errorf("%q is not a repository id (owner/name, letters, digits, '.', '_' and '-')", repo)
	}
	return nil
}

// ValidFile checks a file path inside a repo: relative, slash-separated,
// no empty, "." or ".." segment, no backslash, colon or control
// character, so it cannot leave the repo's directory on any system.
func ValidFile(file string) error {
	if file == "" || len(file) > 1024 {
		return fmt.Errorf("file name %q: empty or too long", file)
	}
	for _, seg := range strings.Split(file, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("file name %q: not a clean relative path", file)
		}
	}
	for _, c := range file {
		if c < 0x20 || c == 0x7f || c == '\\' || c == ':' {
			return fmt.Errorf("file name %q: contains %q", file, c)
		}
	}
	return nil
}

// isGGUF reports whether a file name ends in .gguf (any case).
func isGGUF(name string) bool { return strings.HasSuffix(strings.ToLower(name), ".gguf") }

// ParseRef splits "owner/repo[:file]" (a leading "hf.co/",
// "huggingface.co/" or "https://huggingface.co/" is dropped) and checks
// both parts; file is "" when absent.
func ParseRef(ref string) (repo, file string, err error) {
	for _, p := range []string{"https://", "http://", "hf.co/", "huggingface.co/"} {
		ref = strings.TrimPrefix(ref, p)
	}
	repo, file, _ = strings.Cut(ref, ":")
	if err := ValidRepo(repo); err != nil {
		return "", "", err
	}
	if file != "" {
		if err := ValidFile(file); err != nil {
			return "", "", err
		}
	}
	return repo, file, nil
}

// Name is the store name of a repo's file.
func Name(repo, file string) string { return repo + ":" + file }

// Path is where the store keeps repo's file.
func (s Store) Path(repo, file string) (string, error) {
	if s.Dir == "" {
		return "", errors.New("no model store directory: set models.dir (WGLLM_MODELS_DIR)")
	}
	if err := ValidRepo(repo); err != nil {
		return "", err
	}
	if err := ValidFile(file); err != nil {
		return "", err
	}
	return filepath.Join(s.Dir, filepath.FromSlash(repo), filepath.FromSlash(file)), nil
}

// List returns the store's models sorted by name; a missing store is empty.
// Downloads in progress (.partial) and stray files are not models.
func (s Store) List() ([]Model, error) {
	if s.Dir == "" {
		return nil, nil
	}
	var models []Model
	err := filepath.WalkDir(s.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == s.Dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if d.IsDir() || !d.Type().IsRegular() || !isGGUF(d.Name()) {
			return nil
		}
		rel, err := filepath.Rel(s.Dir, p)
		if err != nil {
			return nil
		}
		parts := strings.SplitN(filepath.ToSlash(rel), "/", 3)
		if len(parts) < 3 {
			return nil
		}
		repo, file := parts[0]+"/"+parts[1], parts[2]
		if ValidRepo(repo) != nil || ValidFile(file) != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed while listing
		}
		models = append(models, Model{Name: Name(repo, file), Repo: repo, File: file, Path: p, Size: info.Size(), ModTime: info.ModTime()})
		return nil
	})
	sort.Slice(models, func(i, j int) bool { return models[i].Name < models[j].Name })
	return models, err
}

// HasTag reports whether a file's base name holds tag (say Q4_K_M) as a
// whole word, ignoring case: "x-q4_k_m.gguf" has Q4_K_M, "x-Q4_K_M_L" not.
func HasTag(file, tag string) bool {
	if tag == "" {
		return false
	}
	base, t := strings.ToLower(path.Base(file)), strings.ToLower(tag)
	word := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' }
	for i := 0; ; {
		j := strings.Index(base[i:], t)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(t)
		if (start == 0 || !word(base[start-1])) && (end == len(base) || !word(base[end])) {
			return true
		}
		i = start + 1
	}
}

// Resolve finds the model a name means: "owner/repo:file" exactly,
// "owner/repo:TAG", "owner/repo", or a bare file name. More than one match
// is an error that lists them.
func (s Store) Resolve(name string) (Model, error) {
	models, err := s.List()
	if err != nil {
		return Model{}, err
	}
	var match []Model
	repo, rest, hasFile := strings.Cut(name, ":")
	switch {
	case strings.Contains(repo, "/") && hasFile:
		for _, m := range models {
			if m.Repo == repo && m.File == rest {
				return m, nil
			}
		}
		if !isGGUF(rest) {
			for _, m := range models {
				if m.Repo == repo && HasTag(m.File, rest) {
					match = append(match, m)
				}
			}
		}
	case strings.Contains(name, "/"):
		for _, m := range models {
			if m.Repo == name {
				match = append(match, m)
			}
		}
	default:
		for _, m := range models {
			if b := path.Base(m.File); b == name || b == name+".gguf" {
				match = append(match, m)
			}
		}
	}
	switch len(match) {
	case 0:
		return Model{}, fmt.Errorf("%s: %w (%s; see wgllm list)", name, ErrNotFound, s.Dir)
	case 1:
		return match[0], nil
	}
	names := make([]string, len(match))
	for i, m := range match {
		names[i] = m.Name
	}
	return Model{}, fmt.Errorf("%s matches %d models in the store, name one: %s", name, len(match), strings.Join(names, ", "))
}

// PartialSuffix marks a download in progress: the file being written and,
// with ".digest" appended, the checksum it is being written for.
const PartialSuffix = ".partial"

// Remove deletes the model a name resolves to, with any download of it in
// progress, and the directories it leaves empty. An exact "owner/repo:file"
// with only an interrupted download removes that download.
func (s Store) Remove(name string) (Model, error) {
	m, err := s.Resolve(name)
	if errors.Is(err, ErrNotFound) {
		repo, file, perr := ParseRef(name)
		if perr != nil || file == "" {
			return Model{}, err
		}
		p, perr := s.Path(repo, file)
		if perr != nil {
			return Model{}, err
		}
		if _, serr := os.Stat(p + PartialSuffix); serr != nil {
			return Model{}, err
		}
		m = Model{Name: Name(repo, file), Repo: repo, File: file, Path: p}
	} else if err != nil {
		return Model{}, err
	}
	if err := os.Remove(m.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Model{}, err
	}
	for _, extra := range []string{PartialSuffix, PartialSuffix + ".digest"} {
		if err := os.Remove(m.Path + extra); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return Model{}, err
		}
	}
	// Remove directories left empty, up to (not including) the store root.
	root := filepath.Clean(s.Dir)
	for dir := filepath.Dir(m.Path); dir != root && strings.HasPrefix(dir, root+string(filepath.Separator)); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break // not empty
		}
	}
	return m, nil
}
