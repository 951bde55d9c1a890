package engine

import (
	"errors"
	"time"

	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/grammar"
	"github.com/wgllm/wgllm/runtime/sample"
)

// The serving API: what serve/ uses. The engine knows nothing of HTTP: it
// takes requests and calls back with events.

// ChatMessage is one turn of a chat (with an assistant's tool calls, or
// a tool's answer).
type ChatMessage = chat.Message

// ToolCall is a function call of an assistant message.
type ToolCall = chat.ToolCall

// Chat is a conversation to render: messages, the tools offered, and
// whether a reasoning model should think.
type Chat = chat.Conversation

// RenderedChat is a chat rendered with the model's template: the prompt,
// and how the template's model writes reasoning and tool calls.
type RenderedChat struct {
	Prompt string
	Format chat.Format
}

// Job is one generation request handed to Engine.Submit.
type Job struct {
	ID        string // caller's id; the engine makes one when empty
	Prompt    string // text to continue (chat requests are rendered first)
	MaxTokens int    // 0: the engine's default
	Sampling  sample.Params
	Stop      []string // generation ends before any of these strings
	Chat      bool     // the prompt is a rendered chat: Options.ChatStop applies too
	AddBOS    *bool    // overrides the model's add_bos_token metadata when set
	// Grammar constrains the output (structured output: a JSON schema or
	// JSON mode); nil: unconstrained. The job ends when the grammar can
	// take nothing more, and near MaxTokens only tokens that can still
	// complete it in time are allowed, so the output parses.
	Grammar *grammar.Grammar
	// LogitBias adds to tokens' logits before sampling (-100..100).
	LogitBias map[int32]float32
	// Logprobs asks for each generated token's log-probability in the
	// events, with the TopLogprobs (0..20) most likely alternatives.
	Logprobs    bool
	TopLogprobs int
}

// TokenLogprob is one generated token with its log-probability under the
// model (the raw softmax) and the most likely alternatives.
type TokenLogprob struct {
	Token   Token
	Logprob float32
	Top     []TopLogprob
}

// TopLogprob is an alternative to a generated token.
type TopLogprob struct {
	Token   Token
	Logprob float32
}

// Token is a vocabulary entry: its id and its bytes in the output (which
// may be part of a UTF-8 character).
type Token struct {
	ID    int32
	Bytes []byte
}

// State is where a job is in its life.
type State string

const (
	Queued    State = "queued"
	Running   State = "running"
	Done      State = "done"
	Cancelled State = "cancelled"
	Failed    State = "failed"
)

// Usage counts tokens.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	CachedTokens     int `json:"cached_tokens"` // prompt tokens whose KV came from a reused prefix
}

// Timings of a job, in milliseconds as JSON.
type Timings struct {
	QueuedMS        float64 `json:"queued_ms"`
	PrefillMS       float64 `json:"prefill_ms"`
	DecodeMS        float64 `json:"decode_ms"`
	TimeToFirstMS   float64 `json:"ttft_ms"` // from submission to the first token
	PromptPerSecond float64 `json:"prompt_per_second"`
	TokensPerSecond float64 `json:"predicted_per_second"`
}

// Event is delivered for each piece of text, then once with Done set.
// Events of one job arrive in order, from the engine's own goroutine: the
// callback must return quickly (hand the event to a buffered channel) and
// must not call back into the engine.
type Event struct {
	JobID string
	Text  string // a piece of generated text (complete UTF-8)
	// Logprobs of the tokens generated since the previous event (with
	// Job.Logprobs); their text is in this event's Text or an earlier one.
	Logprobs     []TokenLogprob
	Done         bool
	FinishReason string // with Done: "stop", "length", "cancelled"; empty on error
	Usage        Usage
	Timings      Timings
	Err          error // with Done: why the job failed
}

// Status is a job's state and its text so far.
type Status struct {
	ID           string    `json:"id"`
	State        State     `json:"status"`
	Text         string    `json:"text"`
	FinishReason string    `json:"finish_reason,omitempty"`
	Error        string    `json:"error,omitempty"`
	Usage        Usage     `json:"usage"`
	Timings      Timings   `json:"timings"`
	Created      time.Time `json:"created"`
}

// Metrics is a snapshot for /metrics.
type Metrics struct {
	QueueDepth       int
	QueueLimit       int
	ActiveSequences  int
	KVBlocksUsed     int
	KVBlocksTotal    int
	TokensGenerated  uint64 // counter
	PromptTokens     uint64 // counter
	RequestsFinished uint64 // counter
}

// Errors Submit can return.
var (
	ErrBusy     = errors.New("engine: queue full, try again later")
	ErrNotReady = errors.New("engine: model not loaded yet")
	ErrClosed   = errors.New("engine: shut down")
	ErrBadJob   = errors.New("engine: invalid request")
)

// TemplateRenderer is Options.RenderChat for a chat template: the
// conversation with an open assistant turn, and the template's format.
func TemplateRenderer(t *chat.Template) func(Chat) (RenderedChat, error) {
	format := t.Format()
	return func(c Chat) (RenderedChat, error) {
		prompt, err := t.RenderConversation(c, true)
		return RenderedChat{Prompt: prompt, Format: format}, err
	}
}
