package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/wgllm/wgllm/runtime/engine"
)

// Limits on request fields that are not in Config.
const (
	maxStopStrings = 16
	maxStopBytes   = 256
	maxMessages    = 4096
	maxTopK        = 1 << 20
)

// genRequest is the OpenAI wire body of /v1/completions,
// /v1/chat/completions, /v1/requests and the websocket's generate and chat
// messages; its generation method turns it into the protocol-neutral
// generation. Pointers tell "absent" (or null) from zero.
type genRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Messages      []chatMessageIn `json:"messages"`
	Stream        bool            `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	N      *int `json:"n"`
	BestOf *int `json:"best_of"`
	Echo   bool `json:"echo"`
	samplingFields

	// Tool calling (chat only; see tools.go).
	Tools             json.RawMessage `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`

	// ReasoningEffort is the template's reasoning_effort (gpt-oss's
	// "Reasoning: low|medium|high").
	ReasoningEffort string `json:"reasoning_effort"`

	// OpenAI fields this server does not implement. Other unknown fields
	// are ignored, as OpenAI clients send many (user, store, metadata…),
	// but ignoring one of these would silently change the answer, so a
	// value other than its neutral one is refused.
	Functions    json.RawMessage `json:"functions"`
	FunctionCall json.RawMessage `json:"function_call"`
	Suffix       json.RawMessage `json:"suffix"`

	// Structured output, logprobs and biases (structured.go, logprobs.go).
	ResponseFormat json.RawMessage `json:"response_format"`
	LogitBias      json.RawMessage `json:"logit_bias"`
	Logprobs       json.RawMessage `json:"logprobs"`
	TopLogprobs    json.RawMessage `json:"top_logprobs"`
}

// samplingFields are the generation settings every protocol has, under
// OpenAI's names (Ollama's options map onto them); samplingJob validates
// them.
type samplingFields struct {
	MaxTokens           *int     `json:"max_tokens"`
	MaxCompletionTokens *int     `json:"max_completion_tokens"`
	Temperature         *float64 `json:"temperature"`
	TopP                *float64 `json:"top_p"`
	TopK                *int     `json:"top_k"`
	MinP                *float64 `json:"min_p"`
	Seed                *int64   `json:"seed"`
	Stop                stopList `json:"stop"`
	PresencePenalty     *float64 `json:"presence_penalty"`
	FrequencyPenalty    *float64 `json:"frequency_penalty"`
	RepeatPenalty       *float64 `json:"repeat_penalty"`
	RepeatLastN         *int     `json:"repeat_last_n"`
}

// unsupportedField names the first field of req that asks for something
// this server does not do, or returns "".
func (req *genRequest) unsupportedField() string {
	neutral := func(raw json.RawMessage, also ...string) bool {
		v := string(bytes.TrimSpace(raw))
		switch v {
		case "", "null", "false", "0", `""`, "[]", "{}":
			return true
		}
		for _, a := range also {
			if compactJSON(raw) == a {
				return true
			}
		}
		return false
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		also []string
	}{
		{"functions", req.Functions, nil}, {"function_call", req.FunctionCall, []string{`"none"`, `"auto"`}},
		{"suffix", req.Suffix, nil},
	} {
		if !neutral(f.raw, f.also...) {
			return f.name
		}
	}
	return ""
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// stopList is OpenAI's "stop": a string or an array of strings.
type stopList []string

func (s *stopList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*s = nil
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = stopList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("stop must be a string or an array of strings")
	}
	*s = many
	return nil
}

// chatMessageIn is one message of a chat request. Content is a string or
// an array of {"type":"text","text":…} parts (null for an assistant turn).
type chatMessageIn struct {
	Role       string             `json:"role"`
	Content    json.RawMessage    `json:"content"`
	ToolCalls  []openAIToolCallIn `json:"tool_calls"`
	ToolCallID string             `json:"tool_call_id"`
	Name       string             `json:"name"`
	// ReasoningContent is an assistant turn's reasoning, as this server
	// answers it (and llama.cpp's and vLLM's).
	ReasoningContent string `json:"reasoning_content"`
}

// decodeBody reads a JSON request body into v, answering 413 beyond the
// body limit and 400 for malformed JSON.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) *apiError {
	if r.ContentLength > limit {
		return bodyTooLarge(limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return bodyTooLarge(limit)
		}
		return invalidRequest(codeInvalidRequest, "reading the request body: %v", err)
	}
	return decodeJSON(body, v)
}

func bodyTooLarge(limit int64) *apiError {
	return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: codeBodyTooLarge,
		Message: fmt.Sprintf("request body exceeds %d bytes", limit)}
}

// decodeJSON decodes exactly one JSON value into v. JSON text must be
// UTF-8 (RFC 8259); encoding/json would silently turn bad bytes into
// U+FFFD, so they are refused here instead.
func decodeJSON(body []byte, v any) *apiError {
	if !utf8.Valid(body) {
		i := 0
		for i < len(body) {
			r, size := utf8.DecodeRune(body[i:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			i += size
		}
		return invalidRequest(codeInvalidJSON, "malformed JSON: the text is not valid UTF-8 (byte 0x%02x at offset %d)", body[i], i)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			// The path names the embedded Go structs (genRequest in
			// websocket messages, samplingFields).
			field := strings.TrimPrefix(typeErr.Field, "genRequest.")
			field = strings.TrimPrefix(field, "samplingFields.")
			return invalidParam(field, "%s: expected %s, got JSON %s", field, typeErr.Type, typeErr.Value)
		}
		if err == io.EOF {
			return invalidRequest(codeInvalidJSON, "empty request body: expected a JSON object")
		}
		return invalidRequest(codeInvalidJSON, "malformed JSON: %v", err)
	}
	if dec.More() {
		return invalidRequest(codeInvalidJSON, "malformed JSON: data after the object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalidRequest(codeInvalidJSON, "malformed JSON: data after the object")
	}
	return nil
}

// promptText reads a completions "prompt": a string, or an array holding
// one string.
func promptText(raw json.RawMessage) (string, *apiError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", invalidParam("prompt", "prompt is required")
	}
	var s string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", invalidParam("prompt", "prompt: %v", err)
		}
		return s, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", invalidParam("prompt", "prompt must be a string (token arrays are not supported)")
	}
	if len(list) != 1 {
		return "", invalidParam("prompt", "prompt arrays must hold exactly one string (got %d); send one request per prompt", len(list))
	}
	return list[0], nil
}

// chatMessages validates and flattens the messages of a chat request.
func chatMessages(in []chatMessageIn) ([]engine.ChatMessage, *apiError) {
	if len(in) == 0 {
		return nil, invalidParam("messages", "messages must hold at least one message")
	}
	if len(in) > maxMessages {
		return nil, invalidParam("messages", "at most %d messages", maxMessages)
	}
	out := make([]engine.ChatMessage, len(in))
	for i, m := range in {
		param := fmt.Sprintf("messages[%d]", i)
		if _, aerr := chatRole(param, m.Role); aerr != nil {
			return nil, aerr
		}
		content, err := messageContent(m.Content)
		if err != nil {
			return nil, invalidParam(param+".content", "%s.content: %v", param, err)
		}
		msg, aerr := chatMessage(param, m.Role, content)
		if aerr != nil {
			return nil, aerr
		}
		for j, c := range m.ToolCalls {
			cp := fmt.Sprintf("%s.tool_calls[%d]", param, j)
			if m.Role != "assistant" {
				return nil, invalidParam(cp, "%s: only assistant messages make tool calls", cp)
			}
			if c.ID == "" {
				return nil, invalidParam(cp+".id", "%s.id is required", cp)
			}
			call, aerr := historyCall(cp, c.ID, c.Function.Name, c.Function.Arguments)
			if aerr != nil {
				return nil, aerr
			}
			msg.ToolCalls = append(msg.ToolCalls, call)
		}
		msg.ToolCallID, msg.Name = m.ToolCallID, m.Name
		if msg.Reasoning, aerr = messageReasoning(param+".reasoning_content", m.ReasoningContent); aerr != nil {
			return nil, aerr
		}
		out[i] = msg
	}
	if aerr := checkToolAnswers(out); aerr != nil {
		return nil, aerr
	}
	return out, nil
}

// messageReasoning validates a message's reasoning (param names it).
func messageReasoning(param, text string) (string, *apiError) {
	if !utf8.ValidString(text) {
		return "", invalidParam(param, "%s is not valid UTF-8", param)
	}
	return text, nil
}

// reasoningEffort validates a reasoning effort: "" (the template's
// default), low, medium or high, the levels gpt-oss knows.
func reasoningEffort(param, effort string) *apiError {
	switch effort {
	case "", "low", "medium", "high":
		return nil
	}
	return invalidParam(param, "%s %q: want low, medium or high", param, effort)
}

// chatRole validates a message's role, mapping OpenAI's developer to
// system.
func chatRole(param, role string) (string, *apiError) {
	switch role {
	case "system", "user", "assistant", "tool":
		return role, nil
	case "developer": // OpenAI's newer name for system
		return "system", nil
	}
	return "", invalidParam(param+".role", "%s.role %q: want system, developer, user, assistant or tool", param, role)
}

// chatMessage validates one message of a chat (param names it).
func chatMessage(param, role, content string) (engine.ChatMessage, *apiError) {
	role, aerr := chatRole(param, role)
	if aerr != nil {
		return engine.ChatMessage{}, aerr
	}
	if !utf8.ValidString(content) {
		return engine.ChatMessage{}, invalidParam(param+".content", "%s.content is not valid UTF-8", param)
	}
	return engine.ChatMessage{Role: role, Content: content}, nil
}

func messageContent(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("want a string or an array of text parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return "", fmt.Errorf("content part of type %q is not supported (text only)", p.Type)
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// samplingJob builds a Job (without its prompt) from the request's
// generation settings over the configured defaults, validating each.
func (s *Server) samplingJob(req *samplingFields) (engine.Job, *apiError) {
	cfg := &s.cfg
	job := engine.Job{MaxTokens: cfg.DefaultMaxTokens, Sampling: cfg.DefaultSampling}
	maxTokens, maxParam := req.MaxTokens, "max_tokens"
	if req.MaxCompletionTokens != nil {
		maxTokens, maxParam = req.MaxCompletionTokens, "max_completion_tokens"
	}
	if maxTokens != nil {
		if *maxTokens < 1 || *maxTokens > cfg.MaxTokensLimit {
			return job, invalidParam(maxParam, "%s %d must be in [1, %d]", maxParam, *maxTokens, cfg.MaxTokensLimit)
		}
		job.MaxTokens = *maxTokens
	}
	p := &job.Sampling
	// Each check names the field; sample.Params.Validate below is the
	// backstop for anything these miss.
	if v := req.Temperature; v != nil {
		if !finite64(*v) || *v < 0 || float32(*v) > math.MaxFloat32 {
			return job, invalidParam("temperature", "temperature %v must be a finite number ≥ 0 (0 is greedy)", *v)
		}
		p.Temperature = float32(*v)
	}
	if v := req.TopP; v != nil {
		if !finite64(*v) || *v <= 0 || *v > 1 {
			return job, invalidParam("top_p", "top_p %v must be in (0, 1]", *v)
		}
		p.TopP = float32(*v)
	}
	if v := req.TopK; v != nil {
		if *v < 0 || *v > maxTopK {
			return job, invalidParam("top_k", "top_k %d must be in [0, %d] (0 disables it)", *v, maxTopK)
		}
		p.TopK = *v
	}
	if v := req.MinP; v != nil {
		if !finite64(*v) || *v < 0 || *v > 1 {
			return job, invalidParam("min_p", "min_p %v must be in [0, 1]", *v)
		}
		p.MinP = float32(*v)
	}
	if v := req.PresencePenalty; v != nil {
		if !finite64(*v) || *v < -2 || *v > 2 {
			return job, invalidParam("presence_penalty", "presence_penalty %v must be in [-2, 2]", *v)
		}
		p.PresencePenalty = float32(*v)
	}
	if v := req.FrequencyPenalty; v != nil {
		if !finite64(*v) || *v < -2 || *v > 2 {
			return job, invalidParam("frequency_penalty", "frequency_penalty %v must be in [-2, 2]", *v)
		}
		p.FrequencyPenalty = float32(*v)
	}
	if v := req.RepeatPenalty; v != nil {
		if !finite64(*v) || *v <= 0 || *v > 10 {
			return job, invalidParam("repeat_penalty", "repeat_penalty %v must be in (0, 10] (1 disables it)", *v)
		}
		p.RepeatPenalty = float32(*v)
	}
	if v := req.RepeatLastN; v != nil {
		if *v < 0 || *v > 1<<16 {
			return job, invalidParam("repeat_last_n", "repeat_last_n %d must be in [0, 65536]", *v)
		}
		p.PenaltyLastN = *v
	}
	switch {
	case req.Seed == nil || *req.Seed == -1: // -1: random, as in llama.cpp
		p.Seed = rand.Uint64()
	case *req.Seed < 0:
		return job, invalidParam("seed", "seed %d must be ≥ 0 (or -1 for a random one)", *req.Seed)
	default:
		p.Seed = uint64(*req.Seed)
	}
	if err := p.Validate(); err != nil {
		return job, invalidParam("", "%v", err)
	}
	if len(req.Stop) > maxStopStrings {
		return job, invalidParam("stop", "at most %d stop strings", maxStopStrings)
	}
	for _, st := range req.Stop {
		if st == "" || len(st) > maxStopBytes || !utf8.ValidString(st) {
			return job, invalidParam("stop", "stop strings must be non-empty UTF-8 of at most %d bytes", maxStopBytes)
		}
	}
	job.Stop = append([]string(nil), req.Stop...)
	return job, nil
}

func finite64(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func promptTooLarge(n, limit int) *apiError {
	return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: codePromptTooLarge,
		Param: "prompt", Message: fmt.Sprintf("prompt of %d bytes exceeds the limit of %d bytes", n, limit)}
}
