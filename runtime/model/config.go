// Package model runs transformer architectures on the GPU. Each
// architecture is one file (llama.go, gemma2.go, ...): its weights as a
// tagged struct bound to GGUF tensors (bind.go), its hyper-parameters, and
// its forward pass written once against the shared builders of Block
// (pass.go), which choose fused or unfused kernels for decode and prefill.
package model

import (
	"fmt"
	"math"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
)

// RopeMode is how RoPE pairs dimensions.
type RopeMode int

const (
	RopeNormal RopeMode = iota // adjacent pairs (2i, 2i+1): llama, glm4, chatglm
	RopeNeox                   // halves (i, i+n/2): qwen2/3, gemma, phi3
)

func (m RopeMode) String() string {
	if m == RopeNeox {
		return "neox"
	}
	return "normal"
}

// Config is an architecture's hyper-parameters: the common ones, read
// alike for every architecture (as llama.cpp's load_hparams does), and the
// RoPE scaling they ask for.
type Config struct {
	Arch    string
	Dim     int // embedding length
	Layers  int
	Heads   int
	KVHeads int
	HeadDim int
	FFN     int // feed-forward hidden size
	Vocab   int
	CtxLen  int // trained context length
	NormEps float64

	RopeBase  float64
	RopeScale float64 // freq_scale = 1/linear scaling factor
	RopeDims  int     // rotated dims per head
	RopeMode  RopeMode
	// RopeScaling is the file's rope.scaling.type: "", "none", "linear",
	// "yarn" or "longrope".
	RopeScaling string
	RopeOrigCtx int // rope.scaling.original_context_length (YaRN, LongRoPE)
	// YaRN (ggml's rope_yarn), as llama.cpp derives them from the file.
	YarnExtFactor, YarnAttnFactor, YarnBetaFast, YarnBetaSlow float64

	TiedOutput bool // no output.weight: the head reuses token_embd
	// Pooling is how embeddings pool the hidden states (pooling_type).
	Pooling Pooling

	// Mixture of experts (0 when dense): experts per layer, experts each
	// token uses, an expert's FFN length, the shared expert's FFN length.
	Experts, ExpertsUsed, ExpertFFN, SharedFFN int

	// With and Without adjust random-weight synthesis (bench --shape,
	// test models): optional tensors to include ("attn_q.bias",
	// "attn_qkv.weight", "rope_freqs.weight") and required ones to leave
	// out ("output.weight" for a tied head).
	With, Without []string
	// Extra are architecture keys of a synthesised model beyond the common
	// ones (soft-caps, windows), as a GGUF file would carry them.
	Extra []gguf.KV
}

// dims are the symbols of the shape tags.
func (c Config) dims() map[string]int {
	q, kv := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	return map[string]int{
		"dim": c.Dim, "vocab": c.Vocab, "ffn": c.FFN, "2ffn": 2 * c.FFN, "hd": c.HeadDim,
		"q": q, "kv": kv, "qkv": q + 2*kv, "rot2": c.RopeDims / 2, "heads": c.Heads,
		"exp": c.Experts, "ffexp": c.ExpertFFN, "ffsh": c.SharedFFN,
	}
}

// Meta reads an architecture's metadata keys ("<arch>.KEY") and remembers
// the first missing or out-of-range one, so Configure reads plainly.
type Meta struct {
	f    *gguf.File
	arch string
	err  error
}

func (m *Meta) fail(format string, args ...any) {
	if m.err == nil {
		m.err = fmt.Errorf("model: "+format, args...)
	}
}

// Has reports whether "<arch>.key" is present.
func (m *Meta) Has(key string) bool {
	_, ok := m.f.Metadata[m.arch+"."+key]
	return ok
}

// Uint reads a required positive integer key, at most 1<<24.
func (m *Meta) Uint(key string) int {
	v, ok := m.f.ArchUint(key)
	if !ok {
		m.fail("%s.%s is missing", m.arch, key)
		return 0
	}
	if v == 0 || v > 1<<24 {
		m.fail("%s.%s = %d is out of range", m.arch, key, v)
		return 0
	}
	return int(v)
}

// UintOr reads an optional integer key in [lo, 1<<24], def when absent.
func (m *Meta) UintOr(key string, def, lo int) int {
	v, ok := m.f.ArchUint(key)
	if !ok {
		return def
	}
	if v < uint64(lo) || v > 1<<24 {
		m.fail("%s.%s = %d is out of range", m.arch, key, v)
		return def
	}
	return int(v)
}

// FloatOr reads an optional finite number key, def when absent; the value
// must be positive when positive is set.
func (m *Meta) FloatOr(key string, def float64, positive bool) float64 {
	v, ok := m.f.ArchFloat(key)
	if !ok {
		return def
	}
	if math.IsNaN(v) || math.IsInf(v, 0) || (positive && v <= 0) {
		m.fail("%s.%s = %v is out of range", m.arch, key, v)
		return def
	}
	return v
}

// String reads an optional string key.
func (m *Meta) String(key string) string {
	s, _ := m.f.String(m.arch + "." + key)
	return s
}

// Err is the first bad key read.
func (m *Meta) Err() error { return m.err }

// ConfigFromGGUF reads and checks the hyper-parameters.
func ConfigFromGGUF(f *gguf.File) (Config, error) {
	c, _, err := configure(f)
	return c, err
}

// configure reads the common hyper-parameters, then the architecture's.
func configure(f *gguf.File) (Config, Arch, error) {
	arch := f.Architecture()
	a, err := newArch(arch)
	if err != nil {
		return Config{Arch: arch}, nil, err
	}
	m := &Meta{f: f, arch: arch}
	c := Config{Arch: arch}
	c.Dim = m.Uint("embedding_length")
	c.Layers = m.Uint("block_count")
	c.Heads = m.Uint("attention.head_count")
	c.FFN = m.Uint("feed_forward_length")
	c.KVHeads = m.UintOr("attention.head_count_kv", c.Heads, 1)
	c.HeadDim = c.Dim / max(c.Heads, 1)
	c.HeadDim = m.UintOr("attention.key_length", c.HeadDim, 1)
	c.CtxLen = m.UintOr("context_length", 2048, 1)
	c.NormEps = m.FloatOr("attention.layer_norm_rms_epsilon", 1e-5, true)
	c.RopeBase = m.FloatOr("rope.freq_base", 10000, true)
	c.RopeDims = m.UintOr("rope.dimension_count", c.HeadDim, 2)
	readRopeScaling(m, &c)
	c.Experts = m.UintOr("expert_count", 0, 0)
	c.ExpertsUsed = m.UintOr("expert_used_count", 0, 0)
	c.ExpertFFN = m.UintOr("expert_feed_forward_length", 0, 1)
	c.SharedFFN = m.UintOr("expert_shared_feed_forward_length", 0, 1)
	if tok, ok := f.Strings("tokenizer.ggml.tokens"); ok {
		c.Vocab = len(tok)
	}
	c.Vocab = m.UintOr("vocab_size", c.Vocab, 1)
	if emb, ok := f.Tensor("token_embd.weight"); ok && len(emb.Dims) == 2 {
		c.Vocab = int(emb.Dims[1])
	}
	_, hasOut := f.Tensor("output.weight")
	c.TiedOutput = !hasOut
	c.Pooling = readPooling(m)
	if err := m.Err(); err != nil {
		return c, nil, err
	}
	a.Configure(m, &c)
	if c.Experts > 0 && c.ExpertFFN <= 0 {
		m.fail("%s.expert_feed_forward_length is missing", c.Arch)
	}
	if err := m.Err(); err != nil {
		return c, nil, err
	}
	return c, a, c.Validate()
}

// readRopeScaling follows llama.cpp (llama-model.cpp load_hparams and
// llama-context.cpp): scaling.factor (or the old scale_linear) gives
// freq_scale unless the type is "none"; YaRN's ext_factor is 1 for "yarn",
// and its attention factor is get_mscale(factor) cancelled by the
// 1+0.1·ln(factor) that ggml's rope_yarn multiplies in, times the file's
// attn_factor.
func readRopeScaling(m *Meta, c *Config) {
	c.RopeScaling = m.String("rope.scaling.type")
	switch c.RopeScaling {
	case "", "none", "linear", "yarn", "longrope":
	default:
		m.fail("%s.rope.scaling.type %q is not one of none, linear, yarn, longrope", c.Arch, c.RopeScaling)
	}
	factor := m.FloatOr("rope.scaling.factor", 0, false)
	if factor == 0 {
		factor = m.FloatOr("rope.scale_linear", 0, false)
	}
	if factor < 0 {
		m.fail("%s.rope.scaling.factor = %v is out of range", c.Arch, factor)
	}
	c.RopeScale = 1
	if factor > 0 && c.RopeScaling != "none" {
		c.RopeScale = 1 / factor
	}
	c.RopeOrigCtx = m.UintOr("rope.scaling.original_context_length", m.UintOr("context_length", 2048, 1), 1)
	c.YarnBetaFast = m.FloatOr("rope.scaling.yarn_beta_fast", 32, false)
	c.YarnBetaSlow = m.FloatOr("rope.scaling.yarn_beta_slow", 1, false)
	c.YarnAttnFactor = 1
	if c.RopeScaling == "yarn" {
		c.YarnExtFactor = m.FloatOr("rope.scaling.yarn_ext_factor", 1, false)
		if c.YarnExtFactor != 0 {
			f := 1 / c.RopeScale
			mscale := 1.0
			if f > 1 {
				mscale = 0.1*math.Log(f) + 1
			}
			if logMul := m.FloatOr("rope.scaling.yarn_log_multiplier", 0, false); logMul != 0 && f > 1 {
				mscale /= 0.1*logMul*math.Log(f) + 1
			}
			c.YarnAttnFactor = mscale / (1 + 0.1*math.Log(f))
		}
	}
	c.YarnAttnFactor *= m.FloatOr("rope.scaling.attn_factor", 1, true)
}

// Validate checks the relations between hyper-parameters.
func (c Config) Validate() error {
	switch {
	case c.Dim <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.FFN <= 0 || c.HeadDim <= 0:
		return fmt.Errorf("model: non-positive dimension in %+v", c)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("model: %d heads are not a multiple of %d kv heads", c.Heads, c.KVHeads)
	case c.HeadDim%4 != 0 || c.HeadDim > 256:
		return fmt.Errorf("model: head dim %d: want a multiple of 4, at most 256", c.HeadDim)
	case c.Vocab <= 0:
		return fmt.Errorf("model: vocabulary size unknown")
	case c.RopeDims <= 0 || c.RopeDims > c.HeadDim || c.RopeDims%2 != 0:
		return fmt.Errorf("model: rope dimension count %d invalid for head dim %d", c.RopeDims, c.HeadDim)
	case c.NormEps <= 0 || math.IsNaN(c.NormEps):
		return fmt.Errorf("model: rms epsilon %v invalid", c.NormEps)
	case c.RopeBase <= 0 || math.IsNaN(c.RopeBase):
		return fmt.Errorf("model: rope base %v invalid", c.RopeBase)
	}
	return c.validateExperts()
}

// validateExperts checks the expert keys against each other and the
// kernels' limits, naming the keys.
func (c Config) validateExperts() error {
	a := c.Arch
	switch {
	case c.Experts == 0 && c.ExpertsUsed == 0:
		return nil
	case c.Experts == 0:
		return fmt.Errorf("model: %s.expert_used_count = %d without %s.expert_count", a, c.ExpertsUsed, a)
	case c.ExpertsUsed == 0:
		return fmt.Errorf("model: %s.expert_count = %d needs %s.expert_used_count >= 1", a, c.Experts, a)
	case c.ExpertsUsed > c.Experts:
		return fmt.Errorf("model: %s.expert_used_count = %d is above %s.expert_count = %d", a, c.ExpertsUsed, a, c.Experts)
	case c.Experts > ops.MaxExperts:
		return fmt.Errorf("model: %s.expert_count = %d: at most %d experts are supported", a, c.Experts, ops.MaxExperts)
	case c.ExpertsUsed > ops.MaxExpertsUsed:
		return fmt.Errorf("model: %s.expert_used_count = %d: at most %d are supported", a, c.ExpertsUsed, ops.MaxExpertsUsed)
	}
	return nil
}

// MemoryEstimate is what Load will allocate on the GPU, in bytes.
type MemoryEstimate struct {
	Weights, KV, Scratch uint64
	KVTokenBytes         uint64 // KV cache bytes per token (K and V of every layer)
	// Experts is the part of Weights that are routed experts' tensors;
	// PerToken what a decode token reads of the weights (the rest, plus
	// expert_used_count/expert_count of the experts).
	Experts, PerToken uint64
	// KVTokens is the cache's token rows, for showing how KV was computed.
	KVTokens int
}

// Total is the sum.
func (e MemoryEstimate) Total() uint64 { return e.Weights + e.KV + e.Scratch }
