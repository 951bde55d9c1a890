package model

// qwen3moe: Qwen3-30B-A3B, Qwen3-235B-A22B, Qwen3-Coder (llama.cpp
// src/models/qwen3moe.cpp): qwen3's attention with q/k norms, and instead
// of the FFN a mixture of experts: softmax router, top-k, the chosen
// weights renormalised to sum one, SwiGLU experts.
type qwen3moe struct {
	Embd   Weight          `gguf:"token_embd.weight" shape:"vocab,dim"`
	Layers []qwen3moeLayer `gguf:"blk"`
	Norm   Weight          `gguf:"output_norm.weight" shape:"dim"`
	Output Weight          `gguf:"output.weight|token_embd.weight" shape:"vocab,dim"`
}

type qwen3moeLayer struct {
	AttnNorm Weight `gguf:"attn_norm.weight" shape:"dim"`
	Attn     AttnWeights
	QNorm    Weight `gguf:"attn_q_norm.weight" shape:"hd"`
	KNorm    Weight `gguf:"attn_k_norm.weight" shape:"hd"`
	FFNNorm  Weight `gguf:"ffn_norm.weight" shape:"dim"`
	MoE      ExpertWeights
}

func init() { register("qwen3moe", func() Arch { return &qwen3moe{} }) }

func (a *qwen3moe) Configure(m *Meta, c *Config) {
	c.RopeMode = RopeNeox
	requireExperts(m, c)
}

// requireExperts is the expert metadata an MoE architecture needs, with
// llama.cpp's default expert FFN length n_ff / n_expert_used (qwen2moe,
// qwen3moe).
func requireExperts(m *Meta, c *Config) {
	c.Experts = m.Uint("expert_count")
	c.ExpertsUsed = m.Uint("expert_used_count")
	if c.ExpertFFN == 0 && c.ExpertsUsed > 0 {
		c.ExpertFFN = c.FFN / c.ExpertsUsed
	}
}

func (a *qwen3moe) Forward(b Block) {
	b.Embed(a.Embd, 1)
	for li := range a.Layers {
		l := &a.Layers[li]
		b.Layer(li)
		q, k, v := b.QKV(l.AttnNorm, &l.Attn)
		b.HeadNorms(q, k, l.QNorm, l.KNorm)
		b.Residual(b.Attention(li, q, k, v, AttnOpts{}), l.Attn.O, Weight{})
		// x += Σ_top-k w_e · (silu(h·Gate_eᵀ) * h·Up_eᵀ) · Down_eᵀ, h = rmsnorm(x)·ffn_norm
		b.MoE(l.FFNNorm, &l.MoE, MoEOpts{Gating: GateSoftmax, Normalize: true, Act: ActSiLU})
	}
	b.Head(a.Norm, a.Output, 0)
}
