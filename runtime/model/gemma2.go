package model

import (
	"fmt"
	"math"
)

// gemma2: Gemma 2 (llama.cpp src/models/gemma2.cpp). Embeddings scaled by
// sqrt(dim); each block normalises the attention and FFN outputs again
// before adding them (post-norms); GELU-tanh gated FFN; attention scores
// soft-capped with tanh; sliding-window layers alternating with global
// ones; the final logits soft-capped too; the head tied to token_embd.
type gemma2 struct {
	Embd   Weight        `gguf:"token_embd.weight" shape:"vocab,dim"`
	Layers []gemma2Layer `gguf:"blk"`
	Norm   Weight        `gguf:"output_norm.weight" shape:"dim"`
	Output Weight        `gguf:"output.weight|token_embd.weight" shape:"vocab,dim"`

	embedScale    float32
	global, local AttnOpts // every swaPeriod-th layer is global
	swaPeriod     int
	finalSoftCap  float32
}

type gemma2Layer struct {
	AttnNorm     Weight `gguf:"attn_norm.weight" shape:"dim"`
	Attn         AttnWeights
	PostAttnNorm Weight `gguf:"post_attention_norm.weight" shape:"dim"`
	FFNNorm      Weight `gguf:"ffn_norm.weight" shape:"dim"`
	FFN          GatedFFN
	PostFFNNorm  Weight `gguf:"post_ffw_norm.weight" shape:"dim"`
}

func init() { register("gemma2", func() Arch { return &gemma2{} }) }

func (a *gemma2) Configure(m *Meta, c *Config) {
	c.RopeMode = RopeNeox
	a.embedScale = float32(math.Sqrt(float64(c.Dim)))
	// llama.cpp's defaults when the keys are absent: window 4096, period 2
	// (even layers local), caps 50 and 30; the query scale by model size.
	a.swaPeriod = m.UintOr("attention.sliding_window_pattern", 2, 1)
	a.global = AttnOpts{Scale: gemmaQueryScale(c), SoftCap: float32(m.FloatOr("attn_logit_softcapping", 50, true))}
	a.local = a.global
	a.local.Window = m.UintOr("attention.sliding_window", 4096, 1)
	a.local.Rope = LayerRope{Base: m.FloatOr("rope.freq_base_swa", c.RopeBase, true), FreqScale: c.RopeScale}
	a.finalSoftCap = float32(m.FloatOr("final_logit_softcapping", 30, true))
}

// gemmaQueryScale is llama.cpp's f_attention_scale: 1/sqrt(head dim), but
// 1/sqrt(dim/heads) for the 27B models (46 or 62 layers).
func gemmaQueryScale(c *Config) float32 {
	d := c.HeadDim
	if (c.Arch == "gemma2" && c.Layers == 46) || (c.Arch == "gemma3" && c.Layers == 62) {
		d = c.Dim / c.Heads
	}
	return float32(1 / math.Sqrt(float64(d)))
}

// isSWA is llama.cpp's set_swa_pattern: in each period of layers all but
// the last are sliding-window.
func isSWA(li, period int) bool { return period > 0 && li%period < period-1 }

func (a *gemma2) Forward(b Block) {
	// x [n, dim] = token_embd[tokens] · sqrt(dim)
	b.Embed(a.Embd, a.embedScale)
	for li := range a.Layers {
		l := &a.Layers[li]
		b.Layer(li)
		attn := a.global
		if isSWA(li, a.swaPeriod) {
			attn = a.local
		}
		q, k, v := b.QKV(l.AttnNorm, &l.Attn)
		// x += rmsnorm(attention · Oᵀ)·post_attention_norm
		b.Residual(b.Attention(li, q, k, v, attn), l.Attn.O, l.PostAttnNorm)
		// x += rmsnorm((gelu(h·Gateᵀ) * h·Upᵀ) · Downᵀ)·post_ffw_norm
		b.Residual(b.FFN(l.FFNNorm, &l.FFN, ActGELU), l.FFN.Down, l.PostFFNNorm)
	}
	// logits = cap·tanh(rmsnorm(x)·output_norm · outputᵀ / cap)
	b.Head(a.Norm, a.Output, a.finalSoftCap)
}

func (a *gemma2) describe() []string {
	return []string{
		fmt.Sprintf("layers: %d of each %d sliding-window, the rest global", max(a.swaPeriod-1, 0), a.swaPeriod),
		describeAttn("local attention", a.local), describeAttn("global attention", a.global),
		fmt.Sprintf("embeddings × %.4g, final logit soft-cap %g", a.embedScale, a.finalSoftCap),
	}
}
