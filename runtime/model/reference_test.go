package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/half"
)

// floatDequant handles the plain float types; quantised types come from
// runtime/quant in the tests that need them.
func floatDequant(t gguf.GGMLType, data []byte, n int) ([]float32, error) {
	out := make([]float32, n)
	switch t {
	case gguf.F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
	case gguf.F16:
		for i := range out {
			out[i] = half.ToFloat32(binary.LittleEndian.Uint16(data[2*i:]))
		}
	default:
		return nil, fmt.Errorf("type %s not handled here", t)
	}
	return out, nil
}

func sharedModel(t *testing.T, name string) string {
	t.Helper()
	return sharedfiles.File(t, "models/"+name)
}

// pieces detokenises SentencePiece ids plainly (▁ is a space, <0xNN> a byte).
func pieces(f *gguf.File, ids []int) string {
	toks, _ := f.Strings("tokenizer.ggml.tokens")
	var b []byte
	for _, id := range ids {
		s := toks[id]
		if strings.HasPrefix(s, "<0x") && len(s) == 6 {
			v, _ := strconv.ParseUint(s[3:5], 16, 8)
			b = append(b, byte(v))
			continue
		}
		b = append(b, strings.ReplaceAll(s, "▁", " ")...)
	}
	return string(b)
}

func greedy(t *testing.T, r *Reference, prompt []int, n int) []int {
	t.Helper()
	var logits []float64
	var err error
	for _, tok := range prompt {
		if logits, err = r.Forward(tok); err != nil {
			t.Fatal(err)
		}
	}
	var out []int
	for len(out) < n {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		out = append(out, best)
		if logits, err = r.Forward(best); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestReferenceStories260K(t *testing.T) {
	f, err := gguf.Open(sharedModel(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := NewReference(f, floatDequant)
	if err != nil {
		t.Fatal(err)
	}
	want := "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high."
	got := pieces(f, greedy(t, r, []int{1}, 70))
	if !strings.HasPrefix(strings.TrimPrefix(got, " "), want) {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

func TestReferenceKJV(t *testing.T) {
	if testing.Short() {
		t.Skip("slow float64 reference")
	}
	f, err := gguf.Open(sharedModel(t, "kjv-30m-f16.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := NewReference(f, floatDequant)
	if err != nil {
		t.Fatal(err)
	}
	// MODELS.md calls this 40 tokens; the text as given takes 41 here (the
	// final newline is token 41), so generate 41 and require it exactly.
	want := " it; and it was made in the end of the doctors.\nAnd the LORD God said, Who shall go out with us? and when he said, Ye shall be holy.\n"
	got := pieces(f, greedy(t, r, []int{1, 1050, 261, 2051, 391, 3372}, 41))
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

// The Hidden step gives every position's final-normed hidden state, as the
// float64 reference computes it, on the kjv-30m f16 model.
func TestHiddenMatchesReference(t *testing.T) {
	ctx := gputest.Ctx(t)
	f, err := gguf.Open(sharedModel(t, "kjv-30m-f16.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ref, err := NewReference(f, floatDequant)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(ctx, f, Options{CtxLen: 64, Batch: 16, Seqs: 1, KVType: ops.F32})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	prompt := []int32{1, 450, 23, 1001, 7, 7, 3000, 88, 12, 4095, 2}
	dim := m.Cfg.Dim
	out := make([]float32, (len(prompt)+1)*dim)
	for i := range out {
		out[i] = float32(math.NaN())
	}
	seq, _ := m.KV.Acquire()
	if _, err := m.Forward(seq, prompt, Hidden, out); err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for i, tok := range prompt {
		want, err := ref.Hidden(int(tok))
		if err != nil {
			t.Fatal(err)
		}
		e := relErr(out[i*dim:(i+1)*dim], want)
		if e > 1e-4 || math.IsNaN(e) {
			t.Fatalf("position %d: relative error %.3g > 1e-4", i, e)
		}
		worst = max(worst, e)
	}
	for i := len(prompt) * dim; i < len(out); i++ {
		if !math.IsNaN(float64(out[i])) {
			t.Fatalf("out[%d] past n*dim was written", i)
		}
	}
	if got := m.KV.Len(seq); got != len(prompt) {
		t.Errorf("the cache holds %d positions after a Hidden forward of %d", got, len(prompt))
	}
	t.Logf("worst relative error %.3g over %d positions", worst, len(prompt))
}
