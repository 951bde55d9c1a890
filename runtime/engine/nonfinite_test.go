package engine

import (
	"encoding/binary"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/sample"
)

// poisonedStories writes stories260K with the embedding rows of tokens
// set to NaN: a sequence that feeds one of them gets NaN logits from then
// on; other sequences are untouched.
func poisonedStories(t *testing.T, tokens ...int32) string {
	t.Helper()
	f, err := gguf.Open(sharedfiles.File(t, "models/stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	meta := make([]gguf.KV, 0, len(f.Keys))
	for _, k := range f.Keys {
		meta = append(meta, gguf.KV{Key: k, Value: f.Metadata[k]})
	}
	var ts []gguf.TensorToWrite
	for _, ti := range f.Tensors {
		data, err := f.ReadTensor(ti)
		if err != nil {
			t.Fatal(err)
		}
		if ti.Name == "token_embd.weight" {
			if ti.Type != gguf.F32 {
				t.Fatalf("token_embd is %s, want F32", ti.Type)
			}
			dim := int(ti.Dims[0])
			for _, tok := range tokens {
				for c := range dim {
					binary.LittleEndian.PutUint32(data[4*(int(tok)*dim+c):], math.Float32bits(float32(math.NaN())))
				}
			}
		}
		ts = append(ts, gguf.TensorToWrite{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: data})
	}
	path := filepath.Join(t.TempDir(), "poisoned.gguf")
	if err := gguf.WriteFile(path, meta, ts); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestNonFiniteLogitsEndTheRequest: NaN logits gave an error when sampling
// but greedy decoding (the GPU argmax returned an index for them) ended
// with text or nothing and no error. Now every path fails the request
// with ops.ErrNonFinite: greedy generation (the CLI's run), the engine's
// greedy prefill, a greedy sequence in a batched greedy step (the other
// sequence of the batch goes on to its exact clean text), a greedy
// sequence in a batch with sampled ones (CPU argmax), and sampling.
func TestNonFiniteLogitsEndTheRequest(t *testing.T) {
	opt := model.Options{CtxLen: 128, Seqs: 2, KVType: ops.F16, Batch: 64}
	clean := open(t, "stories260K.gguf", opt)
	const promptA, promptB, n = "Once upon a time", "The dog ran", 24
	textA, _ := generate(t, clean, promptA, n)
	textB, _ := generate(t, clean, promptB, n)
	idsA := clean.Tok.Encode(promptA+textA, true)
	idsB := clean.Tok.Encode(textB, false)
	// A token B generates (after its first few) that A never sees, and
	// that ends the tokens of B's prompt with its text up to that token
	// (a prompt whose last token is poisoned: prefill's own row).
	poison, prefix := int32(-1), ""
	for k := 3; k < len(idsB) && poison < 0; k++ {
		if slices.Contains(idsA, idsB[k]) {
			continue
		}
		p := promptB + clean.Tok.Decode(idsB[:k+1])
		if ids := clean.Tok.Encode(p, true); ids[len(ids)-1] == idsB[k] {
			poison, prefix = idsB[k], p
		}
	}
	if poison < 0 {
		t.Fatalf("no token of B's continuation %q fits (A's text %q)", textB, textA)
	}
	g := openPath(t, poisonedStories(t, poison), opt)

	// Single-sequence greedy generation (wgllm run --temp 0).
	var streamed string
	_, err := g.Generate(Request{Prompt: promptB, MaxTokens: n, Sampling: sample.Greedy()}, func(s string) error {
		streamed += s
		return nil
	})
	if !errors.Is(err, ops.ErrNonFinite) {
		t.Errorf("greedy generation: %v (text %q), want ErrNonFinite", err, streamed)
	}
	// Prefill of a prompt holding the token.
	if _, err := g.Generate(Request{Prompt: prefix, MaxTokens: 2, Sampling: sample.Greedy()}, func(string) error { return nil }); !errors.Is(err, ops.ErrNonFinite) {
		t.Errorf("greedy prefill: %v, want ErrNonFinite", err)
	}

	e, err := NewEngine(g.M, g.Tok, Options{MaxBatch: 2, DefaultMaxTokens: n})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	run := func(sampling sample.Params, prompts ...string) []Event {
		t.Helper()
		cs := make([]*collector, len(prompts))
		for i, p := range prompts {
			cs[i] = newCollector()
			if _, err := e.Submit(Job{Prompt: p, MaxTokens: n, Sampling: sampling}, cs[i].emit); err != nil {
				t.Fatal(err)
			}
		}
		evs := make([]Event, len(prompts))
		for i, c := range cs {
			var text string
			text, evs[i] = c.wait(t)
			evs[i].Text = text
		}
		return evs
	}
	// Both greedy, decoded together: B fails, A is untouched.
	evs := run(sample.Greedy(), promptA, promptB)
	if evs[0].Err != nil || evs[0].Text != textA {
		t.Errorf("the clean sequence of the batch: %q, %v; want %q", evs[0].Text, evs[0].Err, textA)
	}
	if !errors.Is(evs[1].Err, ops.ErrNonFinite) {
		t.Errorf("the poisoned sequence of a greedy batch: %q, %v; want ErrNonFinite", evs[1].Text, evs[1].Err)
	}
	// A greedy sequence beside a sampled one (logits read back, CPU argmax).
	cs := []*collector{newCollector(), newCollector()}
	sampled := sample.DefaultParams()
	sampled.Seed = 7
	if _, err := e.Submit(Job{Prompt: promptB, MaxTokens: n, Sampling: sample.Greedy()}, cs[0].emit); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Submit(Job{Prompt: promptA, MaxTokens: n, Sampling: sampled}, cs[1].emit); err != nil {
		t.Fatal(err)
	}
	if _, ev := cs[0].wait(t); !errors.Is(ev.Err, ops.ErrNonFinite) {
		t.Errorf("greedy beside a sampled sequence: %v, want ErrNonFinite", ev.Err)
	}
	cs[1].wait(t)
	// Sampling a poisoned prompt.
	if evs := run(sampled, promptB+textB); evs[0].Err == nil {
		t.Errorf("sampled: %q without an error", evs[0].Text)
	}
	if m := e.Metrics(); m.ActiveSequences != 0 {
		t.Errorf("after the failures: %+v", m)
	}
}
