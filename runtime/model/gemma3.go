package model

import (
	"fmt"
	"math"
)

// gemma3: Gemma 3 text (llama.cpp src/models/gemma3.cpp). Gemma 2's block
// with q/k RMS norms and no attention soft-cap; five sliding-window layers
// to each global one by default, the local ones with their own RoPE base
// (10000) and no scaling, the global ones with the file's base and linear
// scaling; the final soft-cap only when the file gives one.
type gemma3 struct {
	Embd   Weight        `gguf:"token_embd.weight" shape:"vocab,dim"`
	Layers []gemma3Layer `gguf:"blk"`
	Norm   Weight        `gguf:"output_norm.weight" shape:"dim"`
	Output Weight        `gguf:"output.weight|token_embd.weight" shape:"vocab,dim"`

	embedScale    float32
	global, local AttnOpts
	swaPeriod     int // 0: every layer global
	finalSoftCap  float32
}

type gemma3Layer struct {
	AttnNorm     Weight `gguf:"attn_norm.weight" shape:"dim"`
	Attn         AttnWeights
	QNorm        Weight `gguf:"attn_q_norm.weight" shape:"hd"`
	KNorm        Weight `gguf:"attn_k_norm.weight" shape:"hd"`
	PostAttnNorm Weight `gguf:"post_attention_norm.weight" shape:"dim"`
	FFNNorm      Weight `gguf:"ffn_norm.weight" shape:"dim"`
	FFN          GatedFFN
	PostFFNNorm  Weight `gguf:"post_ffw_norm.weight" shape:"dim"`
}

func init() { register("gemma3", func() Arch { return &gemma3{} }) }

func (a *gemma3) Configure(m *Meta, c *Config) {
	c.RopeMode = RopeNeox
	a.embedScale = float32(math.Sqrt(float64(c.Dim)))
	a.global = AttnOpts{Scale: gemmaQueryScale(c)}
	if window := m.UintOr("attention.sliding_window", 0, 0); window > 0 {
		a.swaPeriod = m.UintOr("attention.sliding_window_pattern", 6, 1)
		a.local = a.global
		a.local.Window = window
		a.local.Rope = LayerRope{Base: m.FloatOr("rope.freq_base_swa", 10000, true), FreqScale: 1}
	}
	a.finalSoftCap = float32(m.FloatOr("final_logit_softcapping", 0, false))
}

func (a *gemma3) Forward(b Block) {
	b.Embed(a.Embd, a.embedScale)
	for li := range a.Layers {
		l := &a.Layers[li]
		b.Layer(li)
		attn := a.global
		if isSWA(li, a.swaPeriod) {
			attn = a.local
		}
		q, k, v := b.QKV(l.AttnNorm, &l.Attn)
		b.HeadNorms(q, k, l.QNorm, l.KNorm) // per-head RMSNorm, before RoPE
		b.Residual(b.Attention(li, q, k, v, attn), l.Attn.O, l.PostAttnNorm)
		b.Residual(b.FFN(l.FFNNorm, &l.FFN, ActGELU), l.FFN.Down, l.PostFFNNorm)
	}
	b.Head(a.Norm, a.Output, a.finalSoftCap)
}

func (a *gemma3) describe() []string {
	lines := []string{describeAttn("global attention", a.global)}
	if a.swaPeriod > 0 {
		lines = append(lines, fmt.Sprintf("layers: %d of each %d sliding-window, the rest global", a.swaPeriod-1, a.swaPeriod),
			describeAttn("local attention", a.local))
	}
	cap := "none"
	if a.finalSoftCap != 0 {
		cap = fmt.Sprint(a.finalSoftCap)
	}
	return append(lines, fmt.Sprintf("embeddings × %.4g, final logit soft-cap %s", a.embedScale, cap))
}
