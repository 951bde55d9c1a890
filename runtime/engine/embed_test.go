package engine

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/sample"
)

// tokenStates runs ids through the model one token at a time (the
// decode path) on a slot of its own: every position's final hidden state,
// widened to float64. runtime/model's TestHiddenMatchesReference ties
// these to the float64 reference forward pass.
func tokenStates(t *testing.T, m *model.Model, ids []int32) [][]float64 {
	t.Helper()
	s, err := m.KV.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer m.KV.Release(s)
	row := make([]float32, m.Cfg.Dim)
	var states [][]float64
	for _, id := range ids {
		if _, err := m.Forward(s, []int32{id}, model.Hidden, row); err != nil {
			t.Fatal(err)
		}
		h := make([]float64, len(row))
		for d, x := range row {
			h[d] = float64(x)
		}
		states = append(states, h)
	}
	return states
}

// pooled pools and optionally normalises reference states in float64.
func pooled(states [][]float64, pool model.Pooling, norm bool) []float64 {
	out := make([]float64, len(states[0]))
	switch pool {
	case model.PoolCLS:
		copy(out, states[0])
	case model.PoolLast:
		copy(out, states[len(states)-1])
	case model.PoolMean:
		for _, h := range states {
			for d := range out {
				out[d] += h[d] / float64(len(states))
			}
		}
	}
	if norm {
		n := 0.0
		for _, x := range out {
			n += x * x
		}
		for d := range out {
			out[d] /= math.Sqrt(n)
		}
	}
	return out
}

func relErr64(got []float32, want []float64) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - want[i]
		num += d * d
		den += want[i] * want[i]
	}
	return math.Sqrt(num / den)
}

// Embeddings of the kjv-30m f16 model, pooled last (its file has no
// pooling_type), mean and cls, normalised or not, in float64 from every
// position's hidden state computed token by token; the engine runs inputs
// longer than a batch in chunks through the prefill path.
func TestEmbeddingsMatchReference(t *testing.T) {
	g := open(t, "kjv-30m-f16.gguf", model.Options{CtxLen: 64, Seqs: 2, KVType: ops.F32, Batch: 16})
	if g.M.Cfg.Pooling != model.PoolLast {
		t.Fatalf("kjv-30m has no pooling_type: want last, got %v", g.M.Cfg.Pooling)
	}
	long := "And God said, Let there be light: and there was light. And God saw the light, that it was good: and God divided the light from the darkness."
	inputs := []EmbedInput{{Text: "In the beginning"}, {Text: long}, {Tokens: []int32{1, 400, 401, 7}}}
	ctx := context.Background()
	states := make([][][]float64, len(inputs))
	total := 0
	for i, in := range inputs {
		ids := in.Tokens
		if ids == nil {
			ids = g.Tok.Encode(in.Text, g.Tok.AddBOS())
		}
		if i == 1 && len(ids) <= 16 {
			t.Fatalf("the long input has %d tokens: not more than a batch", len(ids))
		}
		total += len(ids)
		states[i] = tokenStates(t, g.M, ids)
	}
	e, err := NewEngine(g.M, g.Tok, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	for _, c := range []struct {
		pool model.Pooling
		norm bool
	}{{model.PoolLast, true}, {model.PoolLast, false}, {model.PoolMean, true}, {model.PoolCLS, true}} {
		pool, norm := c.pool, c.norm
		g.M.Cfg.Pooling = pool
		res, err := e.Embed(ctx, EmbedRequest{Inputs: inputs, Normalize: norm})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Vectors) != len(inputs) {
			t.Fatalf("%d vectors for %d inputs", len(res.Vectors), len(inputs))
		}
		for i := range inputs {
			want := pooled(states[i], pool, norm)
			if e := relErr64(res.Vectors[i], want); e > 1e-4 || math.IsNaN(e) {
				t.Errorf("%v, normalised %v, input %d: relative error %.3g > 1e-4", pool, norm, i, e)
			}
		}
		if res.PromptTokens != total {
			t.Errorf("prompt tokens %d, want %d", res.PromptTokens, total)
		}
	}
	g.M.Cfg.Pooling = model.PoolLast

	// An input over the context fails naming it, or is cut with Truncate.
	over := make([]int32, 65)
	for i := range over {
		over[i] = 100
	}
	_, err = e.Embed(ctx, EmbedRequest{Inputs: []EmbedInput{{Text: "x"}, {Tokens: over}}})
	var ie *InputError
	if !errors.As(err, &ie) || ie.Index != 1 || !errors.Is(err, ErrPromptTooLong) || !errors.Is(err, ErrBadJob) {
		t.Fatalf("input over the context: %v", err)
	}
	res, err := e.Embed(ctx, EmbedRequest{Inputs: []EmbedInput{{Tokens: over}}, Truncate: true})
	if err != nil || res.PromptTokens != 64 {
		t.Fatalf("truncated: %v, %d tokens", err, res.PromptTokens)
	}
	for _, bad := range []EmbedRequest{{}, {Inputs: []EmbedInput{{Tokens: []int32{}}}}, {Inputs: []EmbedInput{{Tokens: []int32{1 << 20}}}}} {
		if _, err := e.Embed(ctx, bad); !errors.Is(err, ErrBadJob) {
			t.Errorf("%+v: got %v, want ErrBadJob", bad, err)
		}
	}

	// Embedding beside a running generation leaves its text alone.
	alone := newEventLog()
	if _, err := e.Submit(Job{Prompt: "In the beginning", MaxTokens: 12, Sampling: sample.Greedy()}, alone.emit); err != nil {
		t.Fatal(err)
	}
	want, _, _ := alone.wait(t)
	beside := newEventLog()
	if _, err := e.Submit(Job{Prompt: "In the beginning", MaxTokens: 12, Sampling: sample.Greedy()}, beside.emit); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Embed(ctx, EmbedRequest{Inputs: inputs[:1]}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := beside.wait(t); got != want {
		t.Errorf("with embeddings beside: %q, alone: %q", got, want)
	}
}
