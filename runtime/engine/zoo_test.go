package engine

import (
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/model"
)

// zooRef is what the zoo tests read of a refs/<model>.json: llama.cpp's
// outputs for one random-weight model (see shared/models/zoo/README.md).
type zooRef struct {
	Greedy []struct {
		Prompt       string  `json:"prompt"`
		PromptTokens []int32 `json:"prompt_tokens"`
		Tokens       []int32 `json:"zoo_logits_greedy_tokens"`
	} `json:"greedy"`
	Perplexity struct {
		LnPPL float64 `json:"ln_ppl"`
	} `json:"perplexity"`
	TopLogits struct {
		Tokens    []int32 `json:"tokens"`
		Positions []struct {
			Top [][2]float64 `json:"top"`
		} `json:"positions"`
	} `json:"top_logits"`
}

// zooTolerance is the largest difference allowed between a top-10 logit
// of ours and llama.cpp's. Both compute in f32 with f32 KV; llama.cpp's
// own summation-order noise is at most 2e-4 on these models (README "noise
// floor"), and our tiled-matmul prefill sums in another order, so 5e-3
// leaves a margin while staying 400× below the smallest architectural
// change (2.0). Gemma's references use llama.cpp's f16 GELU table, which
// moves logits by up to 0.077 from our exact GELU (runtime/model
// TestGemmaZooDifferenceIsTheGELUTable shows the table accounts for it),
// still 25× below gemma's smallest architectural change (2.01).
func zooTolerance(name string) float64 {
	switch name {
	case "gemma2", "gemma3":
		return 0.08
	}
	return 5e-3
}

// TestZoo runs each architecture of shared/models/zoo and compares with
// llama.cpp: greedy continuations of 4 prompts (at least 3 equal, as the
// issue asks; all 4 are expected), ln PPL of kjv-eval at context 128
// within 0.01, and the top-10 logits of a 96-token sequence in one batch
// within zooTolerance, top-1 equal at every position.
func TestZoo(t *testing.T) {
	text, err := os.ReadFile(sharedfiles.File(t, "testdata/eval/kjv-eval.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"llama3-gqa", "llama-mqa", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "glm4", "chatglm",
		"qwen3moe", "qwen2moe", "llama-moe", "gpt-oss-f32", "gpt-oss-mxfp4"} {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(sharedfiles.File(t, "models/zoo/refs/"+zooRefOf(name)+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var ref zooRef
			if err := json.Unmarshal(raw, &ref); err != nil {
				t.Fatal(err)
			}
			g := open(t, "zoo/models/"+name+".gguf", model.Options{KVType: ops.F32, CtxLen: 256, Batch: 128})
			m := g.M

			// Greedy: token ids, one decode step at a time after the prompt.
			same := 0
			for _, gr := range ref.Greedy {
				seq, err := m.KV.Acquire()
				if err != nil {
					t.Fatal(err)
				}
				next, err := m.Forward(seq, gr.PromptTokens, model.NextGreedy, nil)
				if err != nil {
					t.Fatal(err)
				}
				var got []int32
				for len(got) < len(gr.Tokens) {
					got = append(got, next)
					if next, err = m.Forward(seq, []int32{next}, model.NextGreedy, nil); err != nil {
						t.Fatal(err)
					}
				}
				m.KV.Release(seq)
				if equalTokens(got, gr.Tokens) {
					same++
				} else {
					t.Logf("%q: got %v\nwant %v", gr.Prompt, got, gr.Tokens)
				}
			}
			if same < 3 {
				t.Errorf("greedy: %d of %d prompts match llama.cpp (want at least 3)", same, len(ref.Greedy))
			}

			// Top-10 logits at each of 96 positions, one batch.
			worst, top1 := zooTopLogits(t, m, &ref)
			tol := zooTolerance(name)
			t.Logf("top-10 logits: max |Δ| %.2g (tolerance %.2g), top-1 equal at %d/%d positions", worst, tol, top1, len(ref.TopLogits.Positions))
			if worst > tol || math.IsNaN(worst) {
				t.Errorf("top-10 logits differ from llama.cpp's by up to %.3g (tolerance %.3g)", worst, tol)
			}
			if top1 != len(ref.TopLogits.Positions) {
				t.Errorf("top-1 differs at %d positions", len(ref.TopLogits.Positions)-top1)
			}

			// Perplexity as llama-perplexity -c 128 computes it.
			res, err := g.Perplexity(string(text), 128, nil)
			if err != nil {
				t.Fatal(err)
			}
			ln := math.Log(res.PPL)
			t.Logf("ln PPL %.5f, llama.cpp %.5f", ln, ref.Perplexity.LnPPL)
			if math.Abs(ln-ref.Perplexity.LnPPL) > 0.01 {
				t.Errorf("ln PPL %.5f, llama.cpp %.5f (limit 0.01)", ln, ref.Perplexity.LnPPL)
			}
		})
	}
}

func equalTokens(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// zooRefOf is the references a zoo model is compared with: its own, except
// gpt-oss-mxfp4, which holds exactly gpt-oss-f32's values (the zoo README:
// llama-quantize reproduces its experts bit for bit from the F32 file) and
// which wgllm computes exactly as it does the F32 file (f32 activations,
// the blocks decoded bit-exact). llama.cpp's own MXFP4 references differ
// from its F32 ones (top-1 agreement 0.95, top-10 logits by up to 9.6)
// because its CPU MXFP4 kernel rounds the activations to Q8_0; so wgllm's
// MXFP4 result is held to the F32 references at the F32 tolerance, and
// TestZooMXFP4AgainstLlamaCppMXFP4 compares it with the MXFP4 references
// loosely.
func zooRefOf(name string) string {
	if name == "gpt-oss-mxfp4" {
		return "gpt-oss-f32"
	}
	return name
}

// zooTopLogits runs the 96-token sequence in batches and compares each
// position's logits with llama.cpp's top 10: the largest difference and the
// positions whose top-1 is llama.cpp's.
func zooTopLogits(t *testing.T, m *model.Model, ref *zooRef) (worst float64, top1 int) {
	t.Helper()
	vocab := m.Cfg.Vocab
	toks := ref.TopLogits.Tokens
	seq, err := m.KV.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer m.KV.Release(seq)
	logits := make([]float32, len(toks)*vocab)
	for s := 0; s < len(toks); s += m.Batch() {
		e := min(s+m.Batch(), len(toks))
		if _, err := m.Forward(seq, toks[s:e], model.AllLogits, logits[s*vocab:]); err != nil {
			t.Fatal(err)
		}
	}
	for p, pos := range ref.TopLogits.Positions {
		row := logits[p*vocab : (p+1)*vocab]
		for _, pair := range pos.Top {
			worst = math.Max(worst, math.Abs(float64(row[int(pair[0])])-pair[1]))
		}
		if best, err := argmax(row); err == nil && int(best) == int(pos.Top[0][0]) {
			top1++
		}
	}
	return worst, top1
}

// TestZooMXFP4AgainstLlamaCppMXFP4 compares gpt-oss-mxfp4 with llama.cpp's
// own MXFP4 references, loosely: those carry the Q8_0 rounding of the
// activations in llama.cpp's CPU MXFP4 kernel, which moves its output from
// the F32 file's by top-1 agreement 0.95, top-10 logits by up to 9.6 and
// ln PPL by 0.104 (zoo README). wgllm computes the MXFP4 file exactly as the
// F32 one (TestZoo), so it must sit that far from the MXFP4 references and
// no farther: top-1 equal at ≥ 90% of positions, ln PPL within 0.15.
func TestZooMXFP4AgainstLlamaCppMXFP4(t *testing.T) {
	raw, err := os.ReadFile(sharedfiles.File(t, "models/zoo/refs/gpt-oss-mxfp4.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref zooRef
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	g := open(t, "zoo/models/gpt-oss-mxfp4.gguf", model.Options{KVType: ops.F32, CtxLen: 256, Batch: 128})
	worst, top1 := zooTopLogits(t, g.M, &ref)
	n := len(ref.TopLogits.Positions)
	text, err := os.ReadFile(sharedfiles.File(t, "testdata/eval/kjv-eval.txt"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := g.Perplexity(string(text), 128, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln := math.Log(res.PPL)
	t.Logf("against llama.cpp's MXFP4 references: top-1 equal at %d/%d, top-10 logits max |Δ| %.3g, ln PPL %.5f vs %.5f",
		top1, n, worst, ln, ref.Perplexity.LnPPL)
	if float64(top1) < 0.9*float64(n) {
		t.Errorf("top-1 equal at %d/%d positions (want at least 90%%)", top1, n)
	}
	if math.Abs(ln-ref.Perplexity.LnPPL) > 0.15 {
		t.Errorf("ln PPL %.5f, llama.cpp's MXFP4 %.5f (limit 0.15)", ln, ref.Perplexity.LnPPL)
	}
}
