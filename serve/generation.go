package serve

import (
	"bytes"
	"net/http"
	"unicode/utf8"

	"github.com/wgllm/wgllm/runtime/engine"
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
	stream       bool
	includeUsage bool // OpenAI's stream_options.include_usage
}

// generation validates an OpenAI body of the given kind, in the order a
// client would fix it: what the server does not do, the settings, then
// the prompt.
func (s *Server) openAIGeneration(req *genRequest, kind requestKind) (*generation, *apiError) {
	unsupported := func(param, msg string) *apiError {
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: codeUnsupported,
			Param: param, Message: msg}
	}
	switch {
	case req.N != nil && *req.N != 1:
		return nil, unsupported("n", "only n=1 is supported")
	case req.BestOf != nil && *req.BestOf != 1:
		return nil, unsupported("best_of", "only best_of=1 is supported")
	case req.Echo:
		return nil, unsupported("echo", "echo is not supported")
	}
	if name := req.unsupportedField(); name != "" {
		return nil, unsupported(name, name+" is not supported by this server")
	}
	settings, aerr := s.samplingJob(&req.samplingFields)
	if aerr != nil {
		return nil, aerr
	}
	g := &generation{model: req.Model, kind: kind, settings: settings, stream: req.Stream,
		includeUsage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage}
	switch kind {
	case kindChat:
		if len(req.Prompt) > 0 && !bytes.Equal(bytes.TrimSpace(req.Prompt), []byte("null")) {
			return nil, invalidParam("prompt", "a chat request takes messages, not prompt")
		}
		if g.messages, aerr = chatMessages(req.Messages); aerr != nil {
			return nil, aerr
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

// buildJob turns a generation into a Job for b: its settings and the
// prompt (a chat rendered with b's template), within the prompt limit.
func (s *Server) buildJob(b Backend, g *generation) (engine.Job, *apiError) {
	job := g.settings
	job.Stop = append([]string(nil), g.settings.Stop...)
	switch g.kind {
	case kindChat:
		total := 0
		for _, m := range g.messages {
			total += len(m.Content)
		}
		if total > s.cfg.MaxPromptBytes {
			return job, promptTooLarge(total, s.cfg.MaxPromptBytes)
		}
		rendered, err := b.RenderChat(engine.Chat{Messages: g.messages})
		if err != nil {
			ae := submitError(err)
			ae.Message = "rendering the chat template: " + ae.Message
			return job, ae
		}
		job.Prompt = rendered.Prompt
		job.Chat = true
	default:
		job.Prompt = g.prompt
	}
	if len(job.Prompt) > s.cfg.MaxPromptBytes {
		return job, promptTooLarge(len(job.Prompt), s.cfg.MaxPromptBytes)
	}
	return job, nil
}
