// Package engine turns a loaded model into text: it tokenises prompts,
// runs prefill and decode steps, samples, and streams decoded text.
package engine

import (
	"errors"
	"fmt"
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

// Generator runs one sequence at a time on a model.
type Generator struct {
	M   *model.Model
	Tok *tokenizer.Tokenizer
	// scratch for sampled decoding
	logits []float32
}

// New pairs a model with its tokenizer.
func New(m *model.Model, tok *tokenizer.Tokenizer) (*Generator, error) {
	if tok.VocabSize() > m.Cfg.Vocab {
		return nil, fmt.Errorf("engine: tokenizer has %d tokens, the model's output only %d", tok.VocabSize(), m.Cfg.Vocab)
	}
	return &Generator{M: m, Tok: tok, logits: make([]float32, m.Cfg.Vocab)}, nil
}

// ErrPromptTooLong is wrapped when a prompt does not fit the context.
var ErrPromptTooLong = errors.New("prompt too long")

// Generate runs req, calling emit with each piece of text as soon as it is
// complete UTF-8. It stops at an end-of-generation token or MaxTokens.
func (g *Generator) Generate(req Request, emit func(string) error) (Stats, error) {
	var st Stats
	addBOS := g.Tok.AddBOS()
	if req.AddBOS != nil {
		addBOS = *req.AddBOS
	}
	ids := g.Tok.Encode(req.Prompt, addBOS)
	if len(ids) == 0 {
		return st, fmt.Errorf("engine: empty prompt (and the model adds no BOS token)")
	}
	st.PromptTokens = len(ids)
	capacity := g.M.KV.Config().MaxSeqLen
	if len(ids) >= capacity {
		return st, fmt.Errorf("engine: %w: %d tokens, the context holds %d", ErrPromptTooLong, len(ids), capacity)
	}
	maxTokens := req.MaxTokens
	if maxTokens <= 0 || len(ids)+maxTokens > capacity {
		maxTokens = capacity - len(ids)
	}
	greedy := req.Sampling.Temperature == 0
	var smp *sample.Sampler
	if !greedy {
		var err error
		if smp, err = sample.New(req.Sampling, g.M.Cfg.Vocab); err != nil {
			return st, err
		}
		if err := smp.Accept(ids...); err != nil {
			return st, err
		}
	} else if err := req.Sampling.Validate(); err != nil && req.Sampling != (sample.Params{}) {
		return st, err
	}
	seq, err := g.M.KV.Acquire()
	if err != nil {
		return st, err
	}
	defer g.M.KV.Release(seq)

	step := model.NextGreedy
	if !greedy {
		step = model.LastLogits
	}
	// Prefill in chunks of the model's batch; only the last chunk's output
	// matters.
	t0 := time.Now()
	var next int32
	for start := 0; start < len(ids); start += g.M.Batch() {
		end := min(start+g.M.Batch(), len(ids))
		if next, err = g.M.Forward(seq, ids[start:end], step, g.logits); err != nil {
			return st, err
		}
	}
	st.Prefill = time.Since(t0)
	dec := g.Tok.NewDecoder()
	t1 := time.Now()
	defer func() { st.Decode = time.Since(t1) }()
	for {
		if !greedy {
			if next, err = smp.Sample(g.logits); err != nil {
				return st, err
			}
		}
		if g.Tok.IsEOG(next) {
			st.FinishReason = "stop"
			break
		}
		st.CompletionTokens++
		if text := dec.Push(next); text != "" {
			if err := emit(text); err != nil {
				return st, err
			}
		}
		if st.CompletionTokens >= maxTokens {
			st.FinishReason = "length"
			break
		}
		if next, err = g.M.Forward(seq, []int32{next}, step, g.logits); err != nil {
			return st, err
		}
	}
	if text := dec.Flush(); text != "" {
		if err := emit(text); err != nil {
			return st, err
		}
	}
	st.Decode = time.Since(t1)
	return st, nil
}
