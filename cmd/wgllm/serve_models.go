package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/internal/modelstore"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/supervisor"
	"github.com/wgllm/wgllm/serve"
)

// The models `wgllm serve` serves: the default model (-m / model.path)
// alone, as before, or, when models.serve_dir or models.list is set, a
// serve.Registry over the default and those models, loaded on demand.

// servedModel is a loaded model with its engine: a serve.LoadedModel and
// a serve.Describer.
type servedModel struct {
	*engine.Engine
	l    *loaded
	info serve.ModelInfo
	cat  *modelCatalog
	path string
}

// Describe is the model's description, with its digest once the
// background hashing has it.
func (m *servedModel) Describe() serve.ModelInfo {
	if info, err := m.cat.describe(m.info.Name, m.path); err == nil {
		return info
	}
	return m.info
}

func (m *servedModel) MemoryBytes() uint64 {
	w, k, s := m.l.m.Memory()
	return w + k + s
}

func (m *servedModel) Close() {
	m.Engine.Close()
	m.l.Close()
}

// describedSupervisor is the one model of `serve -m`: a serve.Describer,
// so that /api/tags, /api/ps and /api/show give its file's size, digest,
// time, details and metadata as they do for a catalog's models.
type describedSupervisor struct {
	*supervisor.Supervisor
	cat *modelCatalog
}

func (d describedSupervisor) Describe() serve.ModelInfo {
	info, err := d.cat.describe(d.cat.defaultName, d.cat.defaultPath)
	if err != nil {
		d.cat.a.log.Warn().Err(err).Msg("describing the model")
		return serve.ModelInfo{Name: d.cat.defaultName}
	}
	return info
}

// namedModel is an entry of models.list.
type namedModel struct {
	Name string `mapstructure:"name"`
	Path string `mapstructure:"path"`
}

// startBackend loads the default model and returns what the server
// serves, and how to close it once the server has stopped.
func (a *app) startBackend(cmd *cobra.Command) (serve.Backend, func(), error) {
	path, err := a.modelPath(cmd)
	if err != nil {
		return nil, nil, err
	}
	cat, err := a.newModelCatalog(path)
	if err != nil {
		return nil, nil, err
	}
	a.serveCreatedDefault(cmd, cat)
	a.catalog.Store(cat)
	if len(cat.extra) == 0 && cat.dir == "" {
		// One model: the supervisor re-creates the device and reloads the
		// model after a GPU device loss.
		sup, err := supervisor.New(func() (*supervisor.Instance, error) {
			l, eng, err := a.startEngineAt(path, cat.defaultName, cat.createdTemplate(cat.defaultName))
			if err != nil {
				return nil, err
			}
			return &supervisor.Instance{Engine: eng, GPU: l.ctx, Close: l.Close}, nil
		}, supervisor.Options{Log: a.log})
		if err != nil {
			return nil, nil, err
		}
		return describedSupervisor{sup, cat}, sup.Close, nil
	}
	reg, err := serve.NewRegistry(cat, serve.RegistryOptions{
		Default:      cat.defaultName,
		MemoryBudget: uint64(a.cfg.GetSizeInBytes("models.gpu_memory_budget")),
		MaxLoaded:    a.cfg.GetInt("models.max_loaded"),
		LoadWait:     a.cfg.GetDuration("models.load_wait"),
		Log:          a.log,
	})
	if err != nil {
		return nil, nil, err
	}
	if err := reg.Preload(context.Background()); err != nil {
		reg.Close()
		return nil, nil, err
	}
	a.log.Info().Str("default", cat.defaultName).Strs("models", modelNames(reg.Models())).Msg("serving several models")
	return reg, reg.Close, nil
}

func modelNames(list []serve.ModelStatus) []string {
	names := make([]string, len(list))
	for i, m := range list {
		names[i] = m.Name
	}
	return names
}

// modelCatalog is the serve.ModelSource of `wgllm serve`: the default
// model, models.list, and every *.gguf in models.serve_dir (named by the file
// name without .gguf), described from their GGUF metadata.
type modelCatalog struct {
	a           *app
	defaultName string
	defaultPath string
	dir         string
	extra       []namedModel

	mu      sync.Mutex
	paths   map[string]string // name → file, as last listed
	created map[string]modelstore.Created
	infos   map[string]cachedInfo
	digests map[string]string // fileKey → sha256
	hashing map[string]bool
}

type cachedInfo struct {
	key  string
	info serve.ModelInfo
}

func (a *app) newModelCatalog(defaultPath string) (*modelCatalog, error) {
	c := &modelCatalog{a: a, defaultPath: defaultPath, dir: a.cfg.GetString("models.serve_dir"),
		paths: map[string]string{}, infos: map[string]cachedInfo{}, digests: map[string]string{}, hashing: map[string]bool{}}
	if err := a.cfg.UnmarshalKey("models.list", &c.extra); err != nil {
		return nil, fmt.Errorf("config models.list: %w (want a list of {name, path})", err)
	}
	for i, m := range c.extra {
		if m.Name == "" || m.Path == "" {
			return nil, fmt.Errorf("config models.list[%d]: name and path are both required", i)
		}
	}
	// The default keeps the name it had when one model was all the server
	// served: general.name, else the file's name.
	f, err := gguf.Open(defaultPath)
	if err != nil {
		return nil, err
	}
	c.defaultName, _ = f.String("general.name")
	f.Close()
	if c.defaultName == "" {
		c.defaultName = filepath.Base(defaultPath)
	}
	return c, nil
}

// Catalog implements serve.ModelSource. A file that cannot be read is
// logged and left out; the default must be readable.
func (c *modelCatalog) Catalog() ([]serve.ModelInfo, error) {
	paths := map[string]string{c.defaultName: c.defaultPath}
	seen := map[string]bool{}
	if abs, err := filepath.Abs(c.defaultPath); err == nil {
		seen[abs] = true
	}
	add := func(name, path string) {
		abs, err := filepath.Abs(path)
		if err != nil || seen[abs] {
			return
		}
		if _, dup := paths[name]; dup {
			c.a.log.Warn().Str("model", name).Str("path", path).Msg("a model of that name is already served; this file is left out")
			return
		}
		seen[abs] = true
		paths[name] = path
	}
	for _, m := range c.extra {
		add(m.Name, m.Path)
	}
	// The model store (wgllm pull, Ollama's /api/pull), by store name.
	if stored, err := c.a.store().List(); err == nil {
		for _, m := range stored {
			add(m.Name, m.Path)
		}
	}
	// Created models (Ollama's /api/create, /api/copy) name files already
	// listed, so only their names must be new.
	created := map[string]modelstore.Created{}
	list, err := c.a.store().ListCreated()
	if err != nil {
		c.a.log.Warn().Err(err).Msg("reading created models")
	}
	for _, m := range list {
		if m.Name == c.defaultName && m.File == c.defaultPath { // serve -m CREATED
			created[m.Name] = m
			continue
		}
		if _, dup := paths[m.Name]; dup {
			c.a.log.Warn().Str("model", m.Name).Msg("a model of that name is already served; the created one is left out")
			continue
		}
		paths[m.Name], created[m.Name] = m.File, m
	}
	c.mu.Lock()
	c.created = created
	c.mu.Unlock()
	if c.dir != "" {
		files, err := filepath.Glob(filepath.Join(c.dir, "*.gguf"))
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
		for _, f := range files {
			add(strings.TrimSuffix(filepath.Base(f), ".gguf"), f)
		}
	}
	names := make([]string, 0, len(paths))
	for n := range paths {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]serve.ModelInfo, 0, len(names))
	for _, name := range names {
		info, err := c.describe(name, paths[name])
		if err != nil {
			if name == c.defaultName {
				return nil, err
			}
			c.a.log.Warn().Err(err).Str("model", name).Msg("model file left out of the catalog")
			continue
		}
		out = append(out, info)
	}
	c.mu.Lock()
	c.paths = paths
	c.mu.Unlock()
	return out, nil
}

// Load implements serve.ModelSource.
func (c *modelCatalog) Load(info serve.ModelInfo) (serve.LoadedModel, error) {
	c.mu.Lock()
	path, ok := c.paths[info.Name]
	c.mu.Unlock()
	if !ok {
		if info.Name != c.defaultName {
			return nil, fmt.Errorf("no file for model %q", info.Name)
		}
		path = c.defaultPath
	}
	l, eng, err := c.a.startEngineAt(path, info.Name, c.createdTemplate(info.Name))
	if err != nil {
		return nil, err
	}
	return &servedModel{Engine: eng, l: l, info: info, cat: c, path: path}, nil
}

// fileKey changes when the file does.
func fileKey(path string, st os.FileInfo) string {
	return fmt.Sprintf("%s|%d|%d", path, st.Size(), st.ModTime().UnixNano())
}

// describe is a model's description: its file's, with what a created
// model changes.
func (c *modelCatalog) describe(name, path string) (serve.ModelInfo, error) {
	info, err := c.describeFile(name, path)
	if err != nil {
		return info, err
	}
	return c.withCreated(info), nil
}

// describeFile reads a model's description from its GGUF metadata (cached
// while the file is unchanged) and estimates its GPU memory with the
// serve settings.
func (c *modelCatalog) describeFile(name, path string) (serve.ModelInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return serve.ModelInfo{}, err
	}
	key := fileKey(path, st)
	c.mu.Lock()
	cached, ok := c.infos[name]
	digest := c.digests[key]
	c.mu.Unlock()
	if ok && cached.key == key {
		cached.info.Digest = digest
		return cached.info, nil
	}
	f, err := gguf.Open(path)
	if err != nil {
		return serve.ModelInfo{}, err
	}
	defer f.Close()
	kt, err := kvType(c.a.cfg.GetString("kv.dtype"))
	if err != nil {
		return serve.ModelInfo{}, err
	}
	est, err := model.Estimate(f, model.Options{CtxLen: c.a.cfg.GetInt("model.context_length"),
		Seqs: max(1, c.a.cfg.GetInt("engine.max_batch")), KVType: kt})
	if err != nil {
		return serve.ModelInfo{}, fmt.Errorf("%s: %w", path, err)
	}
	info := describeGGUF(f)
	info.Name, info.Size, info.ModifiedAt, info.GPUBytes = name, st.Size(), st.ModTime().UTC(), est.Total()
	c.mu.Lock()
	c.infos[name] = cachedInfo{key: key, info: info}
	if !c.hashing[key] {
		c.hashing[key] = true
		go c.hash(key, path)
	}
	c.mu.Unlock()
	info.Digest = digest
	return info, nil
}

// hash computes a file's sha256 in the background: hashing gigabytes must
// not hold up a listing; the digest is "" until it is known.
func (c *modelCatalog) hash(key, path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		c.a.log.Warn().Err(err).Str("path", path).Msg("hashing the model file")
		return
	}
	c.mu.Lock()
	c.digests[key] = hex.EncodeToString(h.Sum(nil))
	c.mu.Unlock()
}

// fileTypeNames are llama.cpp's names for general.file_type.
var fileTypeNames = map[uint64]string{
	0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
	12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 25: "IQ4_NL",
	30: "IQ4_XS", 32: "BF16", 38: "MXFP4_MOE",
}

// maxListedArray is the longest metadata array /api/show lists; longer
// ones (the vocabulary, merges) appear empty, as in Ollama's answer
// without "verbose".
const maxListedArray = 64

// describeGGUF fills what the metadata tells: family, parameter count,
// quantisation, context length, chat template and the metadata itself.
func describeGGUF(f *gguf.File) serve.ModelInfo {
	info := serve.ModelInfo{Format: "gguf", Family: f.Architecture(), Metadata: map[string]any{}}
	var params uint64
	bytesByType := map[gguf.GGMLType]uint64{}
	for _, t := range f.Tensors {
		params += t.Elements()
		bytesByType[t.Type] += t.Size
	}
	info.ParameterSize = humanCount(params)
	if ft, ok := f.Uint("general.file_type"); ok && fileTypeNames[ft] != "" {
		info.QuantizationLevel = fileTypeNames[ft]
	} else {
		var most gguf.GGMLType
		for t, n := range bytesByType {
			if n > bytesByType[most] {
				most = t
			}
		}
		info.QuantizationLevel = most.String()
	}
	if n, ok := f.Uint(info.Family + ".context_length"); ok {
		info.ContextLength = int(n)
	}
	info.Template, _ = f.String("tokenizer.chat_template")
	for k, v := range f.Metadata {
		if k == "tokenizer.chat_template" {
			continue // in "template"
		}
		if rv := reflect.ValueOf(v.V); rv.Kind() == reflect.Slice && rv.Len() > maxListedArray {
			info.Metadata[k] = []any{}
			continue
		}
		if _, err := json.Marshal(v.V); err != nil { // NaN or Inf
			info.Metadata[k] = fmt.Sprint(v.V)
			continue
		}
		info.Metadata[k] = v.V
	}
	info.Metadata["general.parameter_count"] = params
	return info
}

// humanCount writes a parameter count as Ollama does: 30M, 1.1B.
func humanCount(n uint64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.0fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.0fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
