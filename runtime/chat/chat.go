// Package chat renders a conversation into a model's prompt with the model's
// Jinja chat template (GGUF key tokenizer.chat_template), the way Hugging
// Face transformers' apply_chat_template does, so the prompt is the one the
// model was trained on byte for byte.
//
// Templates run on gonja (github.com/nikolalohinski/gonja/v2), a Go Jinja
// engine, configured like transformers' sandbox (trim_blocks, lstrip_blocks,
// loop controls, raise_exception, strftime_now, a Python-compatible tojson)
// and with fixes where gonja departs from Jinja2 in ways chat templates
// notice (see env.go). Templates are untrusted data: rendering is bounded in
// steps, nesting, time, output and value size (see Limits and guard.go), and
// errors, including panics inside gonja, come back as Go errors.
package chat

import (
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nikolalohinski/gonja/v2/exec"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"` // system, user, assistant, tool, ...
	Content string `json:"content"`
	// ToolCalls are an assistant message's function calls.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID is, in a tool message, the id of the call it answers.
	ToolCallID string `json:"tool_call_id,omitempty"`
	// Name is, in a tool message, the function that answered.
	Name string `json:"name,omitempty"`
	// Reasoning is an assistant message's reasoning, which templates read
	// as reasoning_content (Qwen 3) or thinking (gpt-oss).
	Reasoning string `json:"reasoning_content,omitempty"`
}

// Options configure a template.
type Options struct {
	// BOSToken and EOSToken are the texts of the model's special tokens,
	// the template's bos_token and eos_token.
	BOSToken, EOSToken string
	// Now is strftime_now's clock (Llama 3 puts today's date in the system
	// prompt); nil means time.Now.
	Now func() time.Time
	// Limits bound one Render; zero fields take the defaults.
	Limits Limits
}

// Limits bound one Render of an untrusted template.
type Limits struct {
	MaxSteps       int           // loop iterations plus macro calls (default 200,000)
	MaxDepth       int           // nesting of loops and macro calls (default 100)
	MaxOutputBytes int           // rendered prompt size (default 8 MiB)
	MaxValueBytes  int           // any value a template builds: set, macro argument, str * n, join... (default 8 MiB)
	Timeout        time.Duration // wall time, checked at each step (default 2 s)
}

// DefaultLimits are the limits of a zero Limits field. A conversation
// needs a few steps per message, and a render takes milliseconds; a
// runaway hits the step limit in about a second on a slow core.
var DefaultLimits = Limits{
	MaxSteps:       200_000,
	MaxDepth:       100,
	MaxOutputBytes: 8 << 20,
	MaxValueBytes:  8 << 20,
	Timeout:        2 * time.Second,
}

func (l Limits) withDefaults() (Limits, error) {
	d := DefaultLimits
	for _, f := range []struct {
		v   *int
		def int
		n   string
	}{{&l.MaxSteps, d.MaxSteps, "MaxSteps"}, {&l.MaxDepth, d.MaxDepth, "MaxDepth"},
		{&l.MaxOutputBytes, d.MaxOutputBytes, "MaxOutputBytes"}, {&l.MaxValueBytes, d.MaxValueBytes, "MaxValueBytes"}} {
		if *f.v < 0 {
			return l, fmt.Errorf("chat: Limits.%s is negative (%d)", f.n, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	// Deeper nesting could overflow the goroutine stack, which is fatal.
	if l.MaxDepth > 1000 {
		return l, fmt.Errorf("chat: Limits.MaxDepth %d is above 1000", l.MaxDepth)
	}
	if l.Timeout < 0 {
		return l, fmt.Errorf("chat: Limits.Timeout is negative (%s)", l.Timeout)
	}
	if l.Timeout == 0 {
		l.Timeout = d.Timeout
	}
	return l, nil
}

// ErrLimit matches (errors.Is) every *LimitError.
var ErrLimit = errors.New("chat: template exceeded a render limit")

// LimitError is a Render stopped by one of its Limits.
type LimitError struct {
	What  string // "output size", "loop iterations and macro calls", ...
	Limit string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("chat: template exceeded the %s limit (%s)", e.What, e.Limit)
}

func (e *LimitError) Is(target error) bool { return target == ErrLimit }

func limitError(what string, limit int) *LimitError {
	return &LimitError{What: what, Limit: strconv.Itoa(limit)}
}

// RaisedError is the template rejecting the conversation with
// raise_exception, e.g. Gemma's "System role not supported". It is the
// caller's bad request, not a server fault.
type RaisedError struct{ Message string }

func (e *RaisedError) Error() string { return "chat: template rejected the conversation: " + e.Message }

// errPanic marks a panic inside gonja turned into an error: a gonja bug,
// which the fuzz tests look for.
var errPanic = errors.New("gonja failed")

// Template is a parsed chat template. It is safe for concurrent use.
type Template struct {
	source   string
	opts     Options
	tmpl     *exec.Template
	fallback bool
}

// New parses a Jinja chat template.
func New(source string, opts Options) (*Template, error) {
	limits, err := opts.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	opts.Limits = limits
	if opts.Now == nil {
		opts.Now = time.Now
	}
	tmpl, err := parse(source, opts)
	if err != nil {
		return nil, err
	}
	return &Template{source: source, opts: opts, tmpl: tmpl}, nil
}

//go:embed chatml.jinja
var chatMLSource string

// Fallback returns the template for models without one: ChatML, as
// llama.cpp's server uses when the GGUF has no tokenizer.chat_template:
//
//	<|im_start|>{role}\n{content}<|im_end|>\n   (each message, any role)
//	<|im_start|>assistant\n                     (with add_generation_prompt)
//
// It is llama.cpp's choice, so a model behaves here as it does there. For a
// base model the markers are plain text it has not been trained on; the
// role-labelled lines still make the turns readable, and serving code should
// add "<|im_end|>" to the stop strings. The template uses no BOS: the
// tokenizer adds it where the model wants one.
func Fallback(opts Options) (*Template, error) {
	t, err := New(chatMLSource, opts)
	if err != nil {
		return nil, err
	}
	t.fallback = true
	return t, nil
}

// Source is the template's Jinja text.
func (t *Template) Source() string { return t.source }

// IsFallback reports whether t is the ChatML fallback rather than the
// model's own template.
func (t *Template) IsFallback() bool { return t.fallback }

// StopStrings are the strings that end the model's turn beyond its
// end-of-generation tokens: ChatML's markers for the fallback (the model
// has no end-of-turn token for them), none for the model's own template.
func (t *Template) StopStrings() []string {
	if t.fallback {
		return []string{"<|im_end|>", "<|im_start|>"}
	}
	return nil
}

// Render formats messages as the model's prompt. With addGenerationPrompt
// the prompt ends with the opening of an assistant turn, for the model to
// continue. The template sees messages, add_generation_prompt, bos_token
// and eos_token, as with transformers.
//
// Errors: a *RaisedError when the template refuses the conversation (a bad
// request), a *LimitError (errors.Is ErrLimit) when it ran away, else the
// template failed (with gonja's message, which names the line).
func (t *Template) Render(messages []Message, addGenerationPrompt bool) (string, error) {
	return t.RenderConversation(Conversation{Messages: messages}, addGenerationPrompt)
}

// render runs the template on msgs with the standard variables and vars.
func (t *Template) render(msgs messageList, addGenerationPrompt bool, vars map[string]any) (out string, err error) {
	st := &renderState{limits: t.opts.Limits, deadline: time.Now().Add(t.opts.Limits.Timeout)}
	w := &cappedWriter{limit: t.opts.Limits.MaxOutputBytes, st: st}
	all := map[string]any{
		"messages":              msgs,
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             t.opts.BOSToken,
		"eos_token":             t.opts.EOSToken,
		"raise_exception":       st.raiseException,
		stateKey:                st,
	}
	for k, v := range vars {
		all[k] = v
	}
	ctx := exec.NewContext(all)
	defer func() {
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("chat: rendering template: %w: %v", errPanic, r)
		}
	}()
	execErr := t.tmpl.Execute(w, ctx)
	if st.failure != nil {
		return "", st.failure
	}
	if execErr != nil {
		msg := execErr.Error()
		if le := limitInMessage(msg); le != nil {
			return "", le
		}
		return "", fmt.Errorf("chat: rendering template: %s", tidyError(msg))
	}
	return w.b.String(), nil
}

// raiseException is the template's raise_exception(message).
func (s *renderState) raiseException(message string) (string, error) {
	return "", s.fail(&RaisedError{Message: message})
}

// maxErrorBytes bounds error messages: gonja quotes the values involved,
// which may be megabytes.
const maxErrorBytes = 1000

// tidyError drops gonja's "unable to execute template: " prefix and
// shortens long messages.
func tidyError(msg string) string {
	msg = strings.TrimPrefix(msg, "unable to execute template: ")
	if len(msg) > maxErrorBytes {
		msg = fmt.Sprintf("%s… (%d bytes)", strings.ToValidUTF8(msg[:maxErrorBytes], ""), len(msg))
	}
	return msg
}

// limitInMessage recovers a *LimitError from a gonja error message. str
// methods cannot reach the render state to record their limit errors, and
// gonja passes errors from methods on as text only.
func limitInMessage(msg string) *LimitError {
	const marker = "chat: template exceeded the "
	i := strings.Index(msg, marker)
	if i < 0 {
		return nil
	}
	rest := msg[i+len(marker):]
	what, rest, ok := strings.Cut(rest, " limit (")
	if !ok {
		return nil
	}
	limit, _, ok := strings.Cut(rest, ")")
	if !ok {
		return nil
	}
	return &LimitError{What: what, Limit: limit}
}
