package model

import (
	"fmt"
	"math"
)

// gpt-oss: gpt-oss-20b and -120b (llama.cpp src/models/openai-moe.cpp).
// Attention with biases and a learned sink logit per head, sliding-window
// layers (window 128) alternating with full ones, YaRN RoPE; a mixture of
// experts whose router has a bias and whose weights are a softmax over the
// chosen experts' logits, with biased experts and the clamped SwiGLU.
type gptoss struct {
	Embd   Weight        `gguf:"token_embd.weight" shape:"vocab,dim"`
	Layers []gptossLayer `gguf:"blk"`
	Norm   Weight        `gguf:"output_norm.weight" shape:"dim"`
	Output Weight        `gguf:"output.weight" shape:"vocab,dim"`

	global, local AttnOpts
	swaPeriod     int
}

type gptossLayer struct {
	AttnNorm Weight `gguf:"attn_norm.weight" shape:"dim"`
	Attn     AttnWeights
	OBias    Weight `gguf:"attn_output.bias" shape:"dim"`
	Sinks    Weight `gguf:"attn_sinks.weight" shape:"heads"`
	FFNNorm  Weight `gguf:"post_attention_norm.weight" shape:"dim"`
	MoE      ExpertWeights
}

func init() { register("gpt-oss", func() Arch { return &gptoss{} }) }

func (a *gptoss) Configure(m *Meta, c *Config) {
	c.RopeMode = RopeNeox
	c.Experts = m.Uint("expert_count")
	c.ExpertsUsed = m.Uint("expert_used_count")
	c.ExpertFFN = m.Uint("expert_feed_forward_length")
	// llama.cpp: the window is required, the period defaults to 2 (even
	// layers local), the local RoPE base to the global one; q·k is scaled
	// by 1/sqrt(n_rot).
	a.swaPeriod = m.UintOr("attention.sliding_window_pattern", 2, 1)
	a.global = AttnOpts{Scale: float32(1 / math.Sqrt(float64(c.RopeDims)))}
	a.local = a.global
	a.local.Window = m.Uint("attention.sliding_window")
	a.local.Rope = LayerRope{Base: m.FloatOr("rope.freq_base_swa", c.RopeBase, true)}
}

func (a *gptoss) Forward(b Block) {
	b.Embed(a.Embd, 1)
	for li := range a.Layers {
		l := &a.Layers[li]
		b.Layer(li)
		attn := a.global
		if isSWA(li, a.swaPeriod) {
			attn = a.local
		}
		attn.Sinks = l.Sinks
		// q, k, v with their biases from rmsnorm(x)·attn_norm
		q, k, v := b.QKV(l.AttnNorm, &l.Attn)
		// x += attention(...)·Oᵀ + O bias
		b.ResidualBiased(b.Attention(li, q, k, v, attn), l.Attn.O, l.OBias)
		// x += Σ_top-k softmax(chosen logits)_e · (swiglu_oai(h·Gate_eᵀ+bg, h·Up_eᵀ+bu)·Down_eᵀ + bd)
		b.MoE(l.FFNNorm, &l.MoE, MoEOpts{Gating: GateSoftmaxTopK, Act: ActSwiGLUOAI})
	}
	b.Head(a.Norm, a.Output, 0)
}

func (a *gptoss) describe() []string {
	return []string{
		fmt.Sprintf("layers: %d of each %d sliding-window, the rest full", max(a.swaPeriod-1, 0), a.swaPeriod),
		describeAttn("local attention", a.local), describeAttn("global attention", a.global),
		"attention: a sink logit per head (attn_sinks), biases on q, k, v and the output",
		"experts: softmax over the chosen experts' router logits, biased experts, clamped SwiGLU (alpha 1.702, limit 7)",
	}
}
