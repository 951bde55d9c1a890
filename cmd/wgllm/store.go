package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/wgllm/wgllm/internal/modelstore"
)

// store is the model store of `wgllm pull`, `list` and `rm`.
func (a *app) store() modelstore.Store {
	dir := a.cfg.GetString("models.dir")
	if dir == "" {
		dir = modelstore.DefaultDir()
	}
	return modelstore.Store{Dir: dir}
}

// resolveModel turns a -m argument into a file: an existing path as it
// is, else a created model's file, else a model-store name
// (owner/repo:file, owner/repo, owner/repo:TAG or a file name).
func (a *app) resolveModel(name string) (string, error) {
	if _, err := os.Stat(name); !errors.Is(err, fs.ErrNotExist) {
		return name, nil // a file (or one the loader will report on)
	}
	if c, err := a.store().LoadCreated(strings.TrimSuffix(name, ":latest")); err == nil {
		return c.File, nil // a model of Ollama's /api/create: its file
	}
	m, err := a.store().Resolve(name)
	if errors.Is(err, modelstore.ErrNotFound) {
		return "", fmt.Errorf("model %s: no such file, and no model of that name in the store at %s (see wgllm list)", name, a.store().Dir)
	}
	if err != nil {
		return "", err
	}
	return m.Path, nil
}
