package model

import (
	"fmt"
	"math"
	"math/rand"
	"path/filepath"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/quant"
)

// tinyShape is small enough for lavapipe and keeps every matrix row a whole
// number of 256-element K-quant blocks.
type tinyShape struct {
	dim, layers, heads, kvHeads, ffn, vocab int
}

var tiny = tinyShape{dim: 256, layers: 2, heads: 4, kvHeads: 2, ffn: 512, vocab: 384}

// writeRandomModel writes a GGUF model of arch with random weights; every
// matrix is stored as typ (norms and biases stay F32, as llama.cpp does).
func writeRandomModel(t *testing.T, arch string, typ gguf.GGMLType, s tinyShape, seed int64) string {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	headDim := s.dim / s.heads
	meta := []gguf.KV{
		{Key: "general.architecture", Value: gguf.Val(arch)},
		{Key: arch + ".embedding_length", Value: gguf.Val(uint32(s.dim))},
		{Key: arch + ".block_count", Value: gguf.Val(uint32(s.layers))},
		{Key: arch + ".attention.head_count", Value: gguf.Val(uint32(s.heads))},
		{Key: arch + ".attention.head_count_kv", Value: gguf.Val(uint32(s.kvHeads))},
		{Key: arch + ".feed_forward_length", Value: gguf.Val(uint32(s.ffn))},
		{Key: arch + ".context_length", Value: gguf.Val(uint32(64))},
		{Key: arch + ".rope.freq_base", Value: gguf.Val(float32(10000))},
		{Key: arch + ".attention.layer_norm_rms_epsilon", Value: gguf.Val(float32(1e-5))},
	}
	var tensors []gguf.TensorToWrite
	add := func(name string, typ gguf.GGMLType, scale float64, dims ...int) {
		n := 1
		ud := make([]uint64, len(dims))
		for i, d := range dims {
			n *= d
			ud[len(dims)-1-i] = uint64(d) // GGUF lists the innermost first
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32((rng.Float64()*2 - 1) * scale)
		}
		data, err := quant.Quantize(typ, v)
		if err != nil {
			t.Fatalf("quantise %s as %s: %v", name, typ, err)
		}
		tensors = append(tensors, gguf.TensorToWrite{Name: name, Dims: ud, Type: typ, Data: data})
	}
	norm := func(name string, n int) {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(1 + 0.2*(rng.Float64()*2-1))
		}
		data, _ := quant.Quantize(gguf.F32, v)
		tensors = append(tensors, gguf.TensorToWrite{Name: name, Dims: []uint64{uint64(n)}, Type: gguf.F32, Data: data})
	}
	qDim, kvDim := s.heads*headDim, s.kvHeads*headDim
	w := func(in int) float64 { return 1.7 / math.Sqrt(float64(in)) }
	add("token_embd.weight", typ, 1, s.vocab, s.dim)
	norm("output_norm.weight", s.dim)
	if arch != "qwen3" { // qwen3 here also exercises tied output
		add("output.weight", typ, w(s.dim), s.vocab, s.dim)
	}
	for i := 0; i < s.layers; i++ {
		norm(blk(i, "attn_norm"), s.dim)
		norm(blk(i, "ffn_norm"), s.dim)
		add(blk(i, "attn_q"), typ, w(s.dim), qDim, s.dim)
		add(blk(i, "attn_k"), typ, w(s.dim), kvDim, s.dim)
		add(blk(i, "attn_v"), typ, w(s.dim), kvDim, s.dim)
		add(blk(i, "attn_output"), typ, w(qDim), s.dim, qDim)
		add(blk(i, "ffn_gate"), typ, w(s.dim), s.ffn, s.dim)
		add(blk(i, "ffn_up"), typ, w(s.dim), s.ffn, s.dim)
		add(blk(i, "ffn_down"), typ, w(s.ffn), s.dim, s.ffn)
		if arch == "qwen2" {
			add(blkBias(i, "attn_q"), gguf.F32, 0.5, qDim)
			add(blkBias(i, "attn_k"), gguf.F32, 0.5, kvDim)
			add(blkBias(i, "attn_v"), gguf.F32, 0.5, kvDim)
		}
		if arch == "qwen3" {
			norm(blk(i, "attn_q_norm"), headDim)
			norm(blk(i, "attn_k_norm"), headDim)
		}
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
	prompt := []int32{1, 17, 300, 5, 42, 42, 7, 99, 250, 3, 11, 383}
	for _, arch := range Supported {
		for _, typ := range quant.Types() {
			t.Run(arch+"/"+typ.String(), func(t *testing.T) {
				path := writeRandomModel(t, arch, typ, tiny, int64(len(arch))*100+int64(typ))
				f, err := gguf.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				ref, err := NewReference(f, quant.Dequantize)
				if err != nil {
					t.Fatal(err)
				}
				m, err := Load(ctx, f, Options{CtxLen: 32, Batch: 16, Seqs: 2, KVType: ops.F32})
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				vocab := m.Cfg.Vocab
				prefillTol := 2e-3
				if typ == gguf.F32 || typ == gguf.F16 || typ == gguf.BF16 {
					prefillTol = 1e-4
				}
				want := make([][]float64, 0, len(prompt)+3)
				for _, tok := range append(append([]int32{}, prompt...), 8, 200, 64) {
					w, err := ref.Forward(int(tok))
					if err != nil {
						t.Fatal(err)
					}
					want = append(want, w)
				}

				decode, _ := m.KV.Acquire()
				one := make([]float32, vocab)
				for i, tok := range prompt {
					if _, err := m.Forward(decode, []int32{tok}, LastLogits, one); err != nil {
						t.Fatal(err)
					}
					if e := relErr(one, want[i]); e > 1e-4 || math.IsNaN(e) {
						t.Fatalf("decode path, position %d: relative error %.3g > 1e-4", i, e)
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
					}
				}
				for step, tok := range []int32{8, 200, 64} {
					if _, err := m.Forward(prefill, []int32{tok}, LastLogits, one); err != nil {
						t.Fatal(err)
					}
					if e := relErr(one, want[len(prompt)+step]); e > prefillTol || math.IsNaN(e) {
						t.Fatalf("decode step %d after prefill: relative error %.3g > %.3g", step, e, prefillTol)
					}
				}
			})
		}
	}
}

// TestDecodeBatchIsBatchInvariant decodes three sequences at different
// positions together and checks every logit is bit-identical to decoding
// each alone: what lets batched serving return exactly the text a request
// gets alone.
func TestDecodeBatchIsBatchInvariant(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, typ := range []gguf.GGMLType{gguf.F16, gguf.Q4_K} {
		t.Run(typ.String(), func(t *testing.T) {
			path := writeRandomModel(t, "llama", typ, tiny, 77)
			f, err := gguf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			m, err := Load(ctx, f, Options{CtxLen: 32, Batch: 16, Seqs: 6, KVType: ops.F16})
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
