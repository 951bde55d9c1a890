package model

// qwen2moe: Qwen1.5-MoE, Qwen2-57B-A14B (llama.cpp src/models/qwen2moe.cpp):
// qwen2's attention (QKV biases, NEOX RoPE) and a mixture of experts whose
// softmax weights are not renormalised, plus a shared expert every token
// takes, scaled by sigmoid(h·ffn_gate_inp_shexp).
type qwen2moe struct {
	Embd   Weight          `gguf:"token_embd.weight" shape:"vocab,dim"`
	Layers []qwen2moeLayer `gguf:"blk"`
	Norm   Weight          `gguf:"output_norm.weight" shape:"dim"`
	Output Weight          `gguf:"output.weight" shape:"vocab,dim"`
}

type qwen2moeLayer struct {
	AttnNorm Weight `gguf:"attn_norm.weight" shape:"dim"`
	Attn     AttnWeights
	FFNNorm  Weight `gguf:"ffn_norm.weight" shape:"dim"`
	MoE      ExpertWeights
	Shared   SharedExpert
}

func init() { register("qwen2moe", func() Arch { return &qwen2moe{} }) }

func (a *qwen2moe) Configure(m *Meta, c *Config) {
	c.RopeMode = RopeNeox
	requireExperts(m, c)
	if c.SharedFFN == 0 {
		c.SharedFFN = c.FFN
	}
}

func (a *qwen2moe) Forward(b Block) {
	b.Embed(a.Embd, 1)
	for li := range a.Layers {
		l := &a.Layers[li]
		b.Layer(li)
		q, k, v := b.QKV(l.AttnNorm, &l.Attn)
		b.Residual(b.Attention(li, q, k, v, AttnOpts{}), l.Attn.O, Weight{})
		// x += Σ_top-k p_e · FFN_e(h) + sigmoid(h·shexp_gate) · FFN_shexp(h)
		b.MoE(l.FFNNorm, &l.MoE, MoEOpts{Gating: GateSoftmax, Act: ActSiLU, Shared: &l.Shared})
	}
	b.Head(a.Norm, a.Output, 0)
}
