package ops

import (
	"fmt"
	"math"

	"github.com/wgllm/wgllm/runtime/gpu"
)

// Activation is the gate activation of a gated FFN, out = act(gate, up):
// chosen per architecture, applied by GatedAct (prefill, unfused) and by
// MatVecOpts.Act (the fused decode Pair matvec) with the same WGSL, so both
// paths give the same values.
type Activation uint8

const (
	// ActSiLU: silu(gate) * up, SwiGLU (llama, qwen, phi3, glm4; ggml_swiglu).
	ActSiLU Activation = iota
	// ActGELU: gelu(gate) * up with the tanh approximation
	// gelu(x) = 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x³))), GeGLU (gemma2,
	// gemma3; ggml_geglu / ggml_gelu). Computed as x·sigmoid(2·sqrt(2/pi)(x +
	// 0.044715x³)), the same function without tanh's overflow or the
	// cancellation in 1+tanh. llama.cpp's CPU backend looks it up in an f16
	// table (ggml_table_gelu_f16); this is the exact formula.
	ActGELU
	// ActSwiGLUOAI: gpt-oss's clamped SwiGLU (ggml_swiglu_oai with alpha
	// 1.702, limit 7): g = min(gate, 7), u = clamp(up, -7, 7),
	// out = g·sigmoid(1.702·g)·(u + 1).
	ActSwiGLUOAI
)

// SwiGLUOAIAlpha and SwiGLUOAILimit are gpt-oss's constants for ActSwiGLUOAI
// (llama.cpp's build_ffn LLM_FFN_SWIGLU_OAI_MOE: alpha 1.702, limit 7.0).
const (
	SwiGLUOAIAlpha = 1.702
	SwiGLUOAILimit = 7.0
)

var activationNames = [...]string{ActSiLU: "silu", ActGELU: "gelu", ActSwiGLUOAI: "swiglu_oai"}

func (a Activation) String() string {
	if int(a) < len(activationNames) {
		return activationNames[a]
	}
	return fmt.Sprintf("activation(%d)", a)
}

func (a Activation) valid() bool { return int(a) < len(activationNames) }

// gatedOps maps an activation to its elementwise op; ActSiLU stays SiluMul's
// op (and pipeline) so existing dispatches are unchanged.
var gatedOps = [...]elemOp{ActSiLU: opSiluMul, ActGELU: opGeluMul, ActSwiGLUOAI: opSwiGLUOAI}

// GatedAct writes dst = act(gate, up) elementwise (f32): the gated FFN's
// activation on the unfused (prefill) path. GatedAct(enc, d, g, u, ActSiLU)
// is SiluMul. dst may be gate or up (in place). Every finite input gives a
// finite output: the sigmoids are computed from exp(-|x|).
func GatedAct(enc *gpu.Encoder, dst, gate, up Tensor, act Activation) error {
	if !act.valid() {
		return fmt.Errorf("ops.GatedAct: unknown activation %s", act)
	}
	return binaryOp(enc, gatedOps[act], "GatedAct", dst, gate, up)
}

// SoftCap writes dst = cap·tanh(x/cap) elementwise (f32); dst may be x (in
// place), x scaled by 1/cap (rounded once on the host), as ggml_scale does. It is gemma2/gemma3's final-logit soft-cap
// (final_logit_softcapping, 30 in gemma2; llama.cpp scales by 1/cap, applies
// ggml_tanh, scales by cap). tanh is evaluated without overflow for any
// finite x (see tanh_stable in common.wgsl). cap must be positive and finite.
func SoftCap(enc *gpu.Encoder, dst, x Tensor, cap float32) error {
	if !(cap > 0) || math.IsInf(float64(cap), 0) {
		return fmt.Errorf("ops.SoftCap: cap %v must be positive and finite", cap)
	}
	if err := sameF32("SoftCap", dst, x); err != nil {
		return err
	}
	return elemDispatch(enc, opSoftCap, "SoftCap", dst, x, nil, elemParams{Scale: cap, Inv: float32(1 / float64(cap))})
}
