package engine

import (
	"errors"
	"time"

	"github.com/wgllm/wgllm/runtime/sample"
)

// The serving API: what serve/ uses. The engine knows nothing of HTTP: it
// takes requests and calls back with events.

// ChatMessage is one turn of a chat.
type ChatMessage struct {
	Role    string `json:"role"` // system, user, assistant
	Content string `json:"content"`
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
	JobID        string
	Text         string // a piece of generated text (complete UTF-8)
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
