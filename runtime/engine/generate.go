// Package engine turns a loaded model into text: it tokenises prompts,
// runs prefill and decode steps, samples, and streams decoded text.
package engine

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/sample"
	"github.com/wgllm/wgllm/runtime/tokenizer"
)

// Request is one generation.
type Request struct {
	Prompt    string
	MaxTokens int
	Sampling  sample.Params
	// AddBOS overrides the model's add_bos_token metadata when set.
	AddBOS *bool
}

// Stats describes a finished generation.
type Stats struct {
	PromptTokens, CompletionTokens int
	FinishReason                   string // "stop" (end of generation token), "length"
	Prefill, Decode                time.Duration
}

// Generator runs one sequence at a time on a model: the CLI's and the
// browser build's generation, through the same Engine the server uses.
type Generator struct {
	M   *model.Model
	Tok *tokenizer.Tokenizer

	mu        sync.Mutex
	running   *Engine // the call in progress, for Cancel
	runningID string
}

// Cancel ends the generation in progress at the end of its current step;
// Generate then returns with FinishReason "cancelled". It may be called
// from any goroutine.
func (g *Generator) Cancel() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running != nil {
		g.running.Cancel(g.runningID)
	}
}

// New pairs a model with its tokenizer.
func New(m *model.Model, tok *tokenizer.Tokenizer) (*Generator, error) {
	if tok.VocabSize() > m.Cfg.Vocab {
		return nil, fmt.Errorf("engine: tokenizer has %d tokens, the model's output only %d", tok.VocabSize(), m.Cfg.Vocab)
	}
	return &Generator{M: m, Tok: tok}, nil
}

// ErrPromptTooLong is wrapped when a prompt does not fit the context.
var ErrPromptTooLong = errors.New("prompt too long")

// Generate runs req, calling emit with each piece of text as soon as it is
// complete UTF-8. It stops at an end-of-generation token or MaxTokens. It
// runs on a one-slot Engine, the serving loop itself, for the time of the
// call; an error from emit cancels the generation and is returned.
func (g *Generator) Generate(req Request, emit func(string) error) (Stats, error) {
	eng, err := NewEngine(g.M, g.Tok, Options{MaxBatch: 1, QueueLimit: 1, StepTokens: g.M.Batch()})
	if err != nil {
		return Stats{}, err
	}
	defer eng.Close()
	// Events come from the engine's goroutine; emit runs on the caller's.
	// The engine never waits long: this loop reads until the final event.
	events := make(chan Event, 64)
	id, err := eng.Submit(Job{Prompt: req.Prompt, MaxTokens: req.MaxTokens, Sampling: req.Sampling, AddBOS: req.AddBOS},
		func(ev Event) { events <- ev })
	if err != nil {
		return Stats{}, err
	}
	g.mu.Lock()
	g.running, g.runningID = eng, id
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.running = nil
		g.mu.Unlock()
	}()
	var emitErr error
	for ev := range events {
		if !ev.Done {
			if emitErr == nil {
				if emitErr = emit(ev.Text); emitErr != nil {
					eng.Cancel(id)
				}
			}
			continue
		}
		st := Stats{PromptTokens: ev.Usage.PromptTokens, CompletionTokens: ev.Usage.CompletionTokens, FinishReason: ev.FinishReason,
			Prefill: time.Duration(ev.Timings.PrefillMS * float64(time.Millisecond)),
			Decode:  time.Duration(ev.Timings.DecodeMS * float64(time.Millisecond))}
		if emitErr != nil {
			return st, emitErr
		}
		return st, ev.Err
	}
	return Stats{}, errors.New("engine: the generation ended without a final event")
}
