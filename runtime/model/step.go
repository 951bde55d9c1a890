package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/kv"
)

// Want says what a step returns.
type Want int

const (
	// NextGreedy: the argmax token after each span's last position (a
	// u32 per span read back).
	NextGreedy Want = iota
	// LastLogits: the logits after each span's last position.
	LastLogits
	// AllLogits: the logits after every position (perplexity).
	AllLogits
	// Hidden: every position's hidden state after the final norm, before
	// the output projection ([rows, dim]; embeddings).
	Hidden
)

// Span is a run of new tokens of one sequence, appended at its next
// positions: one token of a decoding sequence, or a chunk of a prompt.
type Span struct {
	Seq    int
	Tokens []int32
}

// Forward runs tokens through the model at the sequence's next positions in
// one GPU submission, appending their keys and values to the cache. With
// NextGreedy it returns the greedy next token; with LastLogits the last
// row's logits into logits[:vocab]; with AllLogits every row's, [n*vocab];
// with Hidden every row's final hidden state, [n*dim].
func (m *Model) Forward(seq int, tokens []int32, want Want, logits []float32) (int32, error) {
	var next [1]int32
	if err := m.Step([]Span{{Seq: seq, Tokens: tokens}}, want, logits, next[:]); err != nil {
		return 0, err
	}
	return next[0], nil
}

// DecodeBatch advances several sequences by one token each in one GPU
// submission: tokens[i] is appended to seqs[i]. With NextGreedy next[i] gets
// each sequence's greedy token; with LastLogits logits gets one row of
// logits per sequence ([len(seqs)*vocab]). Each sequence's result is
// bit-identical to decoding it alone.
func (m *Model) DecodeBatch(seqs []int, tokens []int32, want Want, logits []float32, next []int32) error {
	if len(seqs) != len(tokens) {
		return fmt.Errorf("model: %d sequences, %d tokens", len(seqs), len(tokens))
	}
	if want == AllLogits {
		want = LastLogits // one row per sequence either way
	}
	spans := make([]Span, len(seqs))
	for i := range seqs {
		spans[i] = Span{Seq: seqs[i], Tokens: tokens[i : i+1]}
	}
	return m.Step(spans, want, logits, next)
}

// Step runs one GPU submission over spans of any length for any mix of
// sequences (at most one span per sequence): decode tokens and prompt
// chunks together, as a scheduler fills a step to its token budget.
// Results are in span order: NextGreedy next[i] for span i; LastLogits one
// row of logits per span; AllLogits and Hidden one row per token. A
// single-token span is computed exactly as DecodeBatch computes it, so a
// decoding sequence's tokens do not depend on what shares its step.
func (m *Model) Step(spans []Span, want Want, logits []float32, next []int32) error {
	c := m.Cfg
	if len(spans) == 0 {
		return fmt.Errorf("model: a step of no spans")
	}
	n := 0
	seen := map[int]bool{}
	for _, sp := range spans {
		if len(sp.Tokens) == 0 {
			return fmt.Errorf("model: no tokens for sequence %d", sp.Seq)
		}
		if seen[sp.Seq] {
			return fmt.Errorf("model: sequence %d appears twice in one step", sp.Seq)
		}
		seen[sp.Seq] = true
		n += len(sp.Tokens)
		for _, t := range sp.Tokens {
			if t < 0 || int(t) >= c.Vocab {
				return fmt.Errorf("model: token id %d outside the vocabulary of %d", t, c.Vocab)
			}
		}
	}
	if n > m.batch {
		return fmt.Errorf("model: step of %d tokens (1..%d per call)", n, m.batch)
	}
	if want == NextGreedy && len(next) < len(spans) {
		return fmt.Errorf("model: room for %d next tokens, %d spans", len(next), len(spans))
	}
	// Rows by kind (see newPass): single-token spans first, then short
	// chunks, then long ones, so that each kind's rows are contiguous and a
	// span's kernels depend only on its own length.
	order := make([]int, len(spans))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return spanKind(len(spans[order[a]].Tokens)) < spanKind(len(spans[order[b]].Tokens))
	})
	runs := make([]run, len(spans))
	batch := make([]kv.StepSeq, len(spans))
	row := 0
	for i, o := range order {
		sp := spans[o]
		pos, err := m.KV.Reserve(sp.Seq, len(sp.Tokens))
		if err != nil {
			for _, done := range runs[:i] {
				_ = m.KV.Truncate(done.seq, done.pos)
			}
			return err
		}
		runs[i] = run{seq: sp.Seq, row: row, n: len(sp.Tokens), pos: pos, tokens: sp.Tokens, caller: o}
		batch[i] = kv.StepSeq{Seq: sp.Seq, New: len(sp.Tokens)}
		row += len(sp.Tokens)
	}
	err := m.step.Set(m.KV, batch)
	if err == nil {
		err = m.forward(runs, want, logits, next)
	}
	if err != nil {
		for _, r := range runs { // the reserved rows hold nothing valid
			_ = m.KV.Truncate(r.seq, r.pos)
		}
	}
	return err
}

// run is a span placed in the step: rows [row, row+n) at positions
// [pos, pos+n), caller its index in the caller's spans.
type run struct {
	seq, row, n, pos, caller int
	tokens                   []int32
}

func (m *Model) forward(runs []run, want Want, logits []float32, next []int32) error {
	p, err := m.newPass(runs, want)
	if err != nil {
		return err
	}
	defer p.release()
	m.arch.Forward(p)
	if p.err != nil {
		return p.err
	}
	return p.finish(logits, next)
}

// finish submits the step and copies its results out in the caller's order.
func (p *pass) finish(logits []float32, next []int32) error {
	m, c := p.m, p.m.Cfg
	out := p.outRows
	switch p.want {
	case NextGreedy:
		if err := p.enc.CopyToHost(m.rbTok, p.nextIDs.Buf, 0, uint64(4*len(out))); err != nil {
			return err
		}
		if err := p.submit(); err != nil {
			return err
		}
		raw := make([]byte, 4*len(out))
		if err := m.rbTok.Read(raw); err != nil {
			return err
		}
		// A *ops.NonFiniteError names the callers' sequences without a token.
		ids := make([]int32, len(out))
		err := ops.ArgmaxResults(raw, ids)
		for i, r := range out {
			next[p.runs[r.run].caller] = ids[i]
		}
		var nonFinite *ops.NonFiniteError
		if errors.As(err, &nonFinite) {
			for k, i := range nonFinite.Rows {
				nonFinite.Rows[k] = p.runs[out[i].run].caller
			}
		}
		return err
	default:
		width := c.Vocab
		if p.want == Hidden {
			width = c.Dim
		}
		size := len(out) * width
		if len(logits) < size {
			return fmt.Errorf("model: output buffer of %d for %d×%d", len(logits), len(out), width)
		}
		vals := make([]float32, size)
		if uint64(4*size) <= m.rbLogSize {
			if err := p.enc.CopyToHost(m.rbLog, p.result.Buf, uint64(4*p.result.Off), uint64(4*size)); err != nil {
				return err
			}
			if err := p.submit(); err != nil {
				return err
			}
			if err := readFloats(m.rbLog, vals); err != nil {
				return err
			}
		} else {
			if err := p.submit(); err != nil {
				return err
			}
			all, err := p.result.Read()
			if err != nil {
				return err
			}
			copy(vals, all)
		}
		// Rows back in the caller's span order.
		dst := 0
		for _, ci := range p.callerOrder() {
			for i, r := range out {
				if r.run == ci {
					copy(logits[dst*width:(dst+1)*width], vals[i*width:(i+1)*width])
					dst++
				}
			}
		}
		return nil
	}
}

// callerOrder lists run indices in the caller's span order.
func (p *pass) callerOrder() []int {
	idx := make([]int, len(p.runs))
	for i, r := range p.runs {
		idx[r.caller] = i
	}
	return idx
}

func readFloats(rb *gpu.Readback, dst []float32) error {
	raw := make([]byte, 4*len(dst))
	if err := rb.Read(raw); err != nil {
		return err
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return nil
}
