package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/wgllm/wgllm/internal/hub"
	"github.com/wgllm/wgllm/internal/modelstore"
	"github.com/wgllm/wgllm/serve"
)

// storeManager is the serve.ModelManager of `wgllm serve`: Ollama's
// /api/pull and /api/delete on the model store of `wgllm pull` and
// `wgllm rm`.
type storeManager struct{ a *app }

// pullRetries is how often a broken-off download resumes.
const pullRetries = 5

func (m storeManager) Pull(ctx context.Context, ref string, progress func(serve.PullProgress)) (string, error) {
	name, _, err := m.a.pullModel(ctx, ref, "main", pullRetries, func(f hub.File) func(hub.Progress) {
		digest := "sha256:" + f.SHA256
		status := "pulling " + f.Path
		return func(p hub.Progress) {
			progress(serve.PullProgress{Status: status, Digest: digest, Total: p.Total, Completed: p.Done})
		}
	})
	// The hub answers 401 RepoNotFound for a repo that does not exist (or
	// is private), 404 for a missing revision or file.
	var he *hub.HTTPError
	if errors.As(err, &he) && (he.Status == http.StatusNotFound || he.Code == "RepoNotFound") {
		return "", fmt.Errorf("%w: %v", serve.ErrUnknownModel, err)
	}
	return name, err
}

func (m storeManager) Delete(name string) error {
	err := m.a.store().RemoveCreated(strings.TrimSuffix(name, ":latest"))
	if !errors.Is(err, modelstore.ErrNotFound) {
		return err // a created model: its manifest goes, never the file it names
	}
	_, err = m.a.store().Remove(name)
	if errors.Is(err, modelstore.ErrNotFound) {
		return fmt.Errorf("%w: %v", serve.ErrUnknownModel, err)
	}
	return err
}
