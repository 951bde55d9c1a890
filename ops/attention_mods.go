package ops

import (
	"fmt"
	"math"
)

// attnMods are the score modifications AttentionOptions and PagedOptions
// share (see their SoftCap, Window and Sinks fields).
type attnMods struct {
	SoftCap float32
	Window  int
	Sinks   *Tensor
}

func (m attnMods) check(heads int, out Tensor) error {
	if !(m.SoftCap >= 0) || math.IsInf(float64(m.SoftCap), 0) {
		return fmt.Errorf("soft-cap %v must be finite and >= 0 (0: off)", m.SoftCap)
	}
	if m.Window < 0 || !fitsU32(m.Window) {
		return fmt.Errorf("window %d must be >= 0 (0: off) and fit 32 bits", m.Window)
	}
	if m.Sinks != nil {
		s := *m.Sinks
		if s.DType != F32 || s.Len() != heads {
			return fmt.Errorf("sinks %s must be f32 [%d], one per head", s, heads)
		}
		if s.Buf == out.Buf {
			return fmt.Errorf("sinks %s must not share out's buffer", s)
		}
	}
	return nil
}

// features selects the shader variants.
func (m attnMods) features() attnFeatures {
	return attnFeatures{SoftCap: m.SoftCap > 0, Window: m.Window > 0, Sinks: m.Sinks != nil}
}

// setParams fills the uniform's scale and modification fields. Without a
// soft-cap q is pre-multiplied by scale·log2(e) (the kernels use exp2);
// with one, by scale/cap, and the tanh is multiplied by cap·log2(e).
func (m attnMods) setParams(prm *attnParams, scale float32, sinkOff uint32) {
	prm.Scale = scale * math.Log2E
	if m.SoftCap > 0 {
		prm.Scale = scale / m.SoftCap
		prm.SoftCap = m.SoftCap * math.Log2E
	}
	prm.Window, prm.SinkOff = uint32(m.Window), sinkOff
}

// windowStart is the first key a query at pos sees with a sliding window
// (llama.cpp LLAMA_SWA_TYPE_STANDARD masks key j when pos-j >= window),
// 0 without one; the shaders' win_lo.
func windowStart(pos, window int) int {
	if window > 0 && pos >= window {
		return pos + 1 - window
	}
	return 0
}

// attnFeatures are the shader variants of the score modifications; the
// zero value is the plain kernel (and its old pipeline label).
type attnFeatures struct {
	SoftCap, Window, Sinks bool
}

func (f attnFeatures) String() string {
	s := ""
	if f.SoftCap {
		s += "_softcap"
	}
	if f.Window {
		s += "_swa"
	}
	if f.Sinks {
		s += "_sinks"
	}
	return s
}

// split is the split-K kernel's part: the sinks enter in the combine.
func (f attnFeatures) split() attnFeatures { f.Sinks = false; return f }

func (f attnFeatures) template(data map[string]any, bindSinks int) map[string]any {
	data["SoftCap"], data["Window"], data["Sinks"], data["BindSinks"] = f.SoftCap, f.Window, f.Sinks, bindSinks
	return data
}
