package serve

import (
	"net/http"
	"unicode/utf8"

	"github.com/wgllm/wgllm/runtime/engine"
)

// /tokenize and /detokenize in llama.cpp server's shapes, and /props, the
// limits a client (the chat page) should offer.

// TokenCodec is implemented by a Backend that can show its tokenizer and
// context (engine.Engine, the supervisor, a Registry's default model).
type TokenCodec interface {
	Tokenize(text string, addSpecial bool) ([]int32, error)
	TokenPiece(id int32) string
	Detokenize(ids []int32) (string, error)
	ContextLength() int
}

var errNoTokenizer = &apiError{Status: http.StatusNotImplemented, Type: "server_error", Code: codeUnsupported,
	Message: "this backend does not expose its tokenizer"}

// maxDetokenize bounds the ids of one /detokenize.
const maxDetokenize = 1 << 20

type tokenizeRequest struct {
	Content    string `json:"content"`
	AddSpecial bool   `json:"add_special"`
	WithPieces bool   `json:"with_pieces"`
}

type tokenPiece struct {
	ID    int32  `json:"id"`
	Piece string `json:"piece"`
}

// handleTokenize: {"content", "add_special", "with_pieces"} →
// {"tokens": [ids]} or, with_pieces, {"tokens": [{"id", "piece"}]}.
func (s *Server) handleTokenize(w http.ResponseWriter, r *http.Request, b Backend) {
	var req tokenizeRequest
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	tc, ok := b.(TokenCodec)
	if !ok {
		writeError(w, errNoTokenizer)
		return
	}
	if !utf8.ValidString(req.Content) {
		writeError(w, invalidParam("content", "content is not valid UTF-8"))
		return
	}
	ids, err := tc.Tokenize(req.Content, req.AddSpecial)
	if err != nil {
		writeError(w, submitError(err))
		return
	}
	if !req.WithPieces {
		if ids == nil {
			ids = []int32{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"tokens": ids})
		return
	}
	pieces := make([]tokenPiece, len(ids))
	for i, id := range ids {
		pieces[i] = tokenPiece{ID: id, Piece: tc.TokenPiece(id)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": pieces})
}

// handleDetokenize: {"tokens": [ids]} → {"content": text}.
func (s *Server) handleDetokenize(w http.ResponseWriter, r *http.Request, b Backend) {
	var req struct {
		Tokens []int32 `json:"tokens"`
	}
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	tc, ok := b.(TokenCodec)
	if !ok {
		writeError(w, errNoTokenizer)
		return
	}
	if len(req.Tokens) > maxDetokenize {
		writeError(w, invalidParam("tokens", "at most %d tokens", maxDetokenize))
		return
	}
	text, err := tc.Detokenize(req.Tokens)
	if err != nil {
		ae := submitError(err)
		if ae.Status == http.StatusBadRequest {
			ae.Param = "tokens"
		}
		writeError(w, ae)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"content": text})
}

// props is GET /props: the model, its context and the request limits, in
// a subset of llama.cpp's shape plus max_tokens_limit.
type props struct {
	Model          string `json:"model"`
	ContextLength  int    `json:"n_ctx"` // 0 when the backend does not say
	MaxTokensLimit int    `json:"max_tokens_limit"`
	DefaultMax     int    `json:"default_max_tokens"`
	MaxPromptBytes int    `json:"max_prompt_bytes"`
	Settings       struct {
		ContextLength int `json:"n_ctx"`
		Params        struct {
			MaxTokens   int     `json:"n_predict"`
			Temperature float32 `json:"temperature"`
			TopK        int     `json:"top_k"`
			TopP        float32 `json:"top_p"`
			MinP        float32 `json:"min_p"`
		} `json:"params"`
	} `json:"default_generation_settings"`
}

func (s *Server) handleProps(w http.ResponseWriter, r *http.Request, b Backend) {
	p := props{Model: b.ModelName(), MaxTokensLimit: s.cfg.MaxTokensLimit, DefaultMax: s.cfg.DefaultMaxTokens,
		MaxPromptBytes: s.cfg.MaxPromptBytes}
	if tc, ok := b.(TokenCodec); ok {
		p.ContextLength = tc.ContextLength()
	} else if d, ok := b.(Describer); ok {
		p.ContextLength = d.Describe().ContextLength
	}
	if p.ContextLength > 0 && p.ContextLength < p.MaxTokensLimit {
		// No answer can be longer than the context.
		p.MaxTokensLimit = p.ContextLength
	}
	p.Settings.ContextLength = p.ContextLength
	d := s.cfg.DefaultSampling
	p.Settings.Params.MaxTokens, p.Settings.Params.Temperature = s.cfg.DefaultMaxTokens, d.Temperature
	p.Settings.Params.TopK, p.Settings.Params.TopP, p.Settings.Params.MinP = d.TopK, d.TopP, d.MinP
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, p)
}

// The Registry's codec is its default model's.

func (r *Registry) codec() (TokenCodec, error) {
	m := r.defaultModel()
	if m == nil {
		return nil, engine.ErrNotReady
	}
	tc, ok := m.(TokenCodec)
	if !ok {
		return nil, errNoTokenizer
	}
	return tc, nil
}

// Tokenize encodes with the default model's tokenizer.
func (r *Registry) Tokenize(text string, addSpecial bool) ([]int32, error) {
	tc, err := r.codec()
	if err != nil {
		return nil, err
	}
	return tc.Tokenize(text, addSpecial)
}

// TokenPiece is the text of one of the default model's tokens.
func (r *Registry) TokenPiece(id int32) string {
	if tc, err := r.codec(); err == nil {
		return tc.TokenPiece(id)
	}
	return ""
}

// Detokenize decodes with the default model's tokenizer.
func (r *Registry) Detokenize(ids []int32) (string, error) {
	tc, err := r.codec()
	if err != nil {
		return "", err
	}
	return tc.Detokenize(ids)
}

// ContextLength is the default model's.
func (r *Registry) ContextLength() int {
	if tc, err := r.codec(); err == nil {
		return tc.ContextLength()
	}
	return 0
}
