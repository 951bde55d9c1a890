package model

import (
	"fmt"
	"sort"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
)

// An Arch is one transformer architecture: its weights as a struct whose
// Weight fields are bound to GGUF tensors by struct tags (bind.go), the
// hyper-parameters it adds to Config, and its forward pass, written once
// against Block. Each lives in its own file (llama.go, gemma2.go, ...) and
// registers itself under its GGUF general.architecture name.
type Arch interface {
	// Configure reads what the architecture adds to the common
	// hyper-parameters (ConfigFromGGUF reads those first); m reads
	// "<arch>.KEY" and remembers the first bad value.
	Configure(m *Meta, c *Config)
	// Forward records the whole forward pass top to bottom: embeddings,
	// every layer, the head.
	Forward(b Block)
}

// registry maps GGUF architecture names to constructors of zero weights.
var registry = map[string]func() Arch{}

func register(name string, newArch func() Arch) { registry[name] = newArch }

// Supported lists the architectures this package runs.
func Supported() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func newArch(name string) (Arch, error) {
	if name == "" {
		return nil, fmt.Errorf("model: general.architecture is missing")
	}
	mk, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("model: unsupported architecture %q (supported: %v)", name, Supported())
	}
	return mk(), nil
}

// Act is an activation, [n, width] for the step's n rows: a view of a GPU
// scratch buffer, or (in the float64 reference backend of the tests) host
// values.
type Act struct {
	t    ops.Tensor
	host [][]float64
}

// Activation is the nonlinearity of a gated FFN (ops.Activation).
type Activation = ops.Activation

const (
	ActSiLU      = ops.ActSiLU      // SwiGLU: llama, qwen, phi3, glm
	ActGELU      = ops.ActGELU      // GELU, tanh approximation: gemma
	ActSwiGLUOAI = ops.ActSwiGLUOAI // gpt-oss's clamped SwiGLU
)

// AttnOpts are one layer's attention settings beyond the common ones.
type AttnOpts struct {
	Rope LayerRope
	// Scale multiplies q·k; 0 means 1/sqrt(headDim). Gemma's
	// query_pre_attn_scalar and Phi-3's pre-scaled queries go here.
	Scale float32
	// SoftCap caps each score at ±SoftCap with tanh (gemma2); 0: none.
	SoftCap float32
	// Window > 0 makes the layer sliding-window: position p sees the keys
	// at p-Window+1..p (llama.cpp's standard SWA).
	Window int
	// Sinks, when bound, is a per-head logit added to each softmax's
	// denominator (gpt-oss).
	Sinks Weight
}

// LayerRope is the RoPE of one layer: the model's (Config.Rope) unless a
// layer overrides the base or the scale (gemma3's local layers).
type LayerRope struct {
	Base, FreqScale float64 // 0: the model's
	// Factors divides each pair's frequency (Llama 3.1 rope_freqs, Phi-3
	// LongRoPE): f32 [RopeDims/2], or unbound.
	Factors Weight
}

// Block is what an architecture's forward pass is written against: the
// shared builders. The GPU pass (pass.go) decides per call which kernels
// run — fused matvec kernels for decode rows, separate norm and tiled
// matmul for prefill — so an architecture never writes its block twice.
// Errors are sticky: after the first, every call does nothing and the
// caller of Forward gets it.
type Block interface {
	Config() Config
	// MaxSeqLen is the most tokens a sequence holds in this run (the
	// context the model was loaded with), which some RoPE scalings read.
	MaxSeqLen() int
	// Embed sets the residual stream x [n, dim] to the tokens' rows of
	// table, times scale when scale is not 0 or 1 (gemma: sqrt(dim)).
	Embed(table Weight, scale float32)
	// Layer marks the start of layer li.
	Layer(li int)
	// QKV projects h = rmsnorm(x)·norm: q [n, heads·hd], k and v
	// [n, kvHeads·hd], biases added when bound.
	QKV(norm Weight, a *AttnWeights) (q, k, v Act)
	// HeadNorms RMS-normalises each head's vector of q in place, scaled by
	// qNorm [hd], and each of k's by kNorm (qwen3, gemma3 q/k norms).
	HeadNorms(q, k Act, qNorm, kNorm Weight)
	// Attention rotates q and k, appends k and v to layer li's cache and
	// returns softmax(q·kᵀ)·v over the cache: [n, heads·hd].
	Attention(li int, q, k, v Act, o AttnOpts) Act
	// Residual adds in·wᵀ to x, RMS-normalised by postNorm first when it is
	// bound (gemma2/3, glm4 post-norms).
	Residual(in Act, w Weight, postNorm Weight)
	// FFN returns act(h·Gateᵀ) * (h·Upᵀ) with h = rmsnorm(x)·norm: [n, ffn].
	FFN(norm Weight, f FFN, act Activation) Act
	// MoE adds to x the mixture of experts of h = rmsnorm(x)·norm (llama.cpp
	// build_moe_ffn): the router picks each token's experts and weights,
	// each chosen expert's gated FFN runs on h, and their outputs, weighted
	// and summed (with the shared expert's when o.Shared is set), are added
	// to x.
	MoE(norm Weight, e *ExpertWeights, o MoEOpts)
	// ResidualBiased adds in·wᵀ + bias [dim] to x (gpt-oss's biased
	// attention output).
	ResidualBiased(in Act, w, bias Weight)
	// Head ends the pass: rmsnorm(x)·norm · outᵀ, capped by softCap when
	// not 0, for the rows the caller wants (or their normed hidden states).
	Head(norm, out Weight, softCap float32)
}

// AttnWeights are the attention projections of a layer, as llama.cpp's
// create_tensor_qkv takes them: one fused attn_qkv matrix or separate
// attn_q, attn_k, attn_v, each with optional biases. On the GPU the fused
// matrix (from the file, or joined at load when the parts share a type)
// is also reachable as Q, K, V views, and its bias as BQ, BK, BV.
type AttnWeights struct {
	QKV  Weight `gguf:"attn_qkv.weight,opt" shape:"qkv,dim"`
	QKVB Weight `gguf:"attn_qkv.bias,opt" shape:"qkv"`
	Q    Weight `gguf:"attn_q.weight,unless=attn_qkv.weight" shape:"q,dim"`
	K    Weight `gguf:"attn_k.weight,unless=attn_qkv.weight" shape:"kv,dim"`
	V    Weight `gguf:"attn_v.weight,unless=attn_qkv.weight" shape:"kv,dim"`
	BQ   Weight `gguf:"attn_q.bias,opt" shape:"q"`
	BK   Weight `gguf:"attn_k.bias,opt" shape:"kv"`
	BV   Weight `gguf:"attn_v.bias,opt" shape:"kv"`
	O    Weight `gguf:"attn_output.weight" shape:"dim,q"`
}

// FFN is a gated feed-forward block's weights in either layout.
type FFN interface{ parts() *ffnParts }

// ffnParts: Gate and Up (separate, or views of GateUp on the GPU), GateUp
// ([2·ffn, dim], gate rows first: from the file, or joined at load), Down.
type ffnParts struct{ Gate, Up, GateUp, Down Weight }

// GatedFFN has separate gate and up matrices (llama, qwen, gemma).
type GatedFFN struct {
	Gate   Weight `gguf:"ffn_gate.weight" shape:"ffn,dim"`
	Up     Weight `gguf:"ffn_up.weight" shape:"ffn,dim"`
	Down   Weight `gguf:"ffn_down.weight" shape:"dim,ffn"`
	joined ffnParts
}

func (f *GatedFFN) parts() *ffnParts {
	f.joined.Gate, f.joined.Up, f.joined.Down = f.Gate, f.Up, f.Down
	return &f.joined
}

// FusedFFN stores gate and up as one ffn_up matrix of 2·ffn rows, gate
// first (phi3, glm4, chatglm: llama.cpp's LLM_FFN_SWIGLU on ffn_up).
type FusedFFN struct {
	GateUp Weight `gguf:"ffn_up.weight" shape:"2ffn,dim"`
	Down   Weight `gguf:"ffn_down.weight" shape:"dim,ffn"`
	split  ffnParts
}

func (f *FusedFFN) parts() *ffnParts {
	f.split.GateUp, f.split.Down = f.GateUp, f.Down
	return &f.split
}

// describer is implemented by architectures with settings beyond Config
// worth showing in `wgllm info` (windows, soft-caps, layer patterns).
type describer interface{ describe() []string }

// Describe lists what f's architecture adds to its Config, one line each.
func Describe(f *gguf.File) ([]string, error) {
	c, a, err := configure(f)
	if err != nil {
		return nil, err
	}
	ss, err := slots(a, c)
	if err != nil {
		return nil, err
	}
	bound, err := match(f, ss)
	if err != nil {
		return nil, err
	}
	for _, b := range bound {
		b.w.Name = b.info.Name
	}
	if d, ok := a.(describer); ok {
		return d.describe(), nil
	}
	return nil, nil
}

func describeAttn(kind string, o AttnOpts) string {
	s := kind
	if o.Window > 0 {
		s += fmt.Sprintf(": sliding window %d", o.Window)
	} else {
		s += ": full"
	}
	if o.SoftCap != 0 {
		s += fmt.Sprintf(", score soft-cap %g", o.SoftCap)
	}
	if o.Scale != 0 {
		s += fmt.Sprintf(", query scale %.4g", o.Scale)
	}
	if o.Rope.Base != 0 {
		s += fmt.Sprintf(", rope base %g", o.Rope.Base)
	}
	if o.Rope.FreqScale != 0 && o.Rope.FreqScale != 1 {
		s += fmt.Sprintf(", rope freq scale %g", o.Rope.FreqScale)
	}
	return s
}
