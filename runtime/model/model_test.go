package model

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/quant"
)

// tinyConfig is a shape of arch small enough for lavapipe whose matrix
// rows are whole 256-element K-quant blocks. Each architecture exercises
// its optional tensors and layouts: biases (qwen2, glm4), a tied head
// (qwen3, gemma), rope_freqs (llama), fused QKV (phi3, chatglm), partial
// rotary (glm4, chatglm).
func tinyConfig(arch string) Config {
	c := Config{Arch: arch, Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64, FFN: 512, Vocab: 384, CtxLen: 64}
	biases := []string{"attn_q.bias", "attn_k.bias", "attn_v.bias"}
	switch arch {
	case "llama":
		c.With = []string{"rope_freqs.weight"}
	case "qwen2":
		c.With = biases
	case "qwen3":
		c.Without = []string{"output.weight"}
	case "gemma2", "gemma3": // a window of 8 the 15-token test passes, both layer kinds, both caps
		c.Without = []string{"output.weight"}
		c.Extra = []gguf.KV{archKV(arch, "attention.sliding_window", uint32(8)), archKV(arch, "attention.sliding_window_pattern", uint32(2)),
			archKV(arch, "attn_logit_softcapping", float32(15)), archKV(arch, "final_logit_softcapping", float32(30))}
	case "phi3":
		c.With = []string{"attn_qkv.weight"}
	case "glm4":
		c.With, c.RopeDims = biases, 32
	case "chatglm":
		c.With, c.RopeDims = []string{"attn_qkv.weight", "attn_qkv.bias"}, 32
	case "qwen3moe": // 4 experts, top 2: tied head, q/k norms
		c.Experts, c.ExpertsUsed, c.ExpertFFN = 4, 2, 256
		c.Without = []string{"output.weight"}
	case "qwen2moe": // and the shared expert with its sigmoid gate
		c.Experts, c.ExpertsUsed, c.ExpertFFN, c.SharedFFN = 4, 2, 256, 512
		c.With = biases
	case "llama-moe": // Mixtral: llama with experts
		c.Arch = "llama"
		c.Experts, c.ExpertsUsed = 4, 2
		c.FFN = 256
	case "gpt-oss": // sinks, a window of 8 the test passes, YaRN, every bias
		c.Experts, c.ExpertsUsed, c.ExpertFFN = 4, 2, 256
		c.With = append(biases, "ffn_gate_inp.bias", "ffn_gate_exps.bias", "ffn_up_exps.bias", "ffn_down_exps.bias")
		c.Extra = []gguf.KV{archKV(arch, "attention.sliding_window", uint32(8)), archKV(arch, "rope.scaling.type", "yarn"),
			archKV(arch, "rope.scaling.factor", float32(4)), archKV(arch, "rope.scaling.original_context_length", uint32(8))}
	}
	return c
}

// testArchs are the architectures of tinyConfig: every registered one, and
// llama with experts.
func testArchs() []string { return append(Supported(), "llama-moe") }

// writeRandomModel writes a GGUF model of arch with random weights; every
// matrix is stored as typ (norms and biases stay F32, as llama.cpp does).
func writeRandomModel(t *testing.T, arch string, typ gguf.GGMLType, seed int64) string {
	t.Helper()
	meta, tensors, err := RandomGGUF(tinyConfig(arch), typ, seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%s.gguf", arch, typ))
	if err := gguf.WriteFile(path, meta, tensors); err != nil {
		t.Fatal(err)
	}
	return path
}

// relErr is the relative L2 error of got against want.
func relErr(got []float32, want []float64) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - want[i]
		num += d * d
		den += want[i] * want[i]
	}
	return math.Sqrt(num / den)
}

// TestForwardMatchesReference runs every architecture with every weight
// type on the GPU and compares logits with the float64 reference forward
// pass over the same dequantised weights, two ways:
//
//   - decode path: the prompt fed one token at a time (matvec reading the
//     stored blocks exactly as the reference decodes them, so only f32
//     arithmetic separates the two): relative L2 ≤ 1e-4 for every type;
//   - prefill path: the prompt as one batch (the tiled matmul, with
//     quantised weights dequantised to f16 first, as llama.cpp's GPU
//     backends do: each weight rounds by up to 2^-11 relative), then three
//     decode steps over that cache: ≤ 1e-4 for F32/F16/BF16 weights (exact in
//     f16 or f32), ≤ 2e-3 for the block-quantised types.
func TestForwardMatchesReference(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, arch := range testArchs() {
		for _, typ := range quant.Types() {
			t.Run(arch+"/"+typ.String(), func(t *testing.T) {
				prefillTol := 2e-3
				if typ == gguf.F32 || typ == gguf.F16 || typ == gguf.BF16 {
					prefillTol = 1e-4
				}
				path := writeRandomModel(t, arch, typ, int64(len(arch))*100+int64(typ))
				checkAgainstReference(t, ctx, path, ops.F32, 1e-4, prefillTol)
			})
		}
	}
}

// TestRopeScalingMatchesReference runs the RoPE scalings the metadata can
// ask for against the float64 reference, with prompts past the original
// context: linear (llama), YaRN (qwen2, qwen3), and LongRoPE's factors
// with its attention factor (phi3).
func TestRopeScalingMatchesReference(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, c := range []struct {
		name  string
		cfg   Config
		extra []gguf.KV
	}{
		{"llama-linear", tinyConfig("llama"), []gguf.KV{archKV("llama", "rope.scaling.type", "linear"), archKV("llama", "rope.scaling.factor", float32(4))}},
		{"qwen2-yarn", tinyConfig("qwen2"), []gguf.KV{archKV("qwen2", "rope.scaling.type", "yarn"), archKV("qwen2", "rope.scaling.factor", float32(4)),
			archKV("qwen2", "rope.scaling.original_context_length", uint32(8))}},
		{"qwen3-yarn", tinyConfig("qwen3"), []gguf.KV{archKV("qwen3", "rope.scaling.type", "yarn"), archKV("qwen3", "rope.scaling.factor", float32(8)),
			archKV("qwen3", "rope.scaling.original_context_length", uint32(4)), archKV("qwen3", "rope.scaling.yarn_beta_fast", float32(16))}},
		{"phi3-longrope", tinyConfig("phi3"), []gguf.KV{archKV("phi3", "rope.scaling.attn_factor", float32(1.19)),
			archKV("phi3", "rope.scaling.original_context_length", uint32(8))}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.Extra = append(cfg.Extra, c.extra...)
			if cfg.Arch == "phi3" {
				cfg.With = append(cfg.With, "rope_factors_long.weight", "rope_factors_short.weight")
			}
			meta, tensors, err := RandomGGUF(cfg, gguf.F32, 11)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), c.name+".gguf")
			if err := gguf.WriteFile(path, meta, tensors); err != nil {
				t.Fatal(err)
			}
			checkAgainstReference(t, ctx, path, ops.F32, 1e-4, 1e-4)
		})
	}
}

// checkAgainstReference compares the GPU's logits for a model file with the
// float64 reference's over the same dequantised weights, with a KV cache
// of kvType, two ways:
//
//   - decode path: the prompt fed one token at a time (matvec reading the
//     stored blocks exactly as the reference decodes them, so with an f32
//     cache only f32 arithmetic separates the two), within decodeTol;
//   - prefill path: the prompt as one batch (the tiled matmul, with
//     quantised weights dequantised to f16 first, as llama.cpp's GPU
//     backends do: each weight rounds by up to 2^-11 relative), then three
//     decode steps over that cache, within prefillTol.
func checkAgainstReference(t *testing.T, ctx *gpu.Context, path string, kvType ops.DType, decodeTol, prefillTol float64) {
	t.Helper()
	prompt := []int32{1, 17, 300, 5, 42, 42, 7, 99, 250, 3, 11, 383}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ref, err := newReference(f, quant.Dequantize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(ctx, f, Options{CtxLen: 32, Batch: 16, Seqs: 2, KVType: kvType})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	vocab := m.Cfg.Vocab
	worst := 0.0
	defer func() { t.Logf("%s cache: worst relative error %.3g", kvType, worst) }()
	want := make([][]float64, 0, len(prompt)+3)
	for _, tok := range append(append([]int32{}, prompt...), 8, 200, 64) {
		w, err := ref.Forward(int(tok))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, append([]float64(nil), w...))
	}

	decode, _ := m.KV.Acquire()
	one := make([]float32, vocab)
	for i, tok := range prompt {
		if _, err := m.Forward(decode, []int32{tok}, LastLogits, one); err != nil {
			t.Fatal(err)
		}
		if e := relErr(one, want[i]); e > decodeTol || math.IsNaN(e) {
			t.Fatalf("decode path, position %d: relative error %.3g > %.3g", i, e, decodeTol)
		} else {
			worst = max(worst, e)
		}
	}

	prefill, _ := m.KV.Acquire()
	logits := make([]float32, len(prompt)*vocab)
	if _, err := m.Forward(prefill, prompt, AllLogits, logits); err != nil {
		t.Fatal(err)
	}
	for i := range prompt {
		if e := relErr(logits[i*vocab:(i+1)*vocab], want[i]); e > prefillTol || math.IsNaN(e) {
			t.Fatalf("prefill position %d: relative error %.3g > %.3g", i, e, prefillTol)
		} else {
			worst = max(worst, e)
		}
	}
	for step, tok := range []int32{8, 200, 64} {
		if _, err := m.Forward(prefill, []int32{tok}, LastLogits, one); err != nil {
			t.Fatal(err)
		}
		if e := relErr(one, want[len(prompt)+step]); e > prefillTol || math.IsNaN(e) {
			t.Fatalf("decode step %d after prefill: relative error %.3g > %.3g", step, e, prefillTol)
		} else {
			worst = max(worst, e)
		}
	}
}

// TestQ8KVCacheMatchesReference runs architectures with a q8_0 KV cache
// against the float64 reference (which keeps K and V exact): the cache's
// quantisation (each K/V value within half a step of amax/127 of its
// 32-value block) moves the logits by about 1% of their norm on these
// random-weight models, so the bound is 3e-2 on both paths; gemma2 has
// soft-capped, windowed attention, phi3 a fused QKV.
func TestQ8KVCacheMatchesReference(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, arch := range []string{"llama", "gemma2", "phi3"} {
		t.Run(arch, func(t *testing.T) {
			path := writeRandomModel(t, arch, gguf.F16, int64(len(arch))*31)
			checkAgainstReference(t, ctx, path, ops.Q8_0, 3e-2, 3e-2)
		})
	}
}

// TestDecodeBatchIsBatchInvariant decodes three sequences at different
// positions together and checks every logit is bit-identical to decoding
// each alone: what lets batched serving return exactly the text a request
// gets alone. gemma2 adds windowed, soft-capped attention past its window,
// phi3 a fused QKV and gate-up from the file, the MoE architectures their
// routing (each token's experts and weights) and the grouped expert
// matvecs; llama also with a q8_0 KV cache.
func TestDecodeBatchIsBatchInvariant(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, c := range []struct {
		arch string
		typ  gguf.GGMLType
		kv   ops.DType
	}{{"llama", gguf.F16, ops.F16}, {"llama", gguf.Q4_K, ops.F16}, {"gemma2", gguf.Q8_0, ops.F16}, {"phi3", gguf.Q4_0, ops.F16},
		{"llama", gguf.Q4_K, ops.Q8_0}, {"qwen3moe", gguf.Q4_K, ops.F16}, {"qwen2moe", gguf.Q8_0, ops.F16},
		{"gpt-oss", gguf.MXFP4, ops.F16}, {"llama-moe", gguf.F16, ops.F16}} {
		arch, typ := c.arch, c.typ
		t.Run(arch+"/"+typ.String()+"/kv_"+c.kv.String(), func(t *testing.T) {
			path := writeRandomModel(t, arch, typ, 77)
			f, err := gguf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			m, err := Load(ctx, f, Options{CtxLen: 32, Batch: 16, Seqs: 6, KVType: c.kv})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			vocab := m.Cfg.Vocab
			prompts := [][]int32{{1, 5, 9}, {1, 200, 201, 202, 203, 7, 7, 9, 10, 11}, {1}}
			steps := [][]int32{{4, 8, 15}, {16, 23, 42}, {99, 3, 2}}
			alone := make([][][]float32, len(prompts))
			for i, p := range prompts {
				s, _ := m.KV.Acquire()
				if _, err := m.Forward(s, p, LastLogits, make([]float32, vocab)); err != nil {
					t.Fatal(err)
				}
				for _, tok := range steps[i] {
					lg := make([]float32, vocab)
					if _, err := m.Forward(s, []int32{tok}, LastLogits, lg); err != nil {
						t.Fatal(err)
					}
					alone[i] = append(alone[i], lg)
				}
			}
			var seqs []int
			for _, p := range prompts {
				s, _ := m.KV.Acquire()
				if _, err := m.Forward(s, p, LastLogits, make([]float32, vocab)); err != nil {
					t.Fatal(err)
				}
				seqs = append(seqs, s)
			}
			for step := 0; step < 3; step++ {
				toks := []int32{steps[0][step], steps[1][step], steps[2][step]}
				lg := make([]float32, len(seqs)*vocab)
				next := make([]int32, len(seqs))
				if err := m.DecodeBatch(seqs, toks, LastLogits, lg, next); err != nil {
					t.Fatal(err)
				}
				for i := range seqs {
					for j := 0; j < vocab; j++ {
						if lg[i*vocab+j] != alone[i][step][j] {
							t.Fatalf("step %d sequence %d logit %d: batched %v, alone %v", step, i, j, lg[i*vocab+j], alone[i][step][j])
						}
					}
				}
			}
			// Greedy tokens in a batch equal the argmax of the logits alone.
			toks := []int32{5, 6, 7}
			next := make([]int32, 3)
			if err := m.DecodeBatch(seqs, toks, NextGreedy, nil, next); err != nil {
				t.Fatal(err)
			}
			for i, s := range seqs {
				if m.KV.Len(s) != len(prompts[i])+4 {
					t.Errorf("sequence %d holds %d tokens, want %d", i, m.KV.Len(s), len(prompts[i])+4)
				}
				if next[i] < 0 || int(next[i]) >= vocab {
					t.Errorf("next token %d out of range", next[i])
				}
			}
		})
	}
}

// TestTiledDecodeMatchesMatvec decodes three sequences together with
// DecodeTiledRows 2, so their rows take the norm + tiled matmul path of a
// prompt chunk (f16-dequantised weights), and compares each row with the
// same token decoded alone through the matvec: within the prefill path's
// tolerance (weights rounded to f16), and the rows of a batch below the
// threshold still bit for bit.
func TestTiledDecodeMatchesMatvec(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, c := range []struct {
		arch string
		typ  gguf.GGMLType
		tol  float64
	}{{"llama", gguf.Q4_K, 2e-3}, {"llama", gguf.F32, 1e-4}, {"gemma2", gguf.Q8_0, 2e-3}, {"qwen3moe", gguf.Q4_K, 2e-3}} {
		t.Run(c.arch+"/"+c.typ.String(), func(t *testing.T) {
			path := writeRandomModel(t, c.arch, c.typ, 91)
			f, err := gguf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			m, err := Load(ctx, f, Options{CtxLen: 32, Batch: 16, Seqs: 6, DecodeTiledRows: 3})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			vocab := m.Cfg.Vocab
			prompts := [][]int32{{1, 5, 9}, {1, 200, 201, 7}, {1}}
			decode := func(n int) (batched, alone [][]float32) {
				var seqs []int
				for _, p := range prompts[:n] {
					s, _ := m.KV.Acquire()
					if _, err := m.Forward(s, p, LastLogits, make([]float32, vocab)); err != nil {
						t.Fatal(err)
					}
					seqs = append(seqs, s)
				}
				toks := []int32{4, 8, 15}[:n]
				lg := make([]float32, n*vocab)
				if err := m.DecodeBatch(seqs, toks, LastLogits, lg, make([]int32, n)); err != nil {
					t.Fatal(err)
				}
				for i, s := range seqs {
					batched = append(batched, lg[i*vocab:(i+1)*vocab])
					// The same token alone, on a fresh copy of the prompt.
					if err := m.KV.Truncate(s, len(prompts[i])); err != nil {
						t.Fatal(err)
					}
					one := make([]float32, vocab)
					if _, err := m.Forward(s, toks[i:i+1], LastLogits, one); err != nil {
						t.Fatal(err)
					}
					alone = append(alone, one)
					m.KV.Release(s)
				}
				return batched, alone
			}
			batched, alone := decode(3)
			for i := range batched {
				want := make([]float64, vocab)
				for j, v := range alone[i] {
					want[j] = float64(v)
				}
				e := relErr(batched[i], want)
				if e > c.tol || math.IsNaN(e) {
					t.Errorf("sequence %d: tiled decode differs from the matvec by %.2g (tolerance %g)", i, e, c.tol)
				}
			}
			batched, alone = decode(2) // below the threshold: the matvec
			for i := range batched {
				for j := range batched[i] {
					if batched[i][j] != alone[i][j] {
						t.Fatalf("two rows (below DecodeTiledRows): sequence %d logit %d: batched %v, alone %v", i, j, batched[i][j], alone[i][j])
					}
				}
			}
		})
	}
}

// TestStepMixesDecodeAndPrefill runs decode tokens of two sequences and a
// prompt chunk of a third in one Step and checks each against the same
// work done alone: the decode rows bit for bit (batch invariance), the
// chunk's last logits too (its rows take the same kernels as alone), and
// the results come back in the caller's span order.
// qwen3moe's decode rows share the experts kernels with the chunk's rows
// (grouped by expert together), still bit for bit as alone.
func TestStepMixesDecodeAndPrefill(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, arch := range []string{"llama", "qwen3moe"} {
		t.Run(arch, func(t *testing.T) { checkStepMixes(t, ctx, arch) })
	}
}

func checkStepMixes(t *testing.T, ctx *gpu.Context, arch string) {
	path := writeRandomModel(t, arch, gguf.Q8_0, 91)
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := Load(ctx, f, Options{CtxLen: 48, Batch: 32, Seqs: 6, KVType: ops.F16})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	vocab := m.Cfg.Vocab
	prefix := [][]int32{{1, 5, 9}, {1, 7}}
	chunk := []int32{1, 200, 201, 202, 203, 7, 7, 9, 10, 11, 12}
	decodeTok := []int32{42, 17}
	// Alone: each sequence's step by itself.
	alone := make([][]float32, 3)
	for i, p := range prefix {
		s, _ := m.KV.Acquire()
		if _, err := m.Forward(s, p, LastLogits, make([]float32, vocab)); err != nil {
			t.Fatal(err)
		}
		alone[i] = make([]float32, vocab)
		if _, err := m.Forward(s, decodeTok[i:i+1], LastLogits, alone[i]); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := m.KV.Acquire()
	alone[2] = make([]float32, vocab)
	if _, err := m.Forward(s, chunk, LastLogits, alone[2]); err != nil {
		t.Fatal(err)
	}
	// Together: the chunk first in the caller's order, decode spans around it.
	var seqs []int
	for _, p := range prefix {
		s, _ := m.KV.Acquire()
		if _, err := m.Forward(s, p, LastLogits, make([]float32, vocab)); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, s)
	}
	sc, _ := m.KV.Acquire()
	spans := []Span{{Seq: seqs[0], Tokens: decodeTok[:1]}, {Seq: sc, Tokens: chunk}, {Seq: seqs[1], Tokens: decodeTok[1:]}}
	got := make([]float32, 3*vocab)
	if err := m.Step(spans, LastLogits, got, nil); err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]float32{alone[0], alone[2], alone[1]} {
		for j := range want {
			if got[i*vocab+j] != want[j] {
				t.Fatalf("span %d logit %d: in a mixed step %v, alone %v", i, j, got[i*vocab+j], want[j])
			}
		}
	}
	if m.KV.Len(sc) != len(chunk) || m.KV.Len(seqs[0]) != 4 || m.KV.Len(seqs[1]) != 3 {
		t.Errorf("cache lengths %d, %d, %d after the step", m.KV.Len(sc), m.KV.Len(seqs[0]), m.KV.Len(seqs[1]))
	}
	next := make([]int32, 3)
	more := []Span{{Seq: seqs[0], Tokens: []int32{3}}, {Seq: sc, Tokens: []int32{4, 5}}, {Seq: seqs[1], Tokens: []int32{6}}}
	if err := m.Step(more, NextGreedy, nil, next); err != nil {
		t.Fatal(err)
	}
	for i, id := range next {
		if id < 0 || int(id) >= vocab {
			t.Errorf("span %d: next token %d outside the vocabulary", i, id)
		}
	}
	if err := m.Step([]Span{{Seq: sc, Tokens: []int32{1}}, {Seq: sc, Tokens: []int32{2}}}, NextGreedy, nil, next); err == nil {
		t.Error("a step with one sequence twice was accepted")
	}
}

// TestHiddenMatchesReference checks Hidden (embeddings' input): every
// position's hidden state after the final norm, against the float64
// reference, for a prompt in one step.
func TestHiddenMatchesReference(t *testing.T) {
	ctx := gputest.Ctx(t)
	path := writeRandomModel(t, "qwen2", gguf.F32, 5)
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := newReference(f, quant.Dequantize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(ctx, f, Options{CtxLen: 32, Batch: 16, KVType: ops.F32})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	prompt := []int32{1, 17, 300, 5, 42, 42, 7, 99, 250, 3, 11}
	dim := m.Cfg.Dim
	got := make([]float32, len(prompt)*dim)
	for i := range got {
		got[i] = float32(math.NaN())
	}
	s, _ := m.KV.Acquire()
	if _, err := m.Forward(s, prompt, Hidden, got); err != nil {
		t.Fatal(err)
	}
	for i, tok := range prompt {
		if _, err := r.Forward(int(tok)); err != nil {
			t.Fatal(err)
		}
		if e := relErr(got[i*dim:(i+1)*dim], r.hidden); e > 1e-4 || math.IsNaN(e) {
			t.Fatalf("position %d: hidden state relative error %.3g > 1e-4", i, e)
		}
	}
}

// TestShapes checks that every benchmark shape configures through its
// architecture and synthesises the parameter count of the real model
// (within 3%: the published counts are rounded).
func TestShapes(t *testing.T) {
	wantParams := map[string]float64{"tinyllama-1.1b": 1.10e9, "llama2-7b": 6.74e9, "llama3-8b": 8.03e9, "qwen2.5-0.5b": 0.494e9,
		"qwen3-8b": 8.19e9, "gemma2-2b": 2.61e9, "gemma3-4b": 3.88e9, "phi4-mini": 3.84e9, "glm4-9b": 9.4e9,
		"qwen3-30b-a3b": 30.5e9, "gpt-oss-20b": 20.9e9}
	for _, name := range ShapeNames() {
		c, arch, err := shapeConfig(Shapes[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ss, err := slots(arch, c)
		if err != nil {
			t.Fatal(err)
		}
		plan, err := synthPlan(ss, c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		params := 0.0
		for _, s := range plan {
			if !s.alias {
				n := 1
				for _, d := range s.shape {
					n *= d
				}
				params += float64(n)
			}
		}
		t.Logf("%s: %.3g parameters in %d tensors", name, params, len(plan))
		if want, ok := wantParams[name]; ok && math.Abs(params-want)/want > 0.03 {
			t.Errorf("%s: %.4g parameters, the real model has %.4g", name, params, want)
		}
	}
	g, _, _ := shapeConfig(Shapes["gemma2-2b"])
	a := &gemma2{}
	f := &gguf.File{Metadata: map[string]gguf.Value{}}
	for _, kv := range shapeMeta(g) {
		f.Metadata[kv.Key] = kv.Value
	}
	a.Configure(&Meta{f: f, arch: "gemma2"}, &g)
	if a.local.Window != 4096 || a.global.SoftCap != 50 || a.finalSoftCap != 30 || a.global.Window != 0 {
		t.Errorf("gemma2-2b configured as %+v", a)
	}
}

// TestLoadRefusesBadFiles: a file of a known architecture with a tensor
// missing, of the wrong shape or type, or with metadata out of range is
// refused before any GPU upload, naming the tensor or key; an unknown
// architecture lists the supported ones; and the next load works.
func TestLoadRefusesBadFiles(t *testing.T) {
	ctx := gputest.Ctx(t)
	base := func() ([]gguf.KV, []gguf.TensorToWrite) {
		meta, tensors, err := RandomGGUF(tinyConfig("llama"), gguf.Q8_0, 3)
		if err != nil {
			t.Fatal(err)
		}
		return meta, tensors
	}
	setKV := func(meta []gguf.KV, key string, v any) []gguf.KV {
		for i := range meta {
			if meta[i].Key == key {
				meta[i].Value = gguf.Val(v)
				return meta
			}
		}
		return append(meta, gguf.KV{Key: key, Value: gguf.Val(v)})
	}
	cases := []struct {
		name, want string
		edit       func([]gguf.KV, []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite)
	}{
		{"missing tensor", "blk.1.attn_q.weight is missing", func(m []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
			var kept []gguf.TensorToWrite
			for _, x := range ts {
				if x.Name != "blk.1.attn_q.weight" {
					kept = append(kept, x)
				}
			}
			return m, kept
		}},
		{"wrong shape", "blk.0.ffn_up.weight has dims", func(m []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
			for i := range ts {
				if ts[i].Name == "blk.0.ffn_up.weight" {
					ts[i].Dims = []uint64{ts[i].Dims[0], ts[i].Dims[1] / 2}
					ts[i].Data = ts[i].Data[:len(ts[i].Data)/2]
				}
			}
			return m, ts
		}},
		{"wrong type", "blk.0.attn_norm.weight is Q8_0", func(m []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
			for i := range ts {
				if ts[i].Name == "blk.0.attn_norm.weight" {
					data, _ := quant.Quantize(gguf.Q8_0, make([]float32, 256))
					ts[i].Type, ts[i].Data = gguf.Q8_0, data
				}
			}
			return m, ts
		}},
		{"zero layers", "llama.block_count = 0 is out of range", func(m []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
			return setKV(m, "llama.block_count", uint32(0)), ts
		}},
		{"kv heads", "4 heads are not a multiple of 3 kv heads", func(m []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
			return setKV(m, "llama.attention.head_count_kv", uint32(3)), ts
		}},
		{"rope scaling", "rope.scaling.type \"warp\"", func(m []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
			return setKV(m, "llama.rope.scaling.type", "warp"), ts
		}},
		{"nan epsilon", "layer_norm_rms_epsilon = NaN is out of range", func(m []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
			return setKV(m, "llama.attention.layer_norm_rms_epsilon", float32(math.NaN())), ts
		}},
		{"unknown architecture", "unsupported architecture \"mamba\" (supported: [chatglm gemma2", func(m []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
			return setKV(m, "general.architecture", "mamba"), ts
		}},
	}
	refused := func(t *testing.T, meta []gguf.KV, tensors []gguf.TensorToWrite, want string) {
		path := filepath.Join(t.TempDir(), "bad.gguf")
		if err := gguf.WriteFile(path, meta, tensors); err != nil {
			t.Fatal(err)
		}
		f, err := gguf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		before := ctx.AllocatedBytes()
		m, err := Load(ctx, f, Options{CtxLen: 32, KVType: ops.F32})
		if err == nil {
			m.Close()
			t.Fatalf("loaded; want an error containing %q", want)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not contain %q", err, want)
		}
		if after := ctx.AllocatedBytes(); after != before {
			t.Errorf("GPU allocation went from %d to %d bytes: the refusal came after an upload", before, after)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			meta, tensors := c.edit(base())
			refused(t, meta, tensors, c.want)
		})
	}
	// MoE: the expert metadata against the tensors and itself.
	moe := func() ([]gguf.KV, []gguf.TensorToWrite) {
		meta, tensors, err := RandomGGUF(tinyConfig("qwen3moe"), gguf.Q8_0, 3)
		if err != nil {
			t.Fatal(err)
		}
		return meta, tensors
	}
	moeCases := []struct {
		name, want string
		edit       func([]gguf.KV, []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite)
	}{
		{"expert count", "blk.0.ffn_gate_inp.weight has dims [256 4] (innermost first), want shape [6 256] (the metadata's expert_count is 6)",
			func(m []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
				return setKV(m, "qwen3moe.expert_count", uint32(6)), ts
			}},
		{"experts used", "qwen3moe.expert_used_count = 5 is above qwen3moe.expert_count = 4", func(m []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
			return setKV(m, "qwen3moe.expert_used_count", uint32(5)), ts
		}},
		{"router shape", "blk.1.ffn_gate_inp.weight has dims", func(m []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
			for i := range ts {
				if ts[i].Name == "blk.1.ffn_gate_inp.weight" {
					ts[i].Dims = []uint64{ts[i].Dims[0] / 2, ts[i].Dims[1]}
					ts[i].Data = ts[i].Data[:len(ts[i].Data)/2]
				}
			}
			return m, ts
		}},
		{"expert stack", "blk.0.ffn_down_exps.weight has dims", func(m []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
			for i := range ts {
				if ts[i].Name == "blk.0.ffn_down_exps.weight" {
					ts[i].Dims = []uint64{ts[i].Dims[0], ts[i].Dims[1], ts[i].Dims[2] - 1}
					ts[i].Data = ts[i].Data[:len(ts[i].Data)/4*3]
				}
			}
			return m, ts
		}},
		{"no expert count", "qwen3moe.expert_count is missing", func(m []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
			var kept []gguf.KV
			for _, kv := range m {
				if kv.Key != "qwen3moe.expert_count" {
					kept = append(kept, kv)
				}
			}
			return kept, ts
		}},
	}
	for _, c := range moeCases {
		t.Run(c.name, func(t *testing.T) {
			meta, tensors := c.edit(moe())
			refused(t, meta, tensors, c.want)
		})
	}
	f, err := gguf.Open(writeRandomModel(t, "llama", gguf.Q8_0, 3))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := Load(ctx, f, Options{CtxLen: 32, KVType: ops.F32})
	if err != nil {
		t.Fatalf("a good model after the bad ones: %v", err)
	}
	m.Close()
}

// TestSynthesizeMoE builds random-weight MoE models in GPU memory as bench
// --shape does (gpt-oss with MXFP4 experts and Q8_0 elsewhere, as
// llama-quantize's MXFP4_MOE; qwen3moe as Q4_K_M), runs a few greedy
// steps, and checks the memory report: the experts apart, what a token
// reads, and EstimateShape's arithmetic equal to what was allocated (the
// KV pool also holds the block table, a few bytes).
func TestSynthesizeMoE(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, c := range []struct {
		arch string
		typ  gguf.GGMLType
	}{{"gpt-oss", gguf.MXFP4}, {"qwen3moe", MixQ4KM}} {
		t.Run(c.arch, func(t *testing.T) {
			cfg := tinyConfig(c.arch)
			opt := Options{CtxLen: 32, Batch: 16, KVType: ops.F16}
			m, err := Synthesize(ctx, cfg, c.typ, opt, 7)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			s, _ := m.KV.Acquire()
			next, err := m.Forward(s, []int32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, NextGreedy, nil)
			for i := 0; i < 3 && err == nil; i++ {
				if next < 0 || int(next) >= m.Cfg.Vocab {
					t.Fatalf("next token %d", next)
				}
				next, err = m.Forward(s, []int32{next}, NextGreedy, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			weights, kvBytes, scratch := m.Memory()
			experts, perToken := m.ExpertBytes()
			_, est, err := EstimateShape(cfg, c.typ, opt)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("weights %d (experts %d), read per token %d; estimate %+v", weights, experts, perToken, est)
			if experts == 0 || experts >= weights || perToken != weights-experts+experts*2/4 {
				t.Errorf("experts %d of %d bytes, %d read per token (want dense + 2/4 of the experts)", experts, weights, perToken)
			}
			if est.Weights != weights || est.Experts != experts || est.PerToken != perToken || est.KV > kvBytes || kvBytes > est.KV+4096 || est.Scratch < scratch {
				t.Errorf("EstimateShape %+v, allocated weights %d experts %d per token %d kv %d scratch %d", est, weights, experts, perToken, kvBytes, scratch)
			}
			for _, w := range m.Tensors() {
				if strings.Contains(w.Buf.Label(), "_exps.weight") && c.typ == gguf.MXFP4 && w.DType != ops.MXFP4 {
					t.Errorf("%s is %s, want MXFP4", w.Buf.Label(), w.DType)
				}
			}
		})
	}
}

// TestRandomGGUFTilesLargeTensors: past tileAbove values a tensor is 61
// quantised random rows repeated (bench --write of 30B shapes in seconds);
// smaller tensors are drawn whole.
func TestRandomGGUFTilesLargeTensors(t *testing.T) {
	cfg := tinyConfig("llama")
	cfg.Vocab = tileAbove/cfg.Dim + 7 // token_embd and output just past the limit
	_, tensors, err := RandomGGUF(cfg, gguf.Q8_0, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tw := range tensors {
		rows, cols := 1, int(tw.Dims[0])
		for _, d := range tw.Dims[1:] {
			rows *= int(d)
		}
		rowBytes := len(tw.Data) / rows
		if len(tw.Data) != rows*cols/32*34 && len(tw.Dims) > 1 {
			t.Fatalf("%s: %d bytes for %d×%d Q8_0", tw.Name, len(tw.Data), rows, cols)
		}
		same := rows > 61 && string(tw.Data[:rowBytes]) == string(tw.Data[61*rowBytes:62*rowBytes])
		if big := rows*cols > tileAbove; big != same {
			t.Errorf("%s (%d values): row 61 repeats row 0: %v", tw.Name, rows*cols, same)
		}
	}
}
