package serve

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/wgllm/wgllm/runtime/chat"
)

// Ollama's /api/copy and /api/create. A created model is a named entry of
// the model store that points at a GGUF file (no copy of the weights) with
// its own chat template, system prompt and sampling parameters; the
// server lists, shows and serves it like any other model, its parameters
// the defaults of requests that leave them out (see modelDefaults).

// ModelSpec is a model /api/create makes: a name, the GGUF file its
// weights are in (From: a model name or a path on the server, resolved by
// the ModelCreator), and what it changes of that model. Empty fields keep
// the source's own (a created source's, else the file's).
type ModelSpec struct {
	Name       string
	From       string
	Template   string
	System     string
	Parameters map[string]json.RawMessage // Ollama's options, validated
}

// ModelCreator is implemented by a ModelManager that can also create and
// copy models; without it /api/create and /api/copy answer 501.
type ModelCreator interface {
	// Create stores spec under spec.Name, replacing a created model of
	// that name; ErrUnknownModel (wrapped) when From names nothing.
	Create(ctx context.Context, spec ModelSpec) error
	// Copy stores the model source under the name destination;
	// ErrUnknownModel (wrapped) when there is no source.
	Copy(source, destination string) error
}

// ErrInvalidSource is returned (wrapped) by a ModelCreator when "from"
// names something it cannot make a model of (a file that is no GGUF); the
// server answers 400.
var ErrInvalidSource = errors.New("not a model source")

// ErrCannotServe is returned (wrapped) by a ModelCreator whose server
// could not serve the model it would make (one that serves one model
// only); the server answers 501.
var ErrCannotServe = errors.New("this server cannot serve another model")

// createError maps a failed Create or Copy; param is the field of the
// source.
func createError(err error, param string) *apiError {
	switch {
	case errors.Is(err, ErrInvalidSource):
		return invalidParam(param, "%s: %v", param, err)
	case errors.Is(err, ErrCannotServe):
		return &apiError{Status: http.StatusNotImplemented, Type: "server_error", Code: codeUnsupported, Message: err.Error()}
	}
	ae := pullError(err)
	switch ae.Status {
	case http.StatusNotFound:
		ae.Param = param
	case http.StatusInternalServerError:
		ae.Code, ae.Message = "create_failed", err.Error()
	}
	return ae
}

// maxModelNamePart bounds each part of a model name, as Hugging Face does.
const maxModelNamePart = 96

// checkModelName checks a name /api/create or /api/copy would store:
// [namespace/]model[:tag], each part letters, digits, '.', '_' and '-',
// not starting with '.' or '-'. It returns the name without ":latest",
// which every listing adds back.
func checkModelName(field, name string) (string, *apiError) {
	bad := func(why string) (string, *apiError) {
		return "", invalidParam(field, "%s %q is not a model name ([namespace/]model[:tag]): %s", field, name, why)
	}
	if name == "" {
		return bad("it is empty")
	}
	name = strings.TrimSuffix(name, ":latest")
	base, tag, hasTag := strings.Cut(name, ":")
	parts := strings.Split(base, "/")
	if len(parts) > 2 {
		return bad("at most one '/'")
	}
	if hasTag {
		parts = append(parts, tag)
	}
	for _, p := range parts {
		if p == "" || len(p) > maxModelNamePart || p[0] == '.' || p[0] == '-' || strings.Contains(p, "..") {
			return bad("a part is empty, too long, or starts with '.' or '-'")
		}
		for _, c := range []byte(p) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return bad("only letters, digits, '.', '_' and '-'")
			}
		}
	}
	return name, nil
}

// creator is the server's ModelCreator, or the error to answer.
func (s *Server) creator() (ModelCreator, *apiError) {
	if c, ok := s.cfg.Manager.(ModelCreator); ok {
		return c, nil
	}
	return nil, &apiError{Status: http.StatusNotImplemented, Type: "server_error", Code: codeUnsupported,
		Message: "this server cannot create or copy models"}
}

// catalogChanged makes a Registry read its catalog again at once, so a
// model created, copied or deleted is listed (or not) by the next request,
// and unloads the model of that name (if idle) so that its next request
// gets what was stored now.
func catalogChanged(b Backend, name string) {
	if reg, ok := b.(*Registry); ok {
		reg.Unload(name)
		_ = reg.refreshCatalog(true)
	}
}

type ollamaCopyRequest struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
}

func (s *Server) handleOllamaCopy(w http.ResponseWriter, r *http.Request, b Backend) {
	var req ollamaCopyRequest
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	if req.Source == "" {
		writeError(w, invalidParam("source", "source is required"))
		return
	}
	dest, aerr := checkModelName("destination", req.Destination)
	var c ModelCreator
	if aerr == nil {
		c, aerr = s.creator()
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if err := c.Copy(req.Source, dest); err != nil {
		writeError(w, createError(err, "source"))
		return
	}
	catalogChanged(b, dest)
	reqLog(r).Info().Str("source", req.Source).Str("destination", dest).Msg("model copied")
	w.WriteHeader(http.StatusOK)
}

// ollamaCreateRequest is /api/create's body. wgllm takes the weights from
// "from": a model it serves, or the path of a GGUF file on the server;
// Ollama's "files" (blobs uploaded to /api/blobs), "adapters", "quantize",
// "messages" and the old "modelfile" are refused by name.
type ollamaCreateRequest struct {
	Model      string                     `json:"model"`
	Name       string                     `json:"name"` // Ollama's older name for model
	From       string                     `json:"from"`
	Template   string                     `json:"template"`
	System     string                     `json:"system"`
	Parameters map[string]json.RawMessage `json:"parameters"`
	Stream     *bool                      `json:"stream"`

	Files     json.RawMessage `json:"files"`
	Adapters  json.RawMessage `json:"adapters"`
	Quantize  string          `json:"quantize"`
	Messages  json.RawMessage `json:"messages"`
	Modelfile string          `json:"modelfile"`
	Path      string          `json:"path"`
}

// createSpec validates the request into a ModelSpec, naming the field at fault.
func (s *Server) createSpec(r *http.Request, req *ollamaCreateRequest) (ModelSpec, *apiError) {
	unsupported := func(field, what string) *apiError {
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: codeUnsupported,
			Param: field, Message: field + ": " + what}
	}
	switch {
	case !isNull(req.Files):
		return ModelSpec{}, unsupported("files", "uploaded blobs are not supported; name the GGUF file (its path on the server) or a model in \"from\"")
	case !isNull(req.Adapters):
		return ModelSpec{}, unsupported("adapters", "adapters are not supported")
	case req.Quantize != "":
		return ModelSpec{}, unsupported("quantize", "quantizing on create is not supported (use wgllm quantize)")
	case !isNull(req.Messages):
		return ModelSpec{}, unsupported("messages", "stored messages are not supported")
	case req.Modelfile != "" || req.Path != "":
		return ModelSpec{}, unsupported("modelfile", "a Modelfile is not read; send from, template, system and parameters")
	}
	if req.Model == "" {
		req.Model = req.Name
	}
	name, aerr := checkModelName("model", req.Model)
	if aerr != nil {
		return ModelSpec{}, aerr
	}
	if req.From == "" {
		return ModelSpec{}, invalidParam("from", "from is required: a model name, or the path of a GGUF file on the server")
	}
	if req.Template != "" {
		if _, err := chat.New(req.Template, chat.Options{}); err != nil {
			return ModelSpec{}, invalidParam("template", "template: %v", err)
		}
	}
	if _, aerr := s.modelDefaults(r, req.Parameters); aerr != nil {
		return ModelSpec{}, aerr
	}
	return ModelSpec{Name: name, From: req.From, Template: req.Template, System: req.System, Parameters: req.Parameters}, nil
}

func (s *Server) handleOllamaCreate(w http.ResponseWriter, r *http.Request, b Backend) {
	var req ollamaCreateRequest
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	spec, aerr := s.createSpec(r, &req)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	c, aerr := s.creator()
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	// Creating writes a manifest, no weights, so it is done before the
	// answer starts: a failure gets its own status even when streamed.
	if err := c.Create(r.Context(), spec); err != nil {
		reqLog(r).Info().Err(err).Str("model", spec.Name).Msg("create failed")
		writeError(w, createError(err, "from"))
		return
	}
	catalogChanged(b, spec.Name)
	reqLog(r).Info().Str("model", spec.Name).Str("from", spec.From).Msg("model created")
	if req.Stream != nil && !*req.Stream {
		writeJSON(w, http.StatusOK, PullProgress{Status: "success"})
		return
	}
	rc := http.NewResponseController(w)
	write := func(v any) {
		body, _ := json.Marshal(v)
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if _, err := w.Write(append(body, '\n')); err == nil {
			_ = rc.Flush()
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	write(PullProgress{Status: "reading model metadata"})
	for _, layer := range []struct {
		set  bool
		what string
	}{
		{spec.Template != "", "template"}, {spec.System != "", "system"}, {len(spec.Parameters) > 0, "parameters"}} {
		if layer.set {
			write(PullProgress{Status: "creating " + layer.what + " layer"})
		}
	}
	write(PullProgress{Status: "writing manifest"})
	write(PullProgress{Status: "success"})
}
