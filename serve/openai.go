package serve

import (
	"encoding/json"
	"github.com/wgllm/wgllm/runtime/engine"
	"net/http"
)

// OpenAI's response shapes (only the fields this server fills).

type usageOut struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

func openAIUsage(u engine.Usage) *usageOut {
	out := &usageOut{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens,
		TotalTokens: u.PromptTokens + u.CompletionTokens}
	out.PromptTokensDetails.CachedTokens = u.CachedTokens
	return out
}

type chatMessageOut struct {
	Role             string           `json:"role"`
	Content          *string          `json:"content"` // null when the answer is tool calls only
	ReasoningContent string           `json:"reasoning_content,omitempty"`
	ToolCalls        []openAIToolCall `json:"tool_calls,omitempty"`
}

// openAIToolCall is a call in a response; in a streamed delta, Index
// names it, the first delta of a call carries ID, Type and the name, and
// later ones fragments of the arguments.
type openAIToolCall struct {
	Index    *int               `json:"index,omitempty"`
	ID       string             `json:"id,omitempty"`
	Type     string             `json:"type,omitempty"`
	Function openAIFunctionCall `json:"function"`
}

type openAIFunctionCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"` // JSON text of the arguments
}

type chatChoice struct {
	Index        int             `json:"index"`
	Message      chatMessageOut  `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"` // chat.completion
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *usageOut    `json:"usage"`
	// Timings is llama.cpp's extension: where the time went.
	Timings *engine.Timings `json:"timings,omitempty"`
}

type chatDelta struct {
	Role             string           `json:"role,omitempty"`
	Content          *string          `json:"content,omitempty"`
	ReasoningContent *string          `json:"reasoning_content,omitempty"`
	ToolCalls        []openAIToolCall `json:"tool_calls,omitempty"`
}

type chatChunkChoice struct {
	Index        int             `json:"index"`
	Delta        chatDelta       `json:"delta"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type chatChunk struct {
	ID      string            `json:"id"`
	Object  string            `json:"object"` // chat.completion.chunk
	Created int64             `json:"created"`
	Model   string            `json:"model"`
	Choices []chatChunkChoice `json:"choices"`
	Usage   *usageOut         `json:"usage,omitempty"`
	Timings *engine.Timings   `json:"timings,omitempty"`
}

type completionChoice struct {
	Text         string          `json:"text"`
	Index        int             `json:"index"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type completion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"` // text_completion
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usageOut          `json:"usage,omitempty"`
	Timings *engine.Timings    `json:"timings,omitempty"`
}

type modelOut struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // model
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

var jsonNull = json.RawMessage("null")

func (s *Server) modelObject(name string) modelOut {
	return modelOut{ID: name, Object: "model", Created: s.started.Unix(), OwnedBy: "wgllm"}
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request, b Backend) {
	list := modelList(b)
	data := make([]modelOut, len(list))
	for i, m := range list {
		data[i] = s.modelObject(m.Name)
	}
	writeJSON(w, http.StatusOK, struct {
		Object string     `json:"object"`
		Data   []modelOut `json:"data"`
	}{"list", data})
}

func (s *Server) handleModel(w http.ResponseWriter, r *http.Request, b Backend) {
	name := r.PathValue("model")
	if _, ok := b.(Router); !ok && name != b.ModelName() {
		writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: codeModelNotFound,
			Param: "model", Message: "no model " + name + "; this server serves " + b.ModelName()})
		return
	}
	m, aerr := describe(b, name)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeJSON(w, http.StatusOK, s.modelObject(m.Name))
}

func (s *Server) handleChatCompletions(w http.ResponseWriter, r *http.Request, b Backend) {
	s.handleOpenAI(w, r, b, kindChat)
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request, b Backend) {
	s.handleOpenAI(w, r, b, kindCompletion)
}

// handleOpenAI serves /v1/chat/completions and /v1/completions, streamed
// (server-sent events) or not. The request's "model" picks the model when
// the server has several (see modelBackend).
func (s *Server) handleOpenAI(w http.ResponseWriter, r *http.Request, b Backend, kind requestKind) {
	var req genRequest
	if aerr := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	g, aerr := s.openAIGeneration(&req, kind)
	if aerr != nil {
		reqLog(r).Info().Str("code", aerr.Code).Str("param", aerr.Param).Msg(aerr.Message)
		writeError(w, aerr)
		return
	}
	s.run(w, r, b, g, openAIProtocol(g))
}

// openAIProtocol is the OpenAI endpoints' protocol for g.
func openAIProtocol(g *generation) protocol {
	p := protocol{endpoint: "completions", idPrefix: "cmpl-"}
	if g.kind == kindChat {
		p.endpoint, p.idPrefix = "chat", "chatcmpl-"
	}
	p.framer = func(m responseMeta) framer {
		return &openAIFramer{id: m.id, model: m.model, created: m.created.Unix(), chat: g.kind == kindChat,
			includeUsage: g.includeUsage, logprobs: g.settings.Logprobs, index: m.choice, several: m.choices > 1}
	}
	return p
}

// openAIFramer makes the OpenAI objects of one response: server-sent
// events of chunks, or the whole completion.
type openAIFramer struct {
	id, model    string
	created      int64
	chat         bool
	includeUsage bool
	logprobs     bool // asked for: pieces carry them
	index        int  // the choice (n > 1)
	several      bool // one of n > 1 choices: the usage comes once, in summary
	offset       int  // completions: bytes of text streamed, for text_offset
}

func (o *openAIFramer) contentType() string { return "text/event-stream" }

// opening is, for a chat, the chunk with the role, as OpenAI sends it.
func (o *openAIFramer) opening() []any {
	if !o.chat {
		return nil
	}
	empty := ""
	return []any{o.chunk(chatDelta{Role: "assistant", Content: &empty}, "", nil, nil)}
}

// piece is a chunk of text or reasoning, or for a tool call two chunks in
// OpenAI's shape: the call's index, id, type and name (arguments ""),
// then its arguments.
func (o *openAIFramer) piece(d delta) []any {
	if !o.chat {
		lp := completionLogprobsJSON(o.logprobs, d.Logprobs, o.offset)
		o.offset += tokensBytes(d.Logprobs)
		return []any{o.chunk(chatDelta{}, d.Content, nil, lp)}
	}
	lp := chatLogprobsJSON(o.logprobs, d.Logprobs)
	switch {
	case d.Call != nil:
		i := d.Call.Index
		head := openAIToolCall{Index: &i, ID: d.Call.ID, Type: "function", Function: openAIFunctionCall{Name: d.Call.Name}}
		args := openAIToolCall{Index: &i, Function: openAIFunctionCall{Arguments: string(d.Call.Arguments)}}
		return []any{o.chunk(chatDelta{ToolCalls: []openAIToolCall{head}}, "", nil, lp),
			o.chunk(chatDelta{ToolCalls: []openAIToolCall{args}}, "", nil, nil)}
	case d.Reasoning != "":
		text := d.Reasoning
		return []any{o.chunk(chatDelta{ReasoningContent: &text}, "", nil, lp)}
	}
	text := d.Content
	return []any{o.chunk(chatDelta{Content: &text}, "", nil, lp)}
}

// closing is the chunk carrying the finish reason (and timings), then
// with stream_options.include_usage a chunk with no choices and the usage.
func (o *openAIFramer) closing(out *outcome) []any {
	frames := []any{o.chunk(chatDelta{}, "", out, nil)}
	if o.includeUsage && !o.several {
		frames = append(frames, o.usageChunk(out.Usage))
	}
	return frames
}

func (o *openAIFramer) failure(e *apiError) any { return e.openAI() }

func (o *openAIFramer) frame(buf []byte, v any) []byte {
	body, err := json.Marshal(v)
	if err != nil {
		body = []byte(`{"error":{"message":"encoding a chunk failed","type":"server_error","param":null,"code":"internal_error"}}`)
	}
	buf = append(buf, "data: "...)
	buf = append(buf, body...)
	return append(buf, "\n\n"...)
}

func (o *openAIFramer) terminator() string { return "data: [DONE]\n\n" }

func (o *openAIFramer) whole(out *outcome) any {
	timings := out.Timings
	if o.chat {
		return chatCompletion{ID: o.id, Object: "chat.completion", Created: o.created, Model: o.model,
			Choices: []chatChoice{o.chatChoice(out)}, Usage: openAIUsage(out.Usage), Timings: &timings}
	}
	return completion{ID: o.id, Object: "text_completion", Created: o.created, Model: o.model,
		Choices: []completionChoice{o.completionChoice(out)}, Usage: openAIUsage(out.Usage), Timings: &timings}
}

// wholeChoices is the response of n > 1 choices: the usage counts the
// prompt once and every choice's completion.
func (o *openAIFramer) wholeChoices(outs []*outcome) any {
	usages := make([]engine.Usage, len(outs))
	for i, out := range outs {
		usages[i] = out.Usage
	}
	usage := openAIUsage(totalUsage(usages))
	timings := outs[0].Timings
	f := *o
	if o.chat {
		resp := chatCompletion{ID: o.id, Object: "chat.completion", Created: o.created, Model: o.model, Usage: usage, Timings: &timings}
		for i, out := range outs {
			f.index = i
			resp.Choices = append(resp.Choices, f.chatChoice(out))
		}
		return resp
	}
	resp := completion{ID: o.id, Object: "text_completion", Created: o.created, Model: o.model, Usage: usage, Timings: &timings}
	for i, out := range outs {
		f.index = i
		resp.Choices = append(resp.Choices, f.completionChoice(out))
	}
	return resp
}

// summary ends a stream of n > 1 choices: with include_usage, the chunk
// of their usage.
func (o *openAIFramer) summary(total engine.Usage) []any {
	if !o.includeUsage {
		return nil
	}
	return []any{o.usageChunk(total)}
}

// chatChoice is a whole chat answer as a choice.
func (o *openAIFramer) chatChoice(out *outcome) chatChoice {
	msg := chatMessageOut{Role: "assistant", ReasoningContent: out.Reasoning}
	if out.Content != "" || len(out.ToolCalls) == 0 {
		msg.Content = &out.Content
	}
	for _, c := range out.ToolCalls {
		msg.ToolCalls = append(msg.ToolCalls, openAIToolCall{ID: c.ID, Type: "function",
			Function: openAIFunctionCall{Name: c.Name, Arguments: string(c.Arguments)}})
	}
	return chatChoice{Index: o.index, Message: msg, Logprobs: chatLogprobsJSON(o.logprobs, out.Logprobs),
		FinishReason: out.FinishReason}
}

// completionChoice is a whole completion as a choice.
func (o *openAIFramer) completionChoice(out *outcome) completionChoice {
	reason := out.FinishReason
	return completionChoice{Text: out.Content, Index: o.index, Logprobs: completionLogprobsJSON(o.logprobs, out.Logprobs, 0),
		FinishReason: &reason}
}

// chunk is one streamed chunk: a chat delta or a completion's text, with
// its logprobs (nil: null); with done, the closing chunk carrying the
// finish reason (and timings).
func (o *openAIFramer) chunk(d chatDelta, text string, done *outcome, logprobs json.RawMessage) any {
	var reason *string
	var timings *engine.Timings
	if done != nil {
		r, t := done.FinishReason, done.Timings
		reason, timings = &r, &t
	}
	if logprobs == nil {
		logprobs = jsonNull
	}
	if o.chat {
		return chatChunk{ID: o.id, Object: "chat.completion.chunk", Created: o.created, Model: o.model,
			Choices: []chatChunkChoice{{Index: o.index, Delta: d, Logprobs: logprobs, FinishReason: reason}}, Timings: timings}
	}
	return completion{ID: o.id, Object: "text_completion", Created: o.created, Model: o.model,
		Choices: []completionChoice{{Text: text, Index: o.index, Logprobs: logprobs, FinishReason: reason}}, Timings: timings}
}

// usageChunk is stream_options.include_usage's last chunk: no choices,
// the usage.
func (o *openAIFramer) usageChunk(u engine.Usage) any {
	if o.chat {
		return chatChunk{ID: o.id, Object: "chat.completion.chunk", Created: o.created, Model: o.model,
			Choices: []chatChunkChoice{}, Usage: openAIUsage(u)}
	}
	return completion{ID: o.id, Object: "text_completion", Created: o.created, Model: o.model,
		Choices: []completionChoice{}, Usage: openAIUsage(u)}
}
