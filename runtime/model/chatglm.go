package model

// chatglm: ChatGLM3 and GLM-4-9B (llama.cpp src/models/chatglm.cpp). A
// pre-norm block with a fused attn_qkv matrix and bias, partial rotary
// RoPE (adjacent pairs over the file's dimension_count), and gate and up in
// one ffn_up matrix (SwiGLU).
type chatglm struct {
	Embd   Weight         `gguf:"token_embd.weight" shape:"vocab,dim"`
	Layers []chatglmLayer `gguf:"blk"`
	Norm   Weight         `gguf:"output_norm.weight" shape:"dim"`
	Output Weight         `gguf:"output.weight|token_embd.weight" shape:"vocab,dim"`
}

type chatglmLayer struct {
	AttnNorm Weight `gguf:"attn_norm.weight" shape:"dim"`
	Attn     AttnWeights
	FFNNorm  Weight `gguf:"ffn_norm.weight" shape:"dim"`
	FFN      FusedFFN
}

func init() { register("chatglm", func() Arch { return &chatglm{} }) }

func (a *chatglm) Configure(m *Meta, c *Config) { c.RopeMode = RopeNormal }

func (a *chatglm) Forward(b Block) {
	b.Embed(a.Embd, 1)
	for li := range a.Layers {
		l := &a.Layers[li]
		b.Layer(li)
		q, k, v := b.QKV(l.AttnNorm, &l.Attn)
		b.Residual(b.Attention(li, q, k, v, AttnOpts{}), l.Attn.O, Weight{})
		b.Residual(b.FFN(l.FFNNorm, &l.FFN, ActSiLU), l.FFN.Down, Weight{})
	}
	b.Head(a.Norm, a.Output, 0)
}
