package model

// qwen3: Qwen3 dense (llama.cpp src/models/qwen3.cpp): NEOX RoPE and an
// RMSNorm over each head of q and k before it; head_dim may differ from
// dim/heads.
type qwen3 struct {
	Embd   Weight       `gguf:"token_embd.weight" shape:"vocab,dim"`
	Layers []qwen3Layer `gguf:"blk"`
	Norm   Weight       `gguf:"output_norm.weight" shape:"dim"`
	Output Weight       `gguf:"output.weight|token_embd.weight" shape:"vocab,dim"`
}

type qwen3Layer struct {
	AttnNorm Weight `gguf:"attn_norm.weight" shape:"dim"`
	Attn     AttnWeights
	QNorm    Weight `gguf:"attn_q_norm.weight" shape:"hd"`
	KNorm    Weight `gguf:"attn_k_norm.weight" shape:"hd"`
	FFNNorm  Weight `gguf:"ffn_norm.weight" shape:"dim"`
	FFN      GatedFFN
}

func init() { register("qwen3", func() Arch { return &qwen3{} }) }

func (a *qwen3) Configure(m *Meta, c *Config) { c.RopeMode = RopeNeox }

func (a *qwen3) Forward(b Block) {
	b.Embed(a.Embd, 1)
	for li := range a.Layers {
		l := &a.Layers[li]
		b.Layer(li)
		q, k, v := b.QKV(l.AttnNorm, &l.Attn)
		// per-head RMSNorm of q [n·heads, hd] and k [n·kvHeads, hd]
		b.HeadNorms(q, k, l.QNorm, l.KNorm)
		b.Residual(b.Attention(li, q, k, v, AttnOpts{}), l.Attn.O, Weight{})
		b.Residual(b.FFN(l.FFNNorm, &l.FFN, ActSiLU), l.FFN.Down, Weight{})
	}
	b.Head(a.Norm, a.Output, 0)
}
