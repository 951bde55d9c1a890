package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"

	"github.com/wgllm/wgllm/runtime/kv"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/tokenizer"
)

// EmbedInput is one text to embed, or its tokens already (Tokens non-nil).
type EmbedInput struct {
	Text   string
	Tokens []int32
}

// EmbedRequest asks for one embedding per input, pooled from the model's
// hidden states after the final norm as the file's pooling_type says
// (last, mean or cls).
type EmbedRequest struct {
	Inputs    []EmbedInput
	Normalize bool // scale each vector to unit L2 norm
	// Truncate cuts an input longer than the context to fit (Ollama's
	// truncate); otherwise such an input fails the request.
	Truncate bool
}

// EmbedResult holds the vectors, in input order.
type EmbedResult struct {
	Vectors      [][]float32
	PromptTokens int
}

// InputError is a bad input of an embedding request, by index.
type InputError struct {
	Index int
	Err   error
}

func (e *InputError) Error() string { return fmt.Sprintf("input %d: %v", e.Index, e.Err) }
func (e *InputError) Unwrap() error { return e.Err }

// embedWork is an embedding request waiting in the loop.
type embedWork struct {
	ids       [][]int32
	normalize bool
	next      int // the input to run next
	vectors   [][]float32
	tokens    int
	err       error
	cancelled atomic.Bool
	done      chan struct{}
}

// Embed computes the embeddings of req's inputs. The engine's loop runs
// them one input at a time between decode steps, on a sequence slot no job
// holds; Embed waits for the result or ctx.
func (e *Engine) Embed(ctx context.Context, req EmbedRequest) (EmbedResult, error) {
	if len(req.Inputs) == 0 {
		return EmbedResult{}, fmt.Errorf("%w: no input", ErrBadJob)
	}
	if e.m.Cfg.Pooling == model.PoolNone {
		return EmbedResult{}, fmt.Errorf("%w: the model's pooling_type is none (one embedding per token), which these APIs cannot return", ErrBadJob)
	}
	capacity := e.m.KV.Config().MaxSeqLen
	w := &embedWork{normalize: req.Normalize, done: make(chan struct{})}
	for i, in := range req.Inputs {
		ids := in.Tokens
		if ids == nil {
			ids = e.tok.EncodeWith(in.Text, tokenizer.EncodeOptions{AddBOS: e.tok.AddBOS(), AddEOS: e.tok.AddEOS(), ParseSpecial: true})
		}
		for _, id := range ids {
			if id < 0 || int(id) >= e.m.Cfg.Vocab {
				return EmbedResult{}, &InputError{i, fmt.Errorf("%w: token %d is outside the vocabulary [0, %d)", ErrBadJob, id, e.m.Cfg.Vocab)}
			}
		}
		if len(ids) == 0 {
			return EmbedResult{}, &InputError{i, fmt.Errorf("%w: empty input", ErrBadJob)}
		}
		if len(ids) > capacity {
			if !req.Truncate {
				return EmbedResult{}, &InputError{i, fmt.Errorf("%w: %w: %d tokens, the context holds %d", ErrBadJob, ErrPromptTooLong, len(ids), capacity)}
			}
			ids = ids[:capacity]
		}
		w.ids = append(w.ids, ids)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return EmbedResult{}, ErrClosed
	}
	if len(e.embeds) >= e.opt.QueueLimit {
		e.mu.Unlock()
		return EmbedResult{}, ErrBusy
	}
	e.embeds = append(e.embeds, w)
	e.signal()
	e.mu.Unlock()
	select {
	case <-w.done:
	case <-ctx.Done():
		w.cancelled.Store(true)
		e.signal()
		return EmbedResult{}, ctx.Err()
	}
	if w.err != nil {
		return EmbedResult{}, w.err
	}
	return EmbedResult{Vectors: w.vectors, PromptTokens: w.tokens}, nil
}

// embedStep runs one input of the first waiting embedding request, if a
// slot is free and the KV pool has room for it.
func (e *Engine) embedStep() {
	e.mu.Lock()
	for len(e.embeds) > 0 && e.embeds[0].cancelled.Load() {
		e.embeds = e.embeds[1:]
	}
	if len(e.embeds) == 0 {
		e.mu.Unlock()
		return
	}
	w := e.embeds[0]
	e.mu.Unlock()
	s := e.freeSlot()
	ids := w.ids[w.next]
	if s < 0 || (len(e.active) > 0 && !e.fits(len(ids))) {
		return // wait for running jobs to free a slot or blocks
	}
	vec, err := e.embedOne(s, ids)
	if err == nil {
		if w.normalize {
			normalize(vec)
		}
		w.vectors = append(w.vectors, vec)
		w.tokens += len(ids)
		e.promptTokens.Add(uint64(len(ids)))
		w.next++
	}
	if err != nil || w.next == len(w.ids) {
		w.err = err
		e.mu.Lock()
		e.embeds = e.embeds[1:]
		e.mu.Unlock()
		close(w.done)
	}
}

// freeSlot is the least recently used slot no job holds, or -1.
func (e *Engine) freeSlot() int {
	best := -1
	for s := range e.slots {
		if !e.slots[s].busy && (best < 0 || e.slots[s].lastUsed.Before(e.slots[best].lastUsed)) {
			best = s
		}
	}
	return best
}

// embedOne runs ids through the model on slot s and pools the hidden
// states. The slot is left empty.
func (e *Engine) embedOne(s int, ids []int32) ([]float32, error) {
	cache := e.m.KV
	sl := &e.slots[s]
	sl.tokens = sl.tokens[:0]
	defer func() { _ = cache.Truncate(s, 0) }()
	if err := cache.Truncate(s, 0); err != nil {
		return nil, err
	}
	dim := e.m.Cfg.Dim
	pool := e.m.Cfg.Pooling
	hidden := make([]float32, e.m.Batch()*dim)
	sum := make([]float64, dim)
	for i := 0; i < len(ids); i += e.m.Batch() {
		chunk := ids[i:min(i+e.m.Batch(), len(ids))]
		_, err := e.m.Forward(s, chunk, model.Hidden, hidden)
		if errors.Is(err, kv.ErrFull) && e.evictIdle() {
			_, err = e.m.Forward(s, chunk, model.Hidden, hidden)
		}
		if err != nil {
			return nil, err
		}
		switch {
		case pool == model.PoolMean:
			for r := range chunk {
				for d, x := range hidden[r*dim : (r+1)*dim] {
					sum[d] += float64(x)
				}
			}
		case pool == model.PoolCLS && i == 0:
			for d, x := range hidden[:dim] {
				sum[d] = float64(x)
			}
		case pool == model.PoolLast && i+len(chunk) == len(ids):
			last := len(chunk) - 1
			for d, x := range hidden[last*dim : (last+1)*dim] {
				sum[d] = float64(x)
			}
		}
	}
	if pool == model.PoolMean {
		for d := range sum {
			sum[d] /= float64(len(ids))
		}
	}
	vec := make([]float32, dim)
	for d, x := range sum {
		vec[d] = float32(x)
	}
	return vec, nil
}

// normalize scales v to unit L2 norm (a zero vector stays zero).
func normalize(v []float32) {
	n := 0.0
	for _, x := range v {
		n += float64(x) * float64(x)
	}
	if n == 0 {
		return
	}
	inv := 1 / math.Sqrt(n)
	for i, x := range v {
		v[i] = float32(float64(x) * inv)
	}
}

// failEmbeds ends every waiting embedding request with err (shutdown).
func (e *Engine) failEmbeds(err error) {
	e.mu.Lock()
	ws := e.embeds
	e.embeds = nil
	e.mu.Unlock()
	for _, w := range ws {
		w.err = err
		close(w.done)
	}
}
