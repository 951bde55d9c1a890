package serve

import (
	"bytes"
	"net/http"
	"unicode/utf8"

	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/grammar"
)

// requestKind says which prompt field a request must carry.
type requestKind int

const (
	kindCompletion requestKind = iota // "prompt"
	kindChat                          // "messages"
)

// generation is one request to generate in no protocol's shape: each
// protocol decodes its own body into one (OpenAI's genRequest.generation,
// Ollama's handlers, the websocket's messages), and one pipeline (run,
// start) serves them all.
type generation struct {
	model        string // as the request named it ("": the default)
	kind         requestKind
	prompt       string               // kindCompletion
	messages     []engine.ChatMessage // kindChat, validated
	settings     engine.Job           // validated sampling, max tokens and stops; no prompt
	fields       samplingFields       // the sampling fields as the request set them (under them: the model's defaults)
	choice       int                  // which of n choices (its seed is the first's + choice)
	stream       bool
	n            int       // choices (OpenAI's n); 0 or 1: one
	includeUsage bool      // OpenAI's stream_options.include_usage
	tools        *toolSpec // kindChat: the tools offered; nil: none
	think        *bool     // the template's enable_thinking; nil: its default
	effort       string    // the template's reasoning_effort; "": its default
	reasoning    reasoningMode
}

// maxChoices bounds OpenAI's n: each choice is a sequence of its own.
const maxChoices = 8

// reasoningMode is what becomes of a reasoning model's <think> text.
type reasoningMode int

const (
	reasoningSplit reasoningMode = iota // apart from the answer (reasoning_content, thinking)
	reasoningKeep                       // left in the answer's text (Ollama without think)
	reasoningDrop                       // left out (Ollama's think: false)
)

// generation validates an OpenAI body of the given kind, in the order a
// client would fix it: what the server does not do, the settings, then
// the prompt.
func (s *Server) openAIGeneration(req *genRequest, kind requestKind) (*generation, *apiError) {
	unsupported := func(param, msg string) *apiError {
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: codeUnsupported,
			Param: param, Message: msg}
	}
	switch {
	case req.N != nil && (*req.N < 1 || *req.N > maxChoices):
		return nil, invalidParam("n", "n %d must be in [1, %d]", *req.N, maxChoices)
	case req.BestOf != nil && *req.BestOf != 1:
		return nil, unsupported("best_of", "only best_of=1 is supported")
	case req.Echo:
		return nil, unsupported("echo", "echo is not supported")
	}
	if name := req.unsupportedField(); name != "" {
		return nil, unsupported(name, name+" is not supported by this server")
	}
	if kind != kindChat && (!isNull(req.Tools) || !isNull(req.ToolChoice)) {
		return nil, unsupported("tools", "tools are for chat requests")
	}
	settings, aerr := s.samplingJob(&req.samplingFields)
	if aerr != nil {
		return nil, aerr
	}
	if settings.Grammar, aerr = responseFormatGrammar(req.ResponseFormat); aerr != nil {
		return nil, aerr
	}
	if aerr = openAILogprobs(kind, req.Logprobs, req.TopLogprobs, &settings); aerr != nil {
		return nil, aerr
	}
	if settings.LogitBias, aerr = logitBias(req.LogitBias); aerr != nil {
		return nil, aerr
	}
	g := &generation{model: req.Model, kind: kind, settings: settings, fields: req.samplingFields, stream: req.Stream,
		includeUsage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage}
	if req.N != nil {
		g.n = *req.N
	}
	switch kind {
	case kindChat:
		if aerr = reasoningEffort("reasoning_effort", req.ReasoningEffort); aerr != nil {
			return nil, aerr
		}
		g.effort = req.ReasoningEffort
		if len(req.Prompt) > 0 && !bytes.Equal(bytes.TrimSpace(req.Prompt), []byte("null")) {
			return nil, invalidParam("prompt", "a chat request takes messages, not prompt")
		}
		if g.messages, aerr = chatMessages(req.Messages); aerr != nil {
			return nil, aerr
		}
		if g.tools, aerr = parseTools(req.Tools); aerr != nil {
			return nil, aerr
		}
		if aerr = g.tools.parseToolChoice(req.ToolChoice); aerr != nil {
			return nil, aerr
		}
		if req.ParallelToolCalls != nil {
			g.tools.parallel = *req.ParallelToolCalls
		}
		if g.tools.offered() && settings.Grammar != nil {
			return nil, unsupported("response_format", "response_format json_object or json_schema with tools is not supported: the answer is either a tool call or the format")
		}
	default:
		if req.Messages != nil {
			return nil, invalidParam("messages", "a completion request takes prompt, not messages")
		}
		if g.prompt, aerr = promptText(req.Prompt); aerr != nil {
			return nil, aerr
		}
		if !utf8.ValidString(g.prompt) {
			return nil, invalidParam("prompt", "prompt is not valid UTF-8")
		}
	}
	return g, nil
}

// outputPlan is how to read a job's output: the template's format, the
// tools offered, and where the output starts.
type outputPlan struct {
	format    chat.Format
	tools     *toolSpec        // nil: calls are not looked for
	inThink   bool             // the prompt opened <think>
	prefill   string           // the prompt ends with this start of the answer
	grammar   *grammar.Grammar // what follows the prefill (a required call)
	reasoning reasoningMode
}

// buildJob turns a generation into a Job for b: its settings and the
// prompt (a chat rendered with b's template, and how to read the
// answer), within the prompt limit.
func (s *Server) buildJob(b Backend, g *generation) (engine.Job, *outputPlan, *apiError) {
	job := g.settings
	job.Stop = append([]string(nil), g.settings.Stop...)
	var plan *outputPlan
	switch g.kind {
	case kindChat:
		total := 0
		for _, m := range g.messages {
			total += len(m.Content)
		}
		if total > s.cfg.MaxPromptBytes {
			return job, nil, promptTooLarge(total, s.cfg.MaxPromptBytes)
		}
		conv := engine.Chat{Messages: g.messages, Thinking: g.think, ReasoningEffort: g.effort}
		if g.tools.offered() {
			conv.Tools = g.tools.defs
		}
		rendered, err := b.RenderChat(conv)
		if err != nil {
			ae := submitError(err)
			ae.Message = "rendering the chat template: " + ae.Message
			return job, nil, ae
		}
		plan, ae := chatPlan(g, rendered)
		if ae != nil {
			return job, nil, ae
		}
		job.Prompt = rendered.Prompt + plan.prefill
		job.Chat = true
		if plan.grammar != nil {
			job.Grammar = plan.grammar
		}
		if len(job.Prompt) > s.cfg.MaxPromptBytes {
			return job, nil, promptTooLarge(len(job.Prompt), s.cfg.MaxPromptBytes)
		}
		return job, plan, nil
	default:
		job.Prompt = g.prompt
	}
	if len(job.Prompt) > s.cfg.MaxPromptBytes {
		return job, nil, promptTooLarge(len(job.Prompt), s.cfg.MaxPromptBytes)
	}
	return job, plan, nil
}

// chatPlan is how to read the answer to a rendered chat.
func chatPlan(g *generation, rendered engine.RenderedChat) (*outputPlan, *apiError) {
	plan := &outputPlan{format: rendered.Format, reasoning: g.reasoning}
	if g.tools.offered() {
		if plan.format.Tools == chat.NoTools {
			return nil, &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: codeUnsupported,
				Param: "tools", Message: "the model's chat template does not support tools"}
		}
		plan.tools = g.tools
		if g.tools.mode == toolsRequired || g.tools.mode == toolsNamed {
			plan.prefill, plan.grammar = toolConstraint(plan.format.Tools, g.tools)
		}
	}
	if g.think != nil && *g.think && !plan.format.Thinking && g.reasoning == reasoningSplit {
		return nil, &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: codeUnsupported,
			Param: "think", Message: "the model's chat template does not support thinking"}
	}
	switch {
	case g.reasoning == reasoningKeep && plan.format.Tools == chat.Harmony:
		// gpt-oss always reasons, in its own channel, which is no text
		// of the answer (Ollama too splits it out by default).
		plan.reasoning = reasoningSplit
	case g.reasoning == reasoningKeep:
		plan.format.Thinking = false
	}
	plan.inThink = plan.prefill == "" && plan.format.OpensThinking(rendered.Prompt)
	return plan, nil
}
