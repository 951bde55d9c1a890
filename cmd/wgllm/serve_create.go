package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/internal/modelstore"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/serve"
)

// Ollama's /api/create and /api/copy on the model store: a created model
// is a modelstore.Created manifest, a name for a GGUF file with its own
// template, system prompt and parameters, which the serve catalog lists
// beside the files (modelCatalog.Catalog).

// source is what a model name or path given to create or copy stands for:
// a file and, for a created model, what it changes.
func (m storeManager) source(name string) (modelstore.Created, error) {
	st := m.a.store()
	base := strings.TrimSuffix(name, ":latest")
	if c, err := st.LoadCreated(base); err == nil {
		return c, nil
	} else if !errors.Is(err, modelstore.ErrNotFound) {
		return modelstore.Created{}, err
	}
	if cat := m.a.catalog.Load(); cat != nil {
		if p, ok := cat.pathOf(base); ok {
			return modelstore.Created{File: p}, nil
		}
	}
	if sm, err := st.Resolve(base); err == nil {
		return modelstore.Created{File: sm.Path}, nil
	}
	if !filepath.IsAbs(name) {
		return modelstore.Created{}, fmt.Errorf("%w: %q: no model of that name (a file must be given by its absolute path)", serve.ErrUnknownModel, name)
	}
	if _, err := os.Stat(name); err != nil {
		return modelstore.Created{}, fmt.Errorf("%w: %v", serve.ErrUnknownModel, err)
	}
	f, err := gguf.Open(name)
	if err != nil {
		return modelstore.Created{}, fmt.Errorf("%w: %v", serve.ErrInvalidSource, err)
	}
	f.Close()
	return modelstore.Created{File: filepath.Clean(name)}, nil
}

// servesMany reports whether the server serves models by name (models.list
// or models.serve_dir); with one model, a created one could not be served.
func (m storeManager) servesMany() error {
	if cat := m.a.catalog.Load(); cat != nil && (len(cat.extra) > 0 || cat.dir != "") {
		return nil
	}
	return fmt.Errorf("%w: this server serves one model (serve -m); created and copied models are served by name with models.serve_dir or models.list set", serve.ErrCannotServe)
}

func (m storeManager) Create(ctx context.Context, spec serve.ModelSpec) error {
	if err := m.servesMany(); err != nil {
		return err
	}
	c, err := m.source(spec.From)
	if err != nil {
		return err
	}
	c.Name, c.CreatedAt = spec.Name, time.Now().UTC()
	if spec.Template != "" {
		c.Template = spec.Template
	}
	if spec.System != "" {
		c.System = spec.System
	}
	if len(spec.Parameters) > 0 {
		c.Parameters = spec.Parameters
	}
	return m.a.store().SaveCreated(c)
}

func (m storeManager) Copy(source, destination string) error {
	if err := m.servesMany(); err != nil {
		return err
	}
	c, err := m.source(source)
	if err != nil {
		return err
	}
	c.Name, c.CreatedAt = destination, time.Now().UTC()
	return m.a.store().SaveCreated(c)
}

// serveCreatedDefault makes a created model named by -m (or model.path)
// the default under its own name, with its template, system prompt and
// parameters, in one-model mode as with several.
func (a *app) serveCreatedDefault(cmd *cobra.Command, cat *modelCatalog) {
	name, _ := cmd.Flags().GetString("model")
	if name == "" {
		name = a.cfg.GetString("model.path")
	}
	if _, err := os.Stat(name); err == nil || name == "" {
		return // a file
	}
	c, err := a.store().LoadCreated(strings.TrimSuffix(name, ":latest"))
	if err != nil || c.File != cat.defaultPath {
		return
	}
	cat.mu.Lock()
	cat.defaultName, cat.created = c.Name, map[string]modelstore.Created{c.Name: c}
	cat.mu.Unlock()
}

// pathOf is the file of a model the catalog listed last, or the default's.
func (c *modelCatalog) pathOf(name string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.paths[name]; ok {
		return p, true
	}
	return c.defaultPath, name == c.defaultName
}

// withCreated is a file's description with what a created model of that
// name changes.
func (c *modelCatalog) withCreated(info serve.ModelInfo) serve.ModelInfo {
	c.mu.Lock()
	m, ok := c.created[info.Name]
	c.mu.Unlock()
	if !ok {
		return info
	}
	if m.Template != "" {
		info.Template = m.Template
	}
	info.System, info.Parameters, info.ModifiedAt = m.System, m.Parameters, m.CreatedAt
	return info
}

// createdTemplate is a created model's own template ("" for the file's).
func (c *modelCatalog) createdTemplate(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.created[name].Template
}
