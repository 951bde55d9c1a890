package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/sample"
)

// Ollama's native API (/api/*), so that tools written for Ollama work
// unchanged: requests and responses in the shapes of Ollama's API
// documentation (docs/api.md in ollama/ollama), durations in nanoseconds,
// NDJSON streams, errors as {"error":"…"}.

// ollamaVersion is what GET /api/version answers: the Ollama release
// whose documented API these endpoints follow.
const ollamaVersion = "0.5.0"

// ollamaShaped marks a response writer whose errors take Ollama's shape.
type ollamaShaped struct{ http.ResponseWriter }

func (w ollamaShaped) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w ollamaShaped) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// withOllamaErrors makes every error below it (including the API key,
// method and loading checks) {"error":"…"}.
func withOllamaErrors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(ollamaShaped{w}, r)
	})
}

type ollamaErrorBody struct {
	Error string `json:"error"`
}

// --- requests ----------------------------------------------------------------

type ollamaGenerateRequest struct {
	Model     string                     `json:"model"`
	Prompt    string                     `json:"prompt"`
	Suffix    string                     `json:"suffix"`
	Images    []string                   `json:"images"`
	Format    json.RawMessage            `json:"format"`
	Options   map[string]json.RawMessage `json:"options"`
	System    string                     `json:"system"`
	Template  string                     `json:"template"`
	Context   []int                      `json:"context"`
	Stream    *bool                      `json:"stream"`
	Raw       bool                       `json:"raw"`
	KeepAlive json.RawMessage            `json:"keep_alive"`
	Think     json.RawMessage            `json:"think"`
	ollamaLogprobsFields
}

// ollamaLogprobsFields are the logprobs settings of /api/generate and
// /api/chat.
type ollamaLogprobsFields struct {
	Logprobs    bool `json:"logprobs"`
	TopLogprobs int  `json:"top_logprobs"`
}

type ollamaChatRequest struct {
	Model     string                     `json:"model"`
	Messages  []ollamaMessageIn          `json:"messages"`
	Tools     json.RawMessage            `json:"tools"`
	Format    json.RawMessage            `json:"format"`
	Options   map[string]json.RawMessage `json:"options"`
	Stream    *bool                      `json:"stream"`
	KeepAlive json.RawMessage            `json:"keep_alive"`
	Think     json.RawMessage            `json:"think"`
	ollamaLogprobsFields
}

type ollamaMessageIn struct {
	Role      string           `json:"role"`
	Content   string           `json:"content"`
	Thinking  string           `json:"thinking"`
	Images    []string         `json:"images"`
	ToolCalls []ollamaToolCall `json:"tool_calls"`
	ToolName  string           `json:"tool_name"` // a tool message's function
}

// ollamaToolCall is a call in Ollama's shape: arguments an object, no id.
type ollamaToolCall struct {
	Function struct {
		Index     *int            `json:"index,omitempty"`
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	} `json:"function"`
}

type ollamaShowRequest struct {
	Model   string `json:"model"`
	Name    string `json:"name"` // Ollama's older name for model
	Verbose bool   `json:"verbose"`
}

// --- responses ---------------------------------------------------------------

// ollamaMetrics are the final line's statistics; durations in ns.
type ollamaMetrics struct {
	TotalDuration      int64 `json:"total_duration"`
	LoadDuration       int64 `json:"load_duration"`
	PromptEvalCount    int   `json:"prompt_eval_count"`
	PromptEvalDuration int64 `json:"prompt_eval_duration"`
	EvalCount          int   `json:"eval_count"`
	EvalDuration       int64 `json:"eval_duration"`
}

type ollamaGenerateResponse struct {
	Model      string       `json:"model"`
	CreatedAt  time.Time    `json:"created_at"`
	Response   string       `json:"response"`
	Thinking   string       `json:"thinking,omitempty"`
	Done       bool         `json:"done"`
	DoneReason string       `json:"done_reason,omitempty"`
	Logprobs   []logprobOut `json:"logprobs,omitempty"`
	*ollamaMetrics
}

type ollamaMessageOut struct {
	Role      string           `json:"role"`
	Content   string           `json:"content"`
	Thinking  string           `json:"thinking,omitempty"`
	ToolCalls []ollamaToolCall `json:"tool_calls,omitempty"`
}

type ollamaChatResponse struct {
	Model      string           `json:"model"`
	CreatedAt  time.Time        `json:"created_at"`
	Message    ollamaMessageOut `json:"message"`
	Done       bool             `json:"done"`
	DoneReason string           `json:"done_reason,omitempty"`
	Logprobs   []logprobOut     `json:"logprobs,omitempty"`
	*ollamaMetrics
}

type ollamaDetails struct {
	ParentModel       string   `json:"parent_model"`
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

type ollamaListModel struct {
	Name       string        `json:"name"`
	Model      string        `json:"model"`
	ModifiedAt time.Time     `json:"modified_at"`
	Size       int64         `json:"size"`
	Digest     string        `json:"digest"`
	Details    ollamaDetails `json:"details"`
}

type ollamaRunningModel struct {
	Name      string        `json:"name"`
	Model     string        `json:"model"`
	Size      int64         `json:"size"`
	Digest    string        `json:"digest"`
	Details   ollamaDetails `json:"details"`
	ExpiresAt time.Time     `json:"expires_at"`
	SizeVRAM  int64         `json:"size_vram"`
}

type ollamaShowResponse struct {
	Modelfile    string         `json:"modelfile"`
	Parameters   string         `json:"parameters"`
	Template     string         `json:"template"`
	System       string         `json:"system,omitempty"`
	Details      ollamaDetails  `json:"details"`
	ModelInfo    map[string]any `json:"model_info"`
	Capabilities []string       `json:"capabilities"`
	ModifiedAt   time.Time      `json:"modified_at"`
}

// knownModel checks a request's model name for Ollama's endpoints, whose
// clients probe whether a model exists: required, and with one model
// served, its name (":latest" may be added). A Router checks its names
// itself.
func knownModel(b Backend, name string) *apiError {
	if name == "" {
		return invalidParam("model", "model is required")
	}
	if _, ok := b.(Router); ok || name == b.ModelName() || name == ollamaName(b.ModelName()) {
		return nil
	}
	return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: codeModelNotFound, Param: "model",
		Message: fmt.Sprintf("model %q not found; this server serves %q", name, b.ModelName())}
}

// ollamaName is the name Ollama lists a model under: with a tag
// (":latest" when it has none), as Ollama's tools expect.
func ollamaName(name string) string {
	if strings.Contains(name, ":") {
		return name
	}
	return name + ":latest"
}

func ollamaDetailsOf(m ModelInfo) ollamaDetails {
	d := ollamaDetails{Format: m.Format, Family: m.Family, ParameterSize: m.ParameterSize, QuantizationLevel: m.QuantizationLevel}
	if m.Family != "" {
		d.Families = []string{m.Family}
	}
	return d
}

// --- handlers ----------------------------------------------------------------

func (s *Server) handleOllamaVersion(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"version": ollamaVersion})
}

func (s *Server) handleOllamaTags(w http.ResponseWriter, r *http.Request, b Backend) {
	list := modelList(b)
	out := make([]ollamaListModel, len(list))
	for i, m := range list {
		out[i] = ollamaListModel{Name: ollamaName(m.Name), Model: ollamaName(m.Name), ModifiedAt: m.ModifiedAt,
			Size: m.Size, Digest: m.Digest, Details: ollamaDetailsOf(m.ModelInfo)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": out})
}

// handleOllamaPs lists the loaded models. They have no expiry: a model
// stays until another needs its room, so expires_at is the zero time.
func (s *Server) handleOllamaPs(w http.ResponseWriter, r *http.Request, b Backend) {
	out := []ollamaRunningModel{}
	for _, m := range modelList(b) {
		if !m.Loaded {
			continue
		}
		size := int64(m.MemoryBytes)
		out = append(out, ollamaRunningModel{Name: ollamaName(m.Name), Model: ollamaName(m.Name), Size: size,
			Digest: m.Digest, Details: ollamaDetailsOf(m.ModelInfo), SizeVRAM: size})
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": out})
}

func (s *Server) handleOllamaShow(w http.ResponseWriter, r *http.Request, b Backend) {
	var req ollamaShowRequest
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	if req.Model == "" {
		req.Model = req.Name
	}
	if aerr := knownModel(b, req.Model); aerr != nil {
		writeError(w, aerr)
		return
	}
	m, aerr := describe(b, req.Model)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	params := s.ollamaParameters(m.Parameters)
	info := m.Metadata
	if info == nil {
		info = map[string]any{}
	}
	writeJSON(w, http.StatusOK, ollamaShowResponse{
		Modelfile:    ollamaModelfile(m.ModelInfo, params),
		Parameters:   params,
		Template:     m.Template,
		System:       m.System,
		Details:      ollamaDetailsOf(m.ModelInfo),
		ModelInfo:    info,
		Capabilities: ollamaCapabilities(m.Template),
		ModifiedAt:   m.ModifiedAt,
	})
}

// ollamaCapabilities are what Ollama's clients check before they send
// tools or think: what the chat template supports.
func ollamaCapabilities(template string) []string {
	caps := []string{"completion"}
	f := chat.DetectFormat(template)
	if f.Tools != chat.NoTools {
		caps = append(caps, "tools")
	}
	if f.Thinking {
		caps = append(caps, "thinking")
	}
	return caps
}

// ollamaParameters lists the sampling defaults as `ollama show` does: a
// model's own parameters, then the server's defaults of the others.
func (s *Server) ollamaParameters(own map[string]json.RawMessage) string {
	p := s.cfg.DefaultSampling
	var b strings.Builder
	for _, l := range ollamaParameterLines(own) {
		b.WriteString(l + "\n")
	}
	line := func(k string, v any) {
		if _, ok := own[k]; !ok {
			fmt.Fprintf(&b, "%-30s %v\n", k, v)
		}
	}
	line("num_predict", s.cfg.DefaultMaxTokens)
	line("temperature", p.Temperature)
	line("top_k", p.TopK)
	line("top_p", p.TopP)
	line("min_p", p.MinP)
	line("repeat_penalty", p.RepeatPenalty)
	line("repeat_last_n", p.PenaltyLastN)
	return strings.TrimSuffix(b.String(), "\n")
}

// ollamaModelfile is the Modelfile /api/show gives: FROM the model, its
// template and system prompt when it has its own, and the parameters.
func ollamaModelfile(m ModelInfo, params string) string {
	var b strings.Builder
	b.WriteString("# wgllm serves the GGUF file directly; the parameters are the model's and the server's defaults.\nFROM " + m.Name + "\n")
	if m.Template != "" {
		fmt.Fprintf(&b, "TEMPLATE \"\"\"%s\"\"\"\n", m.Template)
	}
	if m.System != "" {
		fmt.Fprintf(&b, "SYSTEM \"\"\"%s\"\"\"\n", m.System)
	}
	b.WriteString(indentLines("PARAMETER ", params))
	return b.String()
}

func indentLines(prefix, text string) string {
	var b strings.Builder
	for _, l := range strings.Split(text, "\n") {
		b.WriteString(prefix + l + "\n")
	}
	return b.String()
}

func (s *Server) handleOllamaGenerate(w http.ResponseWriter, r *http.Request, b Backend) {
	start := time.Now()
	var req ollamaGenerateRequest
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	unsupported := func(field, what string) *apiError {
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: codeUnsupported,
			Param: field, Message: what + " is not supported"}
	}
	aerr := knownModel(b, req.Model)
	switch {
	case aerr != nil:
	case req.Suffix != "":
		aerr = unsupported("suffix", "suffix (fill in the middle)")
	case len(req.Images) > 0:
		aerr = unsupported("images", "images")
	case req.Template != "":
		aerr = unsupported("template", "a request template (the model's own chat template applies; raw: true sends the prompt as is)")
	case len(req.Context) > 0:
		aerr = unsupported("context", "context (send the conversation to /api/chat instead)")
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	g, aerr := s.ollamaGeneration(r, req.Model, req.Options, req.Stream, req.Think, req.Format, req.ollamaLogprobsFields)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	switch {
	case req.Prompt == "":
		s.ollamaLoad(w, r, b, req.Model, req.KeepAlive, false)
		return
	case req.Raw:
		g.prompt = req.Prompt
	default: // Ollama applies the model's template to the prompt
		g.kind = kindChat
		if req.System != "" {
			g.messages = append(g.messages, engine.ChatMessage{Role: "system", Content: req.System})
		}
		g.messages = append(g.messages, engine.ChatMessage{Role: "user", Content: req.Prompt})
	}
	s.run(w, r, b, g, ollamaProtocol(g, false, start))
}

func (s *Server) handleOllamaChat(w http.ResponseWriter, r *http.Request, b Backend) {
	start := time.Now()
	var req ollamaChatRequest
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	if aerr := knownModel(b, req.Model); aerr != nil {
		writeError(w, aerr)
		return
	}
	g, aerr := s.ollamaGeneration(r, req.Model, req.Options, req.Stream, req.Think, req.Format, req.ollamaLogprobsFields)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if g.tools, aerr = parseTools(req.Tools); aerr != nil {
		writeError(w, aerr)
		return
	}
	if len(req.Messages) == 0 {
		s.ollamaLoad(w, r, b, req.Model, req.KeepAlive, true)
		return
	}
	if len(req.Messages) > maxMessages {
		writeError(w, invalidParam("messages", "at most %d messages", maxMessages))
		return
	}
	g.kind = kindChat
	for i, m := range req.Messages {
		param := fmt.Sprintf("messages[%d]", i)
		if len(m.Images) > 0 {
			writeError(w, &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: codeUnsupported,
				Param: param + ".images", Message: "images are not supported"})
			return
		}
		msg, aerr := chatMessage(param, m.Role, m.Content)
		if aerr == nil {
			msg.Reasoning, aerr = messageReasoning(param+".thinking", m.Thinking)
		}
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		for j, c := range m.ToolCalls {
			// Ollama's calls have no ids; the template gets positional ones.
			call, aerr := historyCall(fmt.Sprintf("%s.tool_calls[%d]", param, j), fmt.Sprintf("call_%d_%d", i, j), c.Function.Name, c.Function.Arguments)
			if aerr != nil {
				writeError(w, aerr)
				return
			}
			msg.ToolCalls = append(msg.ToolCalls, call)
		}
		msg.Name = m.ToolName
		g.messages = append(g.messages, msg)
	}
	s.run(w, r, b, g, ollamaProtocol(g, true, start))
}

// ollamaGeneration starts a generation from Ollama's fields: its options
// validated as the settings, and think: true (or a level, "high"…, which
// is also the template's reasoning_effort) splits a reasoning model's
// thinking from the answer, false asks the template
// not to think and drops what thinking there is, absent leaves it in the
// answer; format ("json" or a schema) constrains the output.
func (s *Server) ollamaGeneration(r *http.Request, model string, opts map[string]json.RawMessage, stream *bool, think, format json.RawMessage, lp ollamaLogprobsFields) (*generation, *apiError) {
	fields, aerr := s.ollamaOptions(r, opts)
	if aerr != nil {
		return nil, aerr
	}
	settings, aerr := s.samplingJob(&fields)
	if aerr != nil {
		return nil, aerr
	}
	if settings.Grammar, aerr = ollamaFormatGrammar(format); aerr != nil {
		return nil, aerr
	}
	if lp.TopLogprobs < 0 || lp.TopLogprobs > sample.MaxTopLogprobs {
		return nil, invalidParam("top_logprobs", "top_logprobs must be in [0, %d]", sample.MaxTopLogprobs)
	}
	settings.Logprobs, settings.TopLogprobs = lp.Logprobs || lp.TopLogprobs > 0, lp.TopLogprobs
	g := &generation{model: model, settings: settings, fields: fields, stream: stream == nil || *stream, reasoning: reasoningKeep}
	if !isNull(think) {
		var on bool
		var level string
		switch {
		case json.Unmarshal(think, &on) == nil:
		case json.Unmarshal(think, &level) == nil && (level == "high" || level == "medium" || level == "low"):
			on, g.effort = true, level
		default:
			return nil, invalidParam("think", "think must be true, false, \"high\", \"medium\" or \"low\"")
		}
		g.think = &on
		g.reasoning = reasoningDrop
		if on {
			g.reasoning = reasoningSplit
		}
	}
	return g, nil
}

// ollamaIgnoredOptions are Ollama options that configure how Ollama loads
// a model (the server's configuration decides that here) or that are
// no-ops; they are accepted and ignored.
var ollamaIgnoredOptions = map[string]bool{
	"num_keep": true, "num_ctx": true, "num_batch": true, "num_gpu": true, "main_gpu": true, "low_vram": true,
	"f16_kv": true, "vocab_only": true, "use_mmap": true, "use_mlock": true, "num_thread": true, "numa": true,
	"penalize_newline": true, "mirostat_tau": true, "mirostat_eta": true, "logits_all": true,
	"embedding_only": true, "rope_frequency_base": true, "rope_frequency_scale": true, "num_gqa": true,
}

// ollamaOptions maps Ollama's "options" onto the sampling fields of a
// genRequest (validated later by samplingJob). Unknown options are
// ignored with a warning, as Ollama does, and so are the samplers this
// server lacks (typical_p, tfs_z, mirostat); a value of the wrong type is
// an error.
func (s *Server) ollamaOptions(r *http.Request, opts map[string]json.RawMessage) (samplingFields, *apiError) {
	var req samplingFields
	for key, raw := range opts {
		if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			continue
		}
		param := "options." + key
		num := func() (*float64, *apiError) {
			var v float64
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, invalidParam(param, "%s: want a number, got %s", param, abbreviate(raw))
			}
			return &v, nil
		}
		integer := func() (*int, *apiError) {
			v, aerr := num()
			if aerr != nil {
				return nil, aerr
			}
			if *v != math.Trunc(*v) || math.Abs(*v) > 1<<40 {
				return nil, invalidParam(param, "%s: want an integer, got %v", param, *v)
			}
			n := int(*v)
			return &n, nil
		}
		// ignoredUnlessOff accepts a sampler this server lacks, warning
		// when the request turns it on: Ollama's documented example sets
		// every option, and tools send it as is.
		ignoredUnlessOff := func(off float64) *apiError {
			v, aerr := num()
			if aerr == nil && *v != off {
				reqLog(r).Warn().Str("option", key).Float64("value", *v).Msg("unsupported Ollama sampler ignored")
			}
			return aerr
		}
		var aerr *apiError
		switch key {
		case "temperature":
			req.Temperature, aerr = num()
		case "top_p":
			req.TopP, aerr = num()
		case "min_p":
			req.MinP, aerr = num()
		case "repeat_penalty":
			req.RepeatPenalty, aerr = num()
		case "presence_penalty":
			req.PresencePenalty, aerr = num()
		case "frequency_penalty":
			req.FrequencyPenalty, aerr = num()
		case "top_k":
			req.TopK, aerr = integer()
		case "seed":
			var n *int
			if n, aerr = integer(); aerr == nil {
				seed := int64(*n)
				req.Seed = &seed
			}
		case "num_predict":
			var n *int
			if n, aerr = integer(); aerr == nil {
				switch {
				case *n == -1 || *n == -2: // Ollama: no limit / fill the context
					limit := s.cfg.MaxTokensLimit
					req.MaxTokens = &limit
				case *n >= 1:
					req.MaxTokens = n
				default:
					aerr = invalidParam(param, "%s %d: want at least 1, or -1 for as many as the server allows (%d)", param, *n, s.cfg.MaxTokensLimit)
				}
			}
		case "repeat_last_n":
			var n *int
			if n, aerr = integer(); aerr == nil {
				if *n == -1 { // Ollama: the whole context
					*n = 1 << 16
				}
				req.RepeatLastN = n
			}
		case "stop":
			if err := json.Unmarshal(raw, &req.Stop); err != nil {
				aerr = invalidParam(param, "%s: want a string or an array of strings", param)
			}
		case "typical_p", "tfs_z":
			aerr = ignoredUnlessOff(1)
		case "mirostat":
			aerr = ignoredUnlessOff(0)
		default:
			if !ollamaIgnoredOptions[key] {
				reqLog(r).Warn().Str("option", key).Msg("unknown Ollama option ignored")
			}
		}
		if aerr != nil {
			return req, aerr
		}
	}
	return req, nil
}

func abbreviate(raw []byte) string {
	if len(raw) > 40 {
		return string(raw[:40]) + "…"
	}
	return string(raw)
}

// keepAliveZero reports whether keep_alive asks to unload the model now
// (0, "0", "0s", …).
func keepAliveZero(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return false
	}
	var n float64
	if json.Unmarshal(raw, &n) == nil {
		return n == 0
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return false
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return f == 0
	}
	d, err := time.ParseDuration(s)
	return err == nil && d == 0
}

// unloader is implemented by a Router that can unload an idle model.
type unloader interface{ Unload(name string) bool }

// ollamaLoad answers a request without a prompt: Ollama's way to load a
// model (done_reason "load") or, with keep_alive 0, to unload it.
func (s *Server) ollamaLoad(w http.ResponseWriter, r *http.Request, b Backend, model string, keepAlive json.RawMessage, chat bool) {
	reason := "load"
	if keepAliveZero(keepAlive) {
		if _, aerr := describe(b, model); aerr != nil {
			writeError(w, aerr)
			return
		}
		reason = "unload"
		if u, ok := b.(unloader); !ok || !u.Unload(model) {
			reqLog(r).Info().Str("model", model).Msg("unload asked: the model is the default, busy or not loaded; kept")
		}
	} else {
		_, release, _, aerr := s.modelBackend(r.Context(), b, model)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		release()
	}
	now := time.Now().UTC()
	if chat {
		writeJSON(w, http.StatusOK, ollamaChatResponse{Model: model, CreatedAt: now,
			Message: ollamaMessageOut{Role: "assistant"}, Done: true, DoneReason: reason})
		return
	}
	writeJSON(w, http.StatusOK, ollamaGenerateResponse{Model: model, CreatedAt: now, Done: true, DoneReason: reason})
}

// ollamaProtocol is /api/chat's (chat) or /api/generate's protocol.
func ollamaProtocol(g *generation, chat bool, start time.Time) protocol {
	p := protocol{endpoint: "ollama_generate", idPrefix: "ollama-", echoRequested: true}
	if chat {
		p.endpoint = "ollama_chat"
	}
	p.framer = func(m responseMeta) framer {
		return &ollamaFramer{model: m.model, chat: chat, start: start, loaded: m.loaded, logprobs: g.settings.Logprobs}
	}
	return p
}

// ollamaFramer makes the Ollama objects of one response: NDJSON lines, or
// the one final object.
type ollamaFramer struct {
	model    string // as the request named it; echoed in every line
	chat     bool   // /api/chat's shapes
	start    time.Time
	loaded   time.Duration
	logprobs bool // asked for: lines carry them
}

func (o *ollamaFramer) contentType() string { return "application/x-ndjson" }

func (o *ollamaFramer) opening() []any { return nil }

func (o *ollamaFramer) piece(d delta) []any {
	var calls []toolCallOut
	if d.Call != nil {
		calls = []toolCallOut{*d.Call}
	}
	return []any{o.line(d.Content, d.Reasoning, calls, d.Logprobs, nil)}
}

func (o *ollamaFramer) closing(out *outcome) []any { return []any{o.line("", "", nil, nil, out)} }

func (o *ollamaFramer) failure(e *apiError) any { return ollamaErrorBody{Error: e.Message} }

func (o *ollamaFramer) frame(buf []byte, v any) []byte {
	body, err := json.Marshal(v)
	if err != nil {
		body = []byte(`{"error":"encoding a line failed"}`)
	}
	return append(append(buf, body...), '\n')
}

func (o *ollamaFramer) terminator() string { return "" }

func (o *ollamaFramer) whole(out *outcome) any {
	return o.line(out.Content, out.Reasoning, out.ToolCalls, out.Logprobs, out)
}

// line is one line of the stream: a piece of text, thinking or calls, or
// with done the final line with its statistics.
func (o *ollamaFramer) line(text, thinking string, calls []toolCallOut, lps []engine.TokenLogprob, done *outcome) any {
	now := time.Now().UTC()
	var metrics *ollamaMetrics
	reason := ""
	if done != nil {
		ns := func(ms float64) int64 { return int64(math.Round(ms * 1e6)) }
		metrics = &ollamaMetrics{
			TotalDuration:      time.Since(o.start).Nanoseconds(),
			LoadDuration:       o.loaded.Nanoseconds(),
			PromptEvalCount:    done.Usage.PromptTokens,
			PromptEvalDuration: ns(done.Timings.PrefillMS),
			EvalCount:          done.Usage.CompletionTokens,
			EvalDuration:       ns(done.Timings.DecodeMS),
		}
		reason = done.FinishReason
		if reason == "tool_calls" { // Ollama ends a turn of calls with "stop"
			reason = "stop"
		}
	}
	if o.chat {
		msg := ollamaMessageOut{Role: "assistant", Content: text, Thinking: thinking}
		for _, c := range calls {
			var tc ollamaToolCall
			i := c.Index
			tc.Function.Index, tc.Function.Name, tc.Function.Arguments = &i, c.Name, c.Arguments
			msg.ToolCalls = append(msg.ToolCalls, tc)
		}
		return ollamaChatResponse{Model: o.model, CreatedAt: now, Message: msg,
			Done: done != nil, DoneReason: reason, Logprobs: lineLogprobs(o.logprobs, lps), ollamaMetrics: metrics}
	}
	return ollamaGenerateResponse{Model: o.model, CreatedAt: now, Response: text, Thinking: thinking, Done: done != nil,
		DoneReason: reason, Logprobs: lineLogprobs(o.logprobs, lps), ollamaMetrics: metrics}
}

// ollamaRoutes serves /api/*; the server mounts it behind the API key and
// CORS checks of /v1.
func (s *Server) ollamaRoutes() http.Handler {
	api := http.NewServeMux()
	api.Handle("/api/generate", methods(map[string]http.HandlerFunc{http.MethodPost: s.needBackend(s.handleOllamaGenerate)}))
	api.Handle("/api/chat", methods(map[string]http.HandlerFunc{http.MethodPost: s.needBackend(s.handleOllamaChat)}))
	api.Handle("/api/embed", methods(map[string]http.HandlerFunc{http.MethodPost: s.needBackend(s.handleOllamaEmbed)}))
	api.Handle("/api/embeddings", methods(map[string]http.HandlerFunc{http.MethodPost: s.needBackend(s.handleOllamaEmbeddings)}))
	api.Handle("/api/tags", methods(map[string]http.HandlerFunc{http.MethodGet: s.needBackend(s.handleOllamaTags)}))
	api.Handle("/api/ps", methods(map[string]http.HandlerFunc{http.MethodGet: s.needBackend(s.handleOllamaPs)}))
	api.Handle("/api/show", methods(map[string]http.HandlerFunc{http.MethodPost: s.needBackend(s.handleOllamaShow)}))
	api.Handle("/api/version", methods(map[string]http.HandlerFunc{http.MethodGet: s.handleOllamaVersion}))
	api.Handle("/api/pull", methods(map[string]http.HandlerFunc{http.MethodPost: s.handleOllamaPull}))
	api.Handle("/api/delete", methods(map[string]http.HandlerFunc{http.MethodDelete: s.needBackend(s.handleOllamaDelete)}))
	api.Handle("/api/copy", methods(map[string]http.HandlerFunc{http.MethodPost: s.needBackend(s.handleOllamaCopy)}))
	api.Handle("/api/create", methods(map[string]http.HandlerFunc{http.MethodPost: s.needBackend(s.handleOllamaCreate)}))
	api.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, notFound("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return api
}
