package engine

import (
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/sample"
	"github.com/wgllm/wgllm/runtime/tokenizer"
)

func open(t testing.TB, name string, opt model.Options) *Generator {
	t.Helper()
	return openPath(t, sharedfiles.File(t, "models/"+name), opt)
}

func openPath(t testing.TB, path string, opt model.Options) *Generator {
	t.Helper()
	ctx := gputest.Ctx(t)
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(ctx, f, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	g, err := New(m, tok)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func generate(t *testing.T, g *Generator, prompt string, n int) (string, Stats) {
	t.Helper()
	var b strings.Builder
	st, err := g.Generate(Request{Prompt: prompt, MaxTokens: n, Sampling: sample.Greedy()}, func(s string) error {
		b.WriteString(s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String(), st
}

// The references in shared/models/MODELS.md were computed by others with
// f32 arithmetic (llama2.c for stories260K; the kjv model's trainer).
func TestStories260KReference(t *testing.T) {
	g := open(t, "stories260K.gguf", model.Options{KVType: ops.F32, CtxLen: 256})
	got, _ := generate(t, g, "", 200)
	want := "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high."
	if !strings.HasPrefix(strings.TrimPrefix(got, " "), want) {
		t.Errorf("from BOS:\ngot  %q\nwant %q…", got, want)
	}
	got, _ = generate(t, g, "Tom had a little", 40)
	if want := " boy named Tim. He loved to play with his toys. One day, he saw a big box. He wanted to play with it. He wanted to"; got != want {
		t.Errorf("Tom had a little:\ngot  %q\nwant %q", got, want)
	}
}

func TestKJVReferences(t *testing.T) {
	for _, kvType := range []ops.DType{ops.F32, ops.F16} {
		t.Run("kv_"+kvType.String(), func(t *testing.T) {
			g := open(t, "kjv-30m-f16.gguf", model.Options{KVType: kvType})
			// MODELS.md calls these 40 tokens; the first text as given takes 41
			// here (its final newline is token 41), so compare 41 tokens' text.
			cases := []struct{ prompt, want string }{
				{"In the beginning God created", " it; and it was made in the end of the doctors.\nAnd the LORD God said, Who shall go out with us? and when he said, Ye shall be holy.\n"},
				{"Verily, verily, I say unto you,", " that one of you shall betray me.\nThen the disciples looked one on another, doubting of whom he spake.\nNow there was leaning on Jesus' bosom one of his"},
			}
			for _, c := range cases {
				got, _ := generate(t, g, c.prompt, 41)
				if !strings.HasPrefix(c.want, got) && !strings.HasPrefix(got, c.want) {
					t.Errorf("%q:\ngot  %q\nwant %q", c.prompt, got, c.want)
				}
				if len(got) < len(c.want) {
					t.Errorf("%q: generation stopped early: %q", c.prompt, got)
				}
			}
		})
	}
}

func TestKJVPerplexity(t *testing.T) {
	text, err := os.ReadFile(sharedfiles.File(t, "testdata/eval/kjv-eval.txt"))
	if err != nil {
		t.Fatal(err)
	}
	refs, err := os.ReadFile(sharedfiles.File(t, "testdata/eval/ppl-reference.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(refs)), "\n") {
		fields := strings.Fields(line) // kjv-30m-f16.gguf 5.2420 +/- 1.03448
		if len(fields) < 2 {
			continue
		}
		want, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			t.Fatalf("ppl-reference line %q: %v", line, err)
		}
		t.Run(fields[0], func(t *testing.T) {
			g := open(t, fields[0], model.Options{KVType: ops.F16, CtxLen: 128, Batch: 128})
			res, err := g.Perplexity(string(text), 128, nil)
			if err != nil {
				t.Fatal(err)
			}
			rel := math.Abs(res.PPL-want) / want
			t.Logf("%s: PPL = %.4f +/- %.5f over %d chunks (reference %.4f, %.2f%% off)", fields[0], res.PPL, res.Err, res.Chunks, want, 100*rel)
			if rel > 0.01 {
				t.Errorf("perplexity %.4f is %.2f%% from the reference %.4f (limit 1%%)", res.PPL, 100*rel, want)
			}
		})
	}
}

// A q8_0 KV cache (ggml's Q8_0 blocks, 17/32 of f16's bytes) costs
// kjv-30m less than 0.5% of perplexity against an f16 cache, measured the
// same way as TestKJVPerplexity (on lavapipe 0.12%: 5.2476 against 5.2415;
// the q8_0 weights, not run here to spare the time, gave 0.18%).
func TestKJVPerplexityQ8KVCache(t *testing.T) {
	text, err := os.ReadFile(sharedfiles.File(t, "testdata/eval/kjv-eval.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kjv-30m-f16.gguf"} {
		t.Run(name, func(t *testing.T) {
			ppl := map[ops.DType]float64{}
			for _, kt := range []ops.DType{ops.F16, ops.Q8_0} {
				g := open(t, name, model.Options{KVType: kt, CtxLen: 128, Batch: 128})
				res, err := g.Perplexity(string(text), 128, nil)
				if err != nil {
					t.Fatal(err)
				}
				ppl[kt] = res.PPL
				t.Logf("%s, %s KV cache (%d bytes per token): PPL = %.4f +/- %.5f over %d chunks",
					name, kt, g.M.KV.Config().TokenBytes(), res.PPL, res.Err, res.Chunks)
			}
			rel := math.Abs(ppl[ops.Q8_0]-ppl[ops.F16]) / ppl[ops.F16]
			t.Logf("q8_0 cache: %.3f%% from the f16 cache", 100*rel)
			if rel > 0.005 {
				t.Errorf("perplexity with a q8_0 cache %.4f is %.2f%% from the f16 cache's %.4f (limit 0.5%%)", ppl[ops.Q8_0], 100*rel, ppl[ops.F16])
			}
		})
	}
}

func TestPromptTooLong(t *testing.T) {
	g := open(t, "stories260K.gguf", model.Options{CtxLen: 16})
	_, err := g.Generate(Request{Prompt: strings.Repeat("Once upon a time ", 20), MaxTokens: 4, Sampling: sample.Greedy()}, func(string) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "prompt too long") {
		t.Fatalf("oversized prompt: %v", err)
	}
	// The model still works afterwards.
	if got, _ := generate(t, g, "Tom had", 3); got == "" {
		t.Error("no text after a rejected prompt")
	}
}

func TestSampledGenerationIsSeeded(t *testing.T) {
	g := open(t, "stories260K.gguf", model.Options{CtxLen: 128})
	run := func(seed uint64) string {
		p := sample.DefaultParams()
		p.Seed = seed
		var b strings.Builder
		if _, err := g.Generate(Request{Prompt: "Tom had a little", MaxTokens: 30, Sampling: p}, func(s string) error {
			b.WriteString(s)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	a, b, c := run(1), run(1), run(2)
	if a != b {
		t.Errorf("same seed, different text:\n%q\n%q", a, b)
	}
	if a == c {
		t.Errorf("seeds 1 and 2 gave the same 30 tokens: %q", a)
	}
}

// TestGeneratorCancel: Cancel from the emit callback (any goroutine) ends
// the generation after the current step, finish reason "cancelled", and
// the generator serves the next call.
func TestGeneratorCancel(t *testing.T) {
	g := open(t, "stories260K.gguf", model.Options{CtxLen: 128})
	pieces := 0
	st, err := g.Generate(Request{Prompt: "Once upon a time", MaxTokens: 100, Sampling: sample.Greedy()}, func(string) error {
		pieces++
		if pieces == 2 {
			go g.Cancel()
		}
		return nil
	})
	if err != nil || st.FinishReason != "cancelled" || st.CompletionTokens >= 100 {
		t.Fatalf("cancelled generation: %+v, %v", st, err)
	}
	if got, _ := generate(t, g, "Tom had", 3); got == "" {
		t.Error("no text after a cancelled generation")
	}
}
