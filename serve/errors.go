package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
)

// apiError is an error a client sees: an HTTP status and OpenAI's error
// object, or, on the websocket, the code and message.
type apiError struct {
	Status  int
	Type    string // OpenAI's error type
	Code    string // machine-readable; also the websocket error code
	Param   string // the offending request field, if one
	Message string
}

func (e *apiError) Error() string { return e.Message }

// Error codes (the websocket's error.code and OpenAI's error.code).
const (
	codeInvalidRequest   = "invalid_request"
	codeInvalidJSON      = "invalid_json"
	codeInvalidParam     = "invalid_parameter"
	codeUnsupported      = "unsupported_parameter"
	codeInvalidAPIKey    = "invalid_api_key"
	codeNotFound         = "not_found"
	codeMethodNotAllowed = "method_not_allowed"
	codeBodyTooLarge     = "body_too_large"
	codePromptTooLarge   = "prompt_too_large"
	codeBusy             = "server_busy"
	codeLoading          = "model_loading"
	codeShuttingDown     = "shutting_down"
	codeUnknownType      = "unknown_type"
	codeDuplicateID      = "duplicate_id"
	codeTooManyInFlight  = "too_many_in_flight"
	codeTooManyConns     = "too_many_connections"
	codeGeneration       = "generation_failed"
	codeInternal         = "internal_error"
	codeForbidden        = "origin_not_allowed"
	codeHostNotAllowed   = "host_not_allowed"
	codeInvalidToolCall  = "invalid_tool_call"
	codeContextLength    = "context_length_exceeded"
)

func invalidParam(param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: codeInvalidParam,
		Param: param, Message: fmt.Sprintf(format, args...)}
}

func invalidRequest(code, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: code,
		Message: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: codeNotFound,
		Message: fmt.Sprintf(format, args...)}
}

var (
	errLoading = &apiError{Status: http.StatusServiceUnavailable, Type: "unavailable_error", Code: codeLoading,
		Message: "the model is still loading; try again shortly"}
	errShuttingDown = &apiError{Status: http.StatusServiceUnavailable, Type: "unavailable_error", Code: codeShuttingDown,
		Message: "the server is shutting down"}
)

// submitError maps an error of Backend.Submit (or RenderChat) to what the
// client sees.
func submitError(err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, engine.ErrBusy):
		return &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: codeBusy,
			Message: "the server is busy (generation queue full); try again later"}
	case errors.Is(err, engine.ErrNotReady):
		return errLoading
	case errors.Is(err, engine.ErrClosed):
		return errShuttingDown
	case errors.Is(err, engine.ErrPromptTooLong):
		// OpenAI's code for it, which clients act on (trimming history).
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: codeContextLength,
			Param: "messages", Message: err.Error()}
	case errors.As(err, new(*chat.RaisedError)):
		// The template's raise_exception: it refuses this conversation.
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: codeInvalidRequest,
			Param: "messages", Message: err.Error()}
	case errors.Is(err, engine.ErrBadJob):
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: codeInvalidRequest,
			Message: err.Error()}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: codeInternal,
		Message: err.Error()}
}

// jobError maps the error of a failed job (a Done event's Err).
func jobError(err error) *apiError {
	if errors.Is(err, engine.ErrClosed) {
		return &apiError{Status: http.StatusServiceUnavailable, Type: "unavailable_error", Code: codeShuttingDown,
			Message: "the engine shut down before the generation finished"}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: codeGeneration,
		Message: "generation failed: " + err.Error()}
}

// openAIError is OpenAI's error body: {"error":{"message","type","param","code"}}.
type openAIError struct {
	Error openAIErrorBody `json:"error"`
}

type openAIErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) openAI() openAIError {
	body := openAIErrorBody{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		body.Param = &e.Param
	}
	if e.Code != "" {
		body.Code = &e.Code
	}
	return openAIError{Error: body}
}

// writeError answers with e in OpenAI's shape (Ollama's under /api).
func writeError(w http.ResponseWriter, e *apiError) {
	switch e.Status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="wgllm"`)
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	if _, ok := w.(ollamaShaped); ok {
		writeJSON(w, e.Status, ollamaErrorBody{Error: e.Message})
		return
	}
	writeJSON(w, e.Status, e.openAI())
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":{"message":"encoding the response failed","type":"server_error","param":null,"code":"internal_error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
