package model

import "fmt"

// phi3: Phi-3, Phi-3.5, Phi-4-mini (llama.cpp src/models/phi3.cpp). A
// llama-like block with a fused attn_qkv matrix and one ffn_up matrix
// holding gate and up (SwiGLU); NEOX RoPE; LongRoPE through per-pair
// frequency factors, the long ones when the context per sequence is past
// the original context, and the file's attention factor. llama.cpp runs
// Phi's sliding window as full attention, and so does this.
type phi3 struct {
	Embd      Weight      `gguf:"token_embd.weight" shape:"vocab,dim"`
	RopeLong  Weight      `gguf:"rope_factors_long.weight,opt" shape:"rot2"`
	RopeShort Weight      `gguf:"rope_factors_short.weight,opt" shape:"rot2"`
	Layers    []phi3Layer `gguf:"blk"`
	Norm      Weight      `gguf:"output_norm.weight" shape:"dim"`
	Output    Weight      `gguf:"output.weight|token_embd.weight" shape:"vocab,dim"`
	origCtx   int
}

type phi3Layer struct {
	AttnNorm Weight `gguf:"attn_norm.weight" shape:"dim"`
	Attn     AttnWeights
	FFNNorm  Weight `gguf:"ffn_norm.weight" shape:"dim"`
	FFN      FusedFFN
}

func init() { register("phi3", func() Arch { return &phi3{} }) }

func (a *phi3) Configure(m *Meta, c *Config) {
	c.RopeMode = RopeNeox
	a.origCtx = c.RopeOrigCtx
}

func (a *phi3) Forward(b Block) {
	b.Embed(a.Embd, 1)
	// llama.cpp's get_rope_factors: long factors past the original context.
	factors := a.RopeShort
	if b.MaxSeqLen() > a.origCtx && a.RopeLong.Has() {
		factors = a.RopeLong
	}
	attn := AttnOpts{Rope: LayerRope{Factors: factors}}
	for li := range a.Layers {
		l := &a.Layers[li]
		b.Layer(li)
		q, k, v := b.QKV(l.AttnNorm, &l.Attn)
		b.Residual(b.Attention(li, q, k, v, attn), l.Attn.O, Weight{})
		// x += (silu(h·Gateᵀ) * h·Upᵀ) · Downᵀ, Gate and Up the halves of ffn_up
		b.Residual(b.FFN(l.FFNNorm, &l.FFN, ActSiLU), l.FFN.Down, Weight{})
	}
	b.Head(a.Norm, a.Output, 0)
}

func (a *phi3) describe() []string {
	if !a.RopeLong.Has() && !a.RopeShort.Has() {
		return nil
	}
	return []string{fmt.Sprintf("rope: LongRoPE factors (long ones past a context of %d)", a.origCtx)}
}
