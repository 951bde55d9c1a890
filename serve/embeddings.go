package serve

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/wgllm/wgllm/runtime/engine"
)

// Embedder is implemented by a Backend that computes embeddings (the
// engine, the supervisor).
type Embedder interface {
	Embed(ctx context.Context, req engine.EmbedRequest) (engine.EmbedResult, error)
}

// maxEmbedInputs bounds the inputs of one embeddings request.
const maxEmbedInputs = 2048

// embed runs req on the named model's backend; param names the input
// field in errors (input, prompt).
func (s *Server) embed(r *http.Request, b Backend, model, param string, req engine.EmbedRequest) (engine.EmbedResult, time.Duration, *apiError) {
	mb, release, loaded, aerr := s.modelBackend(r.Context(), b, model)
	if aerr != nil {
		return engine.EmbedResult{}, 0, aerr
	}
	defer release()
	e, ok := mb.(Embedder)
	if !ok {
		return engine.EmbedResult{}, 0, &apiError{Status: http.StatusNotImplemented, Type: "server_error", Code: codeUnsupported,
			Message: "this model's backend does not compute embeddings"}
	}
	res, err := e.Embed(r.Context(), req)
	if err != nil {
		var ie *engine.InputError
		switch {
		case errors.As(err, &ie) && errors.Is(err, engine.ErrPromptTooLong):
			ae := invalidParam(param, "%s[%d]: %v", param, ie.Index, ie.Err)
			ae.Code = codeContextLength
			return res, loaded, ae
		case errors.As(err, &ie):
			return res, loaded, invalidParam(param, "%s[%d]: %v", param, ie.Index, ie.Err)
		case errors.Is(err, context.Canceled):
			return res, loaded, &apiError{Status: http.StatusServiceUnavailable, Type: "unavailable_error", Code: codeBusy,
				Message: "the request ended before its embeddings were computed"}
		}
		return res, loaded, submitError(err)
	}
	return res, loaded, nil
}

// embedInputs reads OpenAI's input: a string, an array of strings, an
// array of token ids, or an array of such arrays.
func embedInputs(raw json.RawMessage, param string) ([]engine.EmbedInput, *apiError) {
	raw = bytes.TrimSpace(raw)
	bad := invalidParam(param, "%s must be a string, an array of strings, an array of token ids or an array of token-id arrays", param)
	if isNull(raw) {
		return nil, invalidParam(param, "%s is required", param)
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []engine.EmbedInput{{Text: one}}, nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil, bad
	}
	if len(items) == 0 {
		return nil, invalidParam(param, "%s must not be empty", param)
	}
	if len(items) > maxEmbedInputs {
		return nil, invalidParam(param, "at most %d inputs", maxEmbedInputs)
	}
	var tokens []int32
	if json.Unmarshal(raw, &tokens) == nil {
		return []engine.EmbedInput{{Tokens: tokens}}, nil
	}
	out := make([]engine.EmbedInput, len(items))
	for i, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil {
			out[i] = engine.EmbedInput{Text: s}
			continue
		}
		var ids []int32
		if json.Unmarshal(it, &ids) != nil {
			return nil, bad
		}
		if len(ids) == 0 {
			return nil, invalidParam(param, "%s[%d] is empty", param, i)
		}
		out[i] = engine.EmbedInput{Tokens: ids}
	}
	return out, nil
}

type embeddingsRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
}

type embeddingOut struct {
	Object    string `json:"object"` // embedding
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or base64 of little-endian float32s
}

// handleEmbeddings serves OpenAI's /v1/embeddings: unit vectors, as
// floats or base64.
func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request, b Backend) {
	var req embeddingsRequest
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	if req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64" {
		writeError(w, invalidParam("encoding_format", "encoding_format %q: want float or base64", req.EncodingFormat))
		return
	}
	inputs, aerr := embedInputs(req.Input, "input")
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	res, _, aerr := s.embed(r, b, req.Model, "input", engine.EmbedRequest{Inputs: inputs, Normalize: true})
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if req.Dimensions != nil && len(res.Vectors) > 0 && *req.Dimensions != len(res.Vectors[0]) {
		writeError(w, &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: codeUnsupported,
			Param: "dimensions", Message: fmt.Sprintf("dimensions %d: this model's embeddings have %d", *req.Dimensions, len(res.Vectors[0]))})
		return
	}
	data := make([]embeddingOut, len(res.Vectors))
	for i, v := range res.Vectors {
		data[i] = embeddingOut{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			data[i].Embedding = base64Floats(v)
		}
	}
	model := req.Model
	if model == "" {
		model = b.ModelName()
	}
	writeJSON(w, http.StatusOK, struct {
		Object string         `json:"object"`
		Data   []embeddingOut `json:"data"`
		Model  string         `json:"model"`
		Usage  embedUsage     `json:"usage"`
	}{Object: "list", Data: data, Model: model, Usage: embedUsage{res.PromptTokens, res.PromptTokens}})
}

type embedUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

func base64Floats(v []float32) string {
	buf := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(x))
	}
	return base64.StdEncoding.EncodeToString(buf)
}

type ollamaEmbedRequest struct {
	Model    string          `json:"model"`
	Input    json.RawMessage `json:"input"`
	Truncate *bool           `json:"truncate"`
	// /api/embeddings (the older endpoint) takes one prompt.
	Prompt *string `json:"prompt"`
}

// handleOllamaEmbed serves /api/embed: unit vectors for one input or many,
// inputs over the context cut to fit unless truncate is false.
func (s *Server) handleOllamaEmbed(w http.ResponseWriter, r *http.Request, b Backend) {
	start := time.Now()
	var req ollamaEmbedRequest
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	if aerr := knownModel(b, req.Model); aerr != nil {
		writeError(w, aerr)
		return
	}
	inputs, aerr := embedInputs(req.Input, "input")
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	truncate := req.Truncate == nil || *req.Truncate
	res, loaded, aerr := s.embed(r, b, req.Model, "input", engine.EmbedRequest{Inputs: inputs, Normalize: true, Truncate: truncate})
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Model           string      `json:"model"`
		Embeddings      [][]float32 `json:"embeddings"`
		TotalDuration   int64       `json:"total_duration"`
		LoadDuration    int64       `json:"load_duration"`
		PromptEvalCount int         `json:"prompt_eval_count"`
	}{req.Model, res.Vectors, time.Since(start).Nanoseconds(), loaded.Nanoseconds(), res.PromptTokens})
}

// handleOllamaEmbeddings serves the older /api/embeddings: one prompt,
// the vector as the model gives it (not normalised, as Ollama does).
func (s *Server) handleOllamaEmbeddings(w http.ResponseWriter, r *http.Request, b Backend) {
	var req ollamaEmbedRequest
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	if aerr := knownModel(b, req.Model); aerr != nil {
		writeError(w, aerr)
		return
	}
	if req.Prompt == nil || *req.Prompt == "" {
		writeJSON(w, http.StatusOK, struct {
			Embedding []float32 `json:"embedding"`
		}{[]float32{}})
		return
	}
	res, _, aerr := s.embed(r, b, req.Model, "prompt", engine.EmbedRequest{Inputs: []engine.EmbedInput{{Text: *req.Prompt}}})
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Embedding []float32 `json:"embedding"`
	}{res.Vectors[0]})
}
