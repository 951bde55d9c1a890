package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/runtime/engine"
)

// Several models: a Registry is a Backend that serves the default model
// itself and hands out the others by name (Router), loading them on demand
// within a GPU memory budget and evicting the least recently used idle one
// to make room. It knows nothing of GPUs: a ModelSource (cmd/wgllm's reads
// GGUF files and loads them on the GPU) lists and loads the models.

// ModelInfo describes a model for listings (/v1/models, /api/tags,
// /api/ps) and /api/show. Fields a source does not know stay zero.
type ModelInfo struct {
	Name              string
	Size              int64     // bytes of the model file
	ModifiedAt        time.Time // of the model file
	Digest            string    // sha256 of the file in hex; "" while unknown
	Format            string    // "gguf"
	Family            string    // architecture: llama, qwen2, qwen3
	ParameterSize     string    // "30M", "1.1B"
	QuantizationLevel string    // the file type: "Q4_K_M", "F16"
	ContextLength     int
	Template          string // the chat template: a created model's, else as stored in the file
	System            string // a created model's system prompt, for chats that have none
	// Parameters are a created model's sampling defaults, in Ollama's
	// names and values (temperature, top_k, stop, num_predict…).
	Parameters map[string]json.RawMessage
	Metadata   map[string]any // the file's metadata, long arrays left out
	// GPUBytes is the GPU memory the model needs once loaded (weights, KV
	// cache, scratch), estimated before loading; a Registry reserves it
	// while the model loads.
	GPUBytes uint64
}

// Describer is implemented by a Backend that can describe its model; the
// listings of a server with one model use it when present.
type Describer interface {
	Describe() ModelInfo
}

// Router is implemented by a Backend that serves several models (see
// Registry). Handlers that read a request's "model" ask it for that
// model's backend; a plain Backend serves every name.
type Router interface {
	Backend
	// Acquire returns the backend of the named model ("" is the default),
	// loading it first if need be. release must be called once the
	// request is done with it (after its job's Done event); until then
	// the model is not evicted.
	Acquire(ctx context.Context, name string) (b Backend, release func(), err error)
	// Models lists the models that can be served, loaded or not.
	Models() []ModelStatus
}

// ModelStatus is a model of a Router with its state.
type ModelStatus struct {
	ModelInfo
	Loaded      bool
	Loading     bool
	MemoryBytes uint64    // GPU memory held now: the estimate while loading, then the model's own
	InUse       int       // requests holding it
	LastUsed    time.Time // zero if never used
}

// LoadedModel is a model a Registry holds.
type LoadedModel interface {
	Backend
	// MemoryBytes is the GPU memory the model uses.
	MemoryBytes() uint64
	// Close stops the model's engine (failing jobs still running) and
	// frees its GPU memory.
	Close()
}

// ModelSource finds and loads the models a Registry serves.
type ModelSource interface {
	// Catalog lists the models that can be loaded. It is called again when
	// a request names a model it did not list (at most once a second), so
	// models added to a directory appear without a restart.
	Catalog() ([]ModelInfo, error)
	// Load loads a model of the catalog. It may take long; it is never
	// called twice at once for the same name.
	Load(info ModelInfo) (LoadedModel, error)
}

// RegistryOptions configure a Registry.
type RegistryOptions struct {
	// Default is the model of requests that name none, of the websocket and
	// of /health. It is loaded by Preload and never evicted.
	Default string
	// MemoryBudget bounds the GPU memory of all loaded models together, in
	// bytes; 0: no bound.
	MemoryBudget uint64
	// MaxLoaded bounds how many models are loaded at once; 0: no bound.
	MaxLoaded int
	// LoadWait is how long a request waits for room while every model that
	// could be evicted is busy (503 after). Default 60s.
	LoadWait time.Duration
	Log      zerolog.Logger
}

// Errors of Registry.Acquire.
var (
	ErrUnknownModel  = errors.New("model not found")
	ErrModelTooLarge = errors.New("model does not fit the GPU memory budget")
	ErrNoRoom        = errors.New("no room to load the model: the models that would make room are busy")
)

// catalogRefresh is the least time between two reads of the catalog.
const catalogRefresh = time.Second

// Registry loads models on demand and keeps them within a memory budget.
// It is a Backend for the default model (Submit, RenderChat, ModelName),
// finds any loaded model's jobs (Status, Cancel) and sums their Metrics.
type Registry struct {
	src ModelSource
	opt RegistryOptions
	log zerolog.Logger

	catMu     sync.Mutex
	catalog   map[string]ModelInfo
	catalogAt time.Time

	mu      sync.Mutex
	entries map[string]*regEntry // loading or loaded
	changed chan struct{}        // closed and replaced whenever room may have appeared
	retired engine.Metrics       // counters of evicted models, so totals never go down
	closed  bool
}

type regEntry struct {
	info     ModelInfo
	ready    chan struct{} // closed when loading ends
	model    LoadedModel   // nil while loading and after a failure
	err      error         // why loading failed
	bytes    uint64
	refs     int
	lastUsed time.Time
}

// NewRegistry reads src's catalog, which must hold opt.Default.
func NewRegistry(src ModelSource, opt RegistryOptions) (*Registry, error) {
	if opt.LoadWait <= 0 {
		opt.LoadWait = 60 * time.Second
	}
	r := &Registry{src: src, opt: opt, log: opt.Log, entries: map[string]*regEntry{}, changed: make(chan struct{})}
	if err := r.refreshCatalog(true); err != nil {
		return nil, err
	}
	if _, ok := r.catalog[opt.Default]; !ok {
		return nil, fmt.Errorf("serve: default model %q is not in the catalog (%s)", opt.Default, strings.Join(r.names(), ", "))
	}
	return r, nil
}

func (r *Registry) refreshCatalog(force bool) error {
	r.catMu.Lock()
	defer r.catMu.Unlock()
	if !force && time.Since(r.catalogAt) < catalogRefresh {
		return nil
	}
	r.catalogAt = time.Now()
	list, err := r.src.Catalog()
	if err != nil {
		if r.catalog != nil {
			r.log.Warn().Err(err).Msg("reading the model catalog; keeping the previous one")
			return nil
		}
		return fmt.Errorf("serve: model catalog: %w", err)
	}
	cat := make(map[string]ModelInfo, len(list))
	for _, m := range list {
		cat[m.Name] = m
	}
	r.catalog = cat
	return nil
}

func (r *Registry) names() []string {
	r.catMu.Lock()
	defer r.catMu.Unlock()
	names := make([]string, 0, len(r.catalog))
	for n := range r.catalog {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// lookup finds name in the catalog: "" is the default, and Ollama's
// ":latest" tag may be added to a name that has no tag.
func (r *Registry) lookup(name string) (ModelInfo, bool) {
	if name == "" {
		name = r.opt.Default
	}
	r.catMu.Lock()
	defer r.catMu.Unlock()
	if m, ok := r.catalog[name]; ok {
		return m, true
	}
	if base, ok := strings.CutSuffix(name, ":latest"); ok {
		m, ok := r.catalog[base]
		return m, ok
	}
	return ModelInfo{}, false
}

// resolve is lookup, reading the catalog again on a miss.
func (r *Registry) resolve(name string) (ModelInfo, error) {
	if m, ok := r.lookup(name); ok {
		return m, nil
	}
	_ = r.refreshCatalog(false)
	if m, ok := r.lookup(name); ok {
		return m, nil
	}
	return ModelInfo{}, fmt.Errorf("%w: %q (this server serves %s)", ErrUnknownModel, name, strings.Join(r.names(), ", "))
}

// Preload loads the default model and waits for it.
func (r *Registry) Preload(ctx context.Context) error {
	_, release, err := r.Acquire(ctx, r.opt.Default)
	if err != nil {
		return err
	}
	release()
	return nil
}

// Acquire implements Router.
func (r *Registry) Acquire(ctx context.Context, name string) (Backend, func(), error) {
	info, err := r.resolve(name)
	if err != nil {
		return nil, nil, err
	}
	deadline := time.NewTimer(r.opt.LoadWait)
	defer deadline.Stop()
	r.mu.Lock()
	for {
		if r.closed {
			r.mu.Unlock()
			return nil, nil, engine.ErrClosed
		}
		e := r.entries[info.Name]
		if e == nil {
			victims, fits, never := r.makeRoom(info)
			if never != nil {
				r.mu.Unlock()
				return nil, nil, never
			}
			if fits {
				for _, v := range victims {
					delete(r.entries, v.info.Name)
					r.retire(v.model.Metrics())
				}
				e = &regEntry{info: info, ready: make(chan struct{}), bytes: info.GPUBytes}
				r.entries[info.Name] = e
				go r.load(e, victims)
			}
		}
		if e != nil {
			e.refs++
			r.mu.Unlock()
			select {
			case <-e.ready:
			case <-ctx.Done():
				r.release(e)
				return nil, nil, ctx.Err()
			}
			if e.err != nil {
				r.release(e)
				return nil, nil, e.err
			}
			var once sync.Once
			return e.model, func() { once.Do(func() { r.release(e) }) }, nil
		}
		// Every model that could make room is busy: wait for one to finish.
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-deadline.C:
			return nil, nil, fmt.Errorf("%w (waited %v for %q)", ErrNoRoom, r.opt.LoadWait, info.Name)
		}
		r.mu.Lock()
	}
}

// makeRoom decides, under r.mu, whether info can be loaded now and which
// idle models to evict for it (least recently used first). never is set
// when it cannot fit even with every other evictable model gone.
func (r *Registry) makeRoom(info ModelInfo) (victims []*regEntry, fits bool, never error) {
	var used, pinned uint64
	for _, e := range r.entries {
		used += e.bytes
		if e.info.Name == r.opt.Default {
			pinned += e.bytes
		}
	}
	budget, maxN := r.opt.MemoryBudget, r.opt.MaxLoaded
	if budget > 0 && info.Name != r.opt.Default && info.GPUBytes+pinned > budget {
		return nil, false, fmt.Errorf("%w: %q needs %s, the budget is %s and the default model %q holds %s",
			ErrModelTooLarge, info.Name, humanBytes(info.GPUBytes), humanBytes(budget), r.opt.Default, humanBytes(pinned))
	}
	if budget > 0 && info.GPUBytes > budget {
		return nil, false, fmt.Errorf("%w: %q needs %s, the budget is %s", ErrModelTooLarge, info.Name, humanBytes(info.GPUBytes), humanBytes(budget))
	}
	if _, defaultIn := r.entries[r.opt.Default]; maxN == 1 && defaultIn && info.Name != r.opt.Default {
		return nil, false, fmt.Errorf("%w: max_loaded 1 leaves no room beside the default model %q", ErrModelTooLarge, r.opt.Default)
	}
	fitsNow := func(used uint64, n int) bool {
		return (budget == 0 || used+info.GPUBytes <= budget) && (maxN == 0 || n+1 <= maxN)
	}
	n := len(r.entries)
	if fitsNow(used, n) {
		return nil, true, nil
	}
	var idle []*regEntry
	for _, e := range r.entries {
		if e.refs == 0 && e.model != nil && e.info.Name != r.opt.Default {
			idle = append(idle, e)
		}
	}
	slices.SortFunc(idle, func(a, b *regEntry) int { return a.lastUsed.Compare(b.lastUsed) })
	for _, e := range idle {
		victims = append(victims, e)
		used -= e.bytes
		n--
		if fitsNow(used, n) {
			return victims, true, nil
		}
	}
	return nil, false, nil
}

// load closes the evicted models, then loads e's.
func (r *Registry) load(e *regEntry, victims []*regEntry) {
	for _, v := range victims {
		v.model.Close()
		r.log.Info().Str("model", v.info.Name).Str("for", e.info.Name).Msg("evicted the least recently used model")
	}
	t0 := time.Now()
	m, err := r.loadModel(e.info)
	r.mu.Lock()
	if err != nil {
		e.err = fmt.Errorf("loading model %q: %w", e.info.Name, err)
		delete(r.entries, e.info.Name) // a later request tries again
		r.log.Error().Err(err).Str("model", e.info.Name).Msg("loading the model failed")
	} else {
		e.model, e.bytes, e.lastUsed = m, m.MemoryBytes(), time.Now()
		r.log.Info().Str("model", e.info.Name).Uint64("gpu_bytes", e.bytes).Dur("took", time.Since(t0)).Msg("model loaded")
	}
	closed := r.closed
	r.notify()
	r.mu.Unlock()
	close(e.ready)
	if closed && m != nil {
		m.Close()
	}
}

// loadModel calls the source, turning a panic into an error so that one
// bad file cannot take the server down.
func (r *Registry) loadModel(info ModelInfo) (m LoadedModel, err error) {
	defer func() {
		if v := recover(); v != nil {
			m, err = nil, fmt.Errorf("panic while loading: %v", v)
		}
	}()
	return r.src.Load(info)
}

func (r *Registry) release(e *regEntry) {
	r.mu.Lock()
	e.refs--
	e.lastUsed = time.Now()
	r.notify()
	r.mu.Unlock()
}

// notify wakes the requests waiting for room; r.mu is held.
func (r *Registry) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Registry) retire(m engine.Metrics) {
	r.retired.TokensGenerated += m.TokensGenerated
	r.retired.PromptTokens += m.PromptTokens
	r.retired.RequestsFinished += m.RequestsFinished
}

// Unload evicts the named model now if it is loaded, idle and not the
// default (Ollama's keep_alive 0); it reports whether it did.
func (r *Registry) Unload(name string) bool {
	info, ok := r.lookup(name)
	if !ok {
		return false
	}
	r.mu.Lock()
	e := r.entries[info.Name]
	if e == nil || e.model == nil || e.refs > 0 || info.Name == r.opt.Default {
		r.mu.Unlock()
		return false
	}
	delete(r.entries, info.Name)
	r.retire(e.model.Metrics())
	r.notify()
	r.mu.Unlock()
	e.model.Close()
	r.log.Info().Str("model", info.Name).Msg("unloaded on request")
	return true
}

// Models implements Router: the catalog, sorted by name, with each
// model's state.
func (r *Registry) Models() []ModelStatus {
	_ = r.refreshCatalog(false)
	r.catMu.Lock()
	out := make([]ModelStatus, 0, len(r.catalog))
	for _, m := range r.catalog {
		out = append(out, ModelStatus{ModelInfo: m})
	}
	r.catMu.Unlock()
	r.mu.Lock()
	for i := range out {
		if e := r.entries[out[i].Name]; e != nil {
			out[i].Loaded, out[i].Loading = e.model != nil, e.model == nil
			out[i].MemoryBytes, out[i].InUse, out[i].LastUsed = e.bytes, e.refs, e.lastUsed
		}
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// loadedModels returns the loaded models, the default first.
func (r *Registry) loadedModels() []LoadedModel {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]LoadedModel, 0, len(r.entries))
	if e := r.entries[r.opt.Default]; e != nil && e.model != nil {
		out = append(out, e.model)
	}
	for name, e := range r.entries {
		if name != r.opt.Default && e.model != nil {
			out = append(out, e.model)
		}
	}
	return out
}

func (r *Registry) defaultModel() LoadedModel {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.entries[r.opt.Default]; e != nil {
		return e.model
	}
	return nil
}

// Submit queues a job on the default model.
func (r *Registry) Submit(job engine.Job, emit func(engine.Event)) (string, error) {
	m := r.defaultModel()
	if m == nil {
		return "", engine.ErrNotReady
	}
	return m.Submit(job, emit)
}

// Cancel cancels the job on whichever loaded model runs it.
func (r *Registry) Cancel(id string) bool {
	for _, m := range r.loadedModels() {
		if m.Cancel(id) {
			return true
		}
	}
	return false
}

// Status finds the job on the loaded models (a model's records go with it
// when it is evicted).
func (r *Registry) Status(id string) (engine.Status, bool) {
	for _, m := range r.loadedModels() {
		if st, ok := m.Status(id); ok {
			return st, true
		}
	}
	return engine.Status{}, false
}

// RenderChat uses the default model's template.
func (r *Registry) RenderChat(c engine.Chat) (engine.RenderedChat, error) {
	m := r.defaultModel()
	if m == nil {
		return engine.RenderedChat{}, engine.ErrNotReady
	}
	return m.RenderChat(c)
}

// ModelName is the default model's name.
func (r *Registry) ModelName() string { return r.opt.Default }

// Describe describes the default model.
func (r *Registry) Describe() ModelInfo {
	info, _ := r.lookup(r.opt.Default)
	return info
}

// Metrics sums the loaded models' metrics; the counters include the
// models evicted since start.
func (r *Registry) Metrics() engine.Metrics {
	r.mu.Lock()
	sum := r.retired
	r.mu.Unlock()
	for _, m := range r.loadedModels() {
		x := m.Metrics()
		sum.QueueDepth += x.QueueDepth
		sum.QueueLimit += x.QueueLimit
		sum.ActiveSequences += x.ActiveSequences
		sum.KVBlocksUsed += x.KVBlocksUsed
		sum.KVBlocksTotal += x.KVBlocksTotal
		sum.TokensGenerated += x.TokensGenerated
		sum.PromptTokens += x.PromptTokens
		sum.RequestsFinished += x.RequestsFinished
	}
	return sum
}

// Close closes every model, after the ones loading have loaded. Call it
// once the server has stopped.
func (r *Registry) Close() {
	r.mu.Lock()
	r.closed = true
	entries := make([]*regEntry, 0, len(r.entries))
	for _, e := range r.entries {
		entries = append(entries, e)
	}
	r.entries = map[string]*regEntry{}
	r.notify()
	r.mu.Unlock()
	for _, e := range entries {
		<-e.ready
		if e.model != nil {
			e.model.Close()
		}
	}
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// --- server side -----------------------------------------------------------

// modelBackend returns the backend for a request's model: b itself when
// it serves one model (the name is then not checked: clients often send
// a fixed name), else the named model of the Router, loaded if need be.
// release must be called once the request's job has ended; loaded says
// how long the request waited for the model.
func (s *Server) modelBackend(ctx context.Context, b Backend, name string) (mb Backend, release func(), loaded time.Duration, aerr *apiError) {
	rt, ok := b.(Router)
	if !ok {
		return b, func() {}, 0, nil
	}
	t0 := time.Now()
	mb, release, err := rt.Acquire(ctx, name)
	if err != nil {
		return nil, nil, 0, modelError(err)
	}
	return mb, release, time.Since(t0), nil
}

const codeModelNotFound = "model_not_found"

// modelError maps an error of Router.Acquire.
func modelError(err error) *apiError {
	switch {
	case errors.Is(err, ErrUnknownModel):
		return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: codeModelNotFound,
			Param: "model", Message: err.Error()}
	case errors.Is(err, ErrModelTooLarge):
		return &apiError{Status: http.StatusInsufficientStorage, Type: "server_error", Code: "model_too_large",
			Param: "model", Message: err.Error()}
	case errors.Is(err, ErrNoRoom):
		return &apiError{Status: http.StatusServiceUnavailable, Type: "unavailable_error", Code: codeBusy, Message: err.Error()}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusServiceUnavailable, Type: "unavailable_error", Code: codeLoading,
			Message: "the request ended while its model was loading"}
	case errors.Is(err, engine.ErrClosed):
		return errShuttingDown
	}
	return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "model_load_failed", Message: err.Error()}
}

// modelList is what /v1/models and /api/tags list.
func modelList(b Backend) []ModelStatus {
	if rt, ok := b.(Router); ok {
		return rt.Models()
	}
	info := ModelInfo{Name: b.ModelName()}
	if d, ok := b.(Describer); ok {
		info = d.Describe()
		info.Name = b.ModelName()
	}
	return []ModelStatus{{ModelInfo: info, Loaded: true, MemoryBytes: info.GPUBytes}}
}

// describe finds a model's description without loading it; a plain
// Backend describes its one model under any name.
func describe(b Backend, name string) (ModelStatus, *apiError) {
	if rt, ok := b.(Router); ok {
		list := rt.Models()
		want := name
		if want == "" {
			want = b.ModelName()
		}
		for _, m := range list {
			if m.Name == want || m.Name+":latest" == want {
				return m, nil
			}
		}
		names := make([]string, len(list))
		for i, m := range list {
			names[i] = m.Name
		}
		return ModelStatus{}, modelError(fmt.Errorf("%w: %q (this server serves %s)", ErrUnknownModel, name, strings.Join(names, ", ")))
	}
	return modelList(b)[0], nil
}
