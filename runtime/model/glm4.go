package model

// glm4: GLM-4-0414 and GLM-Z1 (llama.cpp src/models/glm4.cpp). Partial
// rotary RoPE (the file's dimension_count of each head, adjacent pairs),
// q/k/v biases, the attention and FFN outputs normalised again before the
// residual add (post-norms), gate and up in one ffn_up matrix (SwiGLU).
type glm4 struct {
	Embd   Weight      `gguf:"token_embd.weight" shape:"vocab,dim"`
	Layers []glm4Layer `gguf:"blk"`
	Norm   Weight      `gguf:"output_norm.weight" shape:"dim"`
	Output Weight      `gguf:"output.weight|token_embd.weight" shape:"vocab,dim"`
}

type glm4Layer struct {
	AttnNorm     Weight `gguf:"attn_norm.weight" shape:"dim"`
	Attn         AttnWeights
	PostAttnNorm Weight `gguf:"post_attention_norm.weight" shape:"dim"`
	FFNNorm      Weight `gguf:"ffn_norm.weight" shape:"dim"`
	FFN          FusedFFN
	PostFFNNorm  Weight `gguf:"post_ffw_norm.weight" shape:"dim"`
}

func init() { register("glm4", func() Arch { return &glm4{} }) }

func (a *glm4) Configure(m *Meta, c *Config) { c.RopeMode = RopeNormal }

func (a *glm4) Forward(b Block) {
	b.Embed(a.Embd, 1)
	for li := range a.Layers {
		l := &a.Layers[li]
		b.Layer(li)
		q, k, v := b.QKV(l.AttnNorm, &l.Attn)
		// rope on the first RopeDims of each head only
		b.Residual(b.Attention(li, q, k, v, AttnOpts{}), l.Attn.O, l.PostAttnNorm)
		b.Residual(b.FFN(l.FFNNorm, &l.FFN, ActSiLU), l.FFN.Down, l.PostFFNNorm)
	}
	b.Head(a.Norm, a.Output, 0)
}
