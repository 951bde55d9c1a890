package modelstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Created is a model made by Ollama's /api/create or /api/copy: a name for
// a GGUF file (in the store or anywhere, not copied) with its own chat
// template, system prompt and sampling parameters, kept as a small JSON
// manifest in <dir>/.created/.
type Created struct {
	Name       string                     `json:"name"`
	File       string                     `json:"file"` // absolute path of the GGUF file
	Template   string                     `json:"template,omitempty"`
	System     string                     `json:"system,omitempty"`
	Parameters map[string]json.RawMessage `json:"parameters,omitempty"`
	CreatedAt  time.Time                  `json:"created_at"`
}

// createdDir holds the manifests; List skips it (it holds no .gguf).
const createdDir = ".created"

// createdPath is where the manifest of name is kept: the name escaped into
// one file name, so '/' and ':' cannot leave the directory.
func (s Store) createdPath(name string) (string, error) {
	if s.Dir == "" {
		return "", errors.New("no model store directory: set models.dir (WGLLM_MODELS_DIR)")
	}
	if name == "" || len(name) > 256 || strings.ContainsAny(name, "\\\x00") {
		return "", fmt.Errorf("%q is not a model name", name)
	}
	return filepath.Join(s.Dir, createdDir, url.QueryEscape(name)+".json"), nil
}

// SaveCreated writes c's manifest, replacing one of the same name; the
// file is written whole or not at all.
func (s Store) SaveCreated(c Created) error {
	p, err := s.createdPath(c.Name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	body, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".manifest-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(body, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

// LoadCreated reads the manifest of name; ErrNotFound (wrapped) when there
// is none.
func (s Store) LoadCreated(name string) (Created, error) {
	p, err := s.createdPath(name)
	if err != nil {
		return Created{}, err
	}
	body, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Created{}, fmt.Errorf("%s: %w (no created model of that name)", name, ErrNotFound)
	}
	if err != nil {
		return Created{}, err
	}
	var c Created
	if err := json.Unmarshal(body, &c); err != nil || c.Name != name || c.File == "" {
		return Created{}, fmt.Errorf("%s: a broken manifest (%v)", p, err)
	}
	return c, nil
}

// ListCreated returns the created models sorted by name; a broken
// manifest is left out and reported in the error with the others listed.
func (s Store) ListCreated() ([]Created, error) {
	if s.Dir == "" {
		return nil, nil
	}
	files, err := filepath.Glob(filepath.Join(s.Dir, createdDir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Created
	var errs []error
	for _, f := range files {
		name, err := url.QueryUnescape(strings.TrimSuffix(filepath.Base(f), ".json"))
		if err != nil {
			continue
		}
		c, err := s.LoadCreated(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errors.Join(errs...)
}

// RemoveCreated deletes the manifest of name (never the GGUF file it
// points at); ErrNotFound (wrapped) when there is none.
func (s Store) RemoveCreated(name string) error {
	p, err := s.createdPath(name)
	if err != nil {
		return err
	}
	err = os.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w (no created model of that name)", name, ErrNotFound)
	}
	return err
}
