package model

import (
	"fmt"

	"github.com/wgllm/wgllm/ops"
)

// SampleWindow is the most recent tokens per sequence that the GPU
// sampler's penalties see (llama.cpp's default penalty window).
const SampleWindow = 64

// gpuSampling is what StepSampled hands the step's head: the parameters
// in the caller's span order, and buffers kept for the next steps.
type gpuSampling struct {
	params []ops.SampleParams // this step's, caller's order
	rows   []ops.SampleParams // scratch: in result-row order
	packed []byte
	words  ops.Tensor // u32 [batch, SampleWords]
	window ops.Tensor // u32 [Seqs, SampleWindow]: each sequence slot's penalty window
}

// samplingBuffers allocates the GPU sampler's buffers on first use.
func (m *Model) samplingBuffers() (*gpuSampling, error) {
	if m.sampling != nil {
		return m.sampling, nil
	}
	s := &gpuSampling{packed: make([]byte, 4*ops.SampleWords*m.batch), rows: make([]ops.SampleParams, 0, m.batch)}
	var err error
	if s.words, err = ops.New(m.ctx, "sample_params", ops.U32, m.batch, ops.SampleWords); err != nil {
		return nil, err
	}
	m.buffers = append(m.buffers, s.words)
	if s.window, err = ops.New(m.ctx, "sample_window", ops.U32, m.KV.Config().Seqs, SampleWindow); err != nil {
		return nil, err
	}
	m.buffers = append(m.buffers, s.window)
	m.scratchBytes += s.words.Bytes() + s.window.Bytes()
	m.sampling = s
	return s, nil
}

// SetSampleWindow writes tokens at slots [at, at+len(tokens)) of a
// sequence's penalty window on the GPU (the caller keeps the ring: which
// slots hold the last PenaltyLastN tokens, and where the next goes).
func (m *Model) SetSampleWindow(seq, at int, tokens []int32) error {
	if seq < 0 || seq >= m.KV.Config().Seqs || at < 0 || at+len(tokens) > SampleWindow {
		return fmt.Errorf("model: sample window slots [%d, %d) of sequence %d (%d slots, %d sequences)",
			at, at+len(tokens), seq, SampleWindow, m.KV.Config().Seqs)
	}
	s, err := m.samplingBuffers()
	if err != nil {
		return err
	}
	ids := make([]uint32, len(tokens))
	for i, t := range tokens {
		if t < 0 || int(t) >= m.Cfg.Vocab {
			return fmt.Errorf("model: token id %d outside the vocabulary of %d", t, m.Cfg.Vocab)
		}
		ids[i] = uint32(t)
	}
	return s.window.View(seq*SampleWindow+at, len(ids)).WriteUint32(ids)
}

// StepSampled is Step whose result is each span's next token drawn on the
// GPU (ops.Sample) under params[i]: only the token ids come back. Each
// span's WindowRow is its sequence; WindowLen and WindowSlot index that
// sequence's window (SetSampleWindow), where the drawn token is written.
// A span with a NaN or +Inf logit, or only -Inf ones, gets -1.
func (m *Model) StepSampled(spans []Span, params []ops.SampleParams, next []int32) error {
	if len(params) != len(spans) {
		return fmt.Errorf("model: %d sampling parameters for %d spans", len(params), len(spans))
	}
	s, err := m.samplingBuffers()
	if err != nil {
		return err
	}
	for i := range params {
		if err := ops.SampleSupported(params[i], m.Cfg.Vocab, SampleWindow); err != nil {
			return fmt.Errorf("model: span %d: %w", i, err)
		}
		params[i].WindowRow = spans[i].Seq
	}
	s.params = params
	defer func() { s.params = nil }()
	return m.Step(spans, NextGreedy, nil, next)
}

// sampleHead records the draw of StepSampled's tokens into p.nextIDs from
// p.result, the rows in p.outRows' order.
func (p *pass) sampleHead() error {
	s := p.m.sampling
	s.rows = s.rows[:0]
	for _, r := range p.outRows {
		s.rows = append(s.rows, s.params[p.runs[r.run].caller])
	}
	n := len(s.rows)
	if err := ops.PackSampleParams(s.packed, s.rows, p.m.Cfg.Vocab, s.window.Shape[0], SampleWindow); err != nil {
		return err
	}
	if err := s.words.Buf.Write(uint64(4*s.words.Off), s.packed[:4*ops.SampleWords*n]); err != nil {
		return err
	}
	return ops.Sample(p.enc, p.nextIDs, p.result, s.words.View(0, n, ops.SampleWords), s.window)
}
