package model

// llama: Llama 1/2/3/3.1+, TinyLlama, Mistral, SmolLM, Mixtral (experts), ... (llama.cpp
// src/models/llama.cpp). Pre-norm blocks: attention then a SwiGLU FFN,
// each added to the residual stream. Llama 3.1+ carries its rope scaling
// as rope_freqs.weight (per-pair frequency divisors), not as keys.
type llama struct {
	Embd      Weight       `gguf:"token_embd.weight" shape:"vocab,dim"`
	RopeFreqs Weight       `gguf:"rope_freqs.weight,opt" shape:"rot2"`
	Layers    []llamaLayer `gguf:"blk"`
	Norm      Weight       `gguf:"output_norm.weight" shape:"dim"`
	Output    Weight       `gguf:"output.weight|token_embd.weight" shape:"vocab,dim"`
	ropeMode  RopeMode     // qwen2 is this block with NEOX RoPE
}

type llamaLayer struct {
	AttnNorm Weight `gguf:"attn_norm.weight" shape:"dim"`
	Attn     AttnWeights
	FFNNorm  Weight        `gguf:"ffn_norm.weight" shape:"dim"`
	FFN      GatedFFN      `gguf:",dense"`
	MoE      ExpertWeights `gguf:",experts"` // Mixtral
}

func init() { register("llama", func() Arch { return &llama{} }) }

func (a *llama) Configure(m *Meta, c *Config) {
	c.RopeMode = a.ropeMode
	if c.Arch == "llama" && c.RopeDims != c.HeadDim { // llama.cpp: "invalid n_rot"
		m.fail("llama.rope.dimension_count %d must equal the head dim %d", c.RopeDims, c.HeadDim)
	}
	if c.Experts > 0 && c.ExpertFFN == 0 { // Mixtral: each expert is an FFN of feed_forward_length
		c.ExpertFFN = c.FFN
	}
}

func (a *llama) Forward(b Block) {
	// x [n, dim] = token_embd[tokens]
	b.Embed(a.Embd, 1)
	attn := AttnOpts{Rope: LayerRope{Factors: a.RopeFreqs}}
	for li := range a.Layers {
		l := &a.Layers[li]
		b.Layer(li)
		// q [n, heads·hd], k, v [n, kvHeads·hd] from rmsnorm(x)·attn_norm
		q, k, v := b.QKV(l.AttnNorm, &l.Attn)
		// x += attention(rope(q), rope(k), v) · Oᵀ
		b.Residual(b.Attention(li, q, k, v, attn), l.Attn.O, Weight{})
		if l.MoE.Router.Has() {
			// Mixtral: x += Σ_top-k w_e · FFN_e(h), weights renormalised
			b.MoE(l.FFNNorm, &l.MoE, MoEOpts{Gating: GateSoftmax, Normalize: true, Act: ActSiLU})
			continue
		}
		// x += (silu(h·Gateᵀ) * h·Upᵀ) · Downᵀ, h = rmsnorm(x)·ffn_norm
		b.Residual(b.FFN(l.FFNNorm, &l.FFN, ActSiLU), l.FFN.Down, Weight{})
	}
	// logits [rows, vocab] = rmsnorm(x)·output_norm · outputᵀ
	b.Head(a.Norm, a.Output, 0)
}

func (a *llama) describe() []string {
	if !a.RopeFreqs.Has() {
		return nil
	}
	return []string{"rope: per-pair frequency factors from rope_freqs.weight (Llama 3.1+ scaling)"}
}
