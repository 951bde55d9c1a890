package model

import (
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/gguf"
)

// TestStepSampled: a step of a decode token and a prompt chunk drawn on
// the GPU gives, per span, the float64 reference chain's token over the
// logits the same step returns with LastLogits (with the Philox uniform of
// the span's seed and step, and its sequence's penalty window), and the
// drawn tokens land in their windows' slots.
func TestStepSampled(t *testing.T) {
	ctx := gputest.Ctx(t)
	f, err := gguf.Open(writeRandomModel(t, "llama", gguf.F16, 91))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := Load(ctx, f, Options{CtxLen: 32, Batch: 16, Seqs: 3, KVType: ops.F16})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	vocab := m.Cfg.Vocab
	a, _ := m.KV.Acquire()
	b, _ := m.KV.Acquire()
	if _, err := m.Forward(a, []int32{1, 17, 33, 2}, LastLogits, make([]float32, vocab)); err != nil {
		t.Fatal(err)
	}
	spans := []Span{{Seq: b, Tokens: []int32{1, 40, 41, 42, 43}}, {Seq: a, Tokens: []int32{5}}}
	windows := [][]int32{{40, 41, 41, 7}, {17, 33, 33, 2, 5}}
	params := []ops.SampleParams{
		{Temperature: 0, TopP: 1, RepeatPenalty: 1.5, FrequencyPenalty: 0.2, PresencePenalty: 0.4},
		{Temperature: 0.9, TopK: 20, TopP: 0.9, MinP: 0.02, RepeatPenalty: 1.3, PresencePenalty: 0.3, Seed: 12345, Step: 7},
	}
	for i, w := range windows {
		if err := m.SetSampleWindow(spans[i].Seq, 0, w); err != nil {
			t.Fatal(err)
		}
		params[i].WindowLen, params[i].WindowSlot = len(w), len(w)
	}
	// The same step's logits, then the cache back as it was.
	logits := make([]float32, len(spans)*vocab)
	if err := m.Step(spans, LastLogits, logits, nil); err != nil {
		t.Fatal(err)
	}
	_ = m.KV.Truncate(b, 0)
	_ = m.KV.Truncate(a, 4)
	next := make([]int32, len(spans))
	if err := m.StepSampled(spans, params, next); err != nil {
		t.Fatal(err)
	}
	win, err := m.sampling.window.ReadUint32()
	if err != nil {
		t.Fatal(err)
	}
	for i, sp := range spans {
		row := gputest.F64(logits[i*vocab : (i+1)*vocab])
		p := params[i]
		rp := ref.SampleParams{Temperature: float64(p.Temperature), TopK: p.TopK, TopP: float64(p.TopP), MinP: float64(p.MinP),
			RepeatPenalty: float64(p.RepeatPenalty), FrequencyPenalty: float64(p.FrequencyPenalty), PresencePenalty: float64(p.PresencePenalty)}
		want := ref.SampleRow(row, rp, windows[i], ref.SampleUniform(p.Seed, p.Step))
		if int(next[i]) != want {
			t.Errorf("span %d (sequence %d): GPU drew %d, the reference %d", i, sp.Seq, next[i], want)
		}
		if got := win[sp.Seq*SampleWindow+len(windows[i])]; got != uint32(next[i]) {
			t.Errorf("sequence %d: window slot %d holds %d, want the drawn %d", sp.Seq, len(windows[i]), got, next[i])
		}
	}
	if m.KV.Len(a) != 5 || m.KV.Len(b) != 5 {
		t.Errorf("cache lengths %d, %d after the sampled step", m.KV.Len(a), m.KV.Len(b))
	}
	if err := m.StepSampled(spans[:1], params, next); err == nil {
		t.Error("two parameter sets for one span were accepted")
	}
	if err := m.SetSampleWindow(a, SampleWindow-1, []int32{1, 2}); err == nil {
		t.Error("a window write past the end was accepted")
	}
	if err := m.SetSampleWindow(a, 0, []int32{int32(vocab)}); err == nil {
		t.Error("a token outside the vocabulary was written to a window")
	}
}
