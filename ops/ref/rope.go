package ref

import "math"

// RoPE rotates pairs of dims in each head of x [nTokens, nHeads, headDim]:
// pair i is (2i, 2i+1) in the normal layout and (i, i+nRot/2) in the neox
// layout, for i < nRot/2; dims from nRot on are copied. angle(t, i) is the
// rotation of pair i of token t, e.g. RoPEAngle of the token's position.
func RoPE(dst, x []float64, nTokens, nHeads, headDim, nRot int, neox bool, angle func(t, i int) float64) {
	for t := 0; t < nTokens; t++ {
		for h := 0; h < nHeads; h++ {
			base := (t*nHeads + h) * headDim
			for e := nRot; e < headDim; e++ {
				dst[base+e] = x[base+e]
			}
			for i := 0; i < nRot/2; i++ {
				i0, i1 := 2*i, 2*i+1
				if neox {
					i0, i1 = i, i+nRot/2
				}
				th := angle(t, i)
				c, s := math.Cos(th), math.Sin(th)
				x0, x1 := x[base+i0], x[base+i1]
				dst[base+i0] = x0*c - x1*s
				dst[base+i1] = x0*s + x1*c
			}
		}
	}
}

// RoPEAngle is the exact angle of pair i: pos * freqScale * base^(-2i/nRot).
func RoPEAngle(pos float64, i, nRot int, base, freqScale float64) float64 {
	return pos * freqScale * math.Pow(base, -2*float64(i)/float64(nRot))
}

// RoPEScaled is RoPE with both cos and sin multiplied by mscale (ggml's
// mscale: attn_factor, times YaRN's magnitude correction).
func RoPEScaled(dst, x []float64, nTokens, nHeads, headDim, nRot int, neox bool, angle func(t, i int) float64, mscale float64) {
	RoPE(dst, x, nTokens, nHeads, headDim, nRot, neox, angle)
	for t := 0; t < nTokens; t++ {
		for h := 0; h < nHeads; h++ {
			base := (t*nHeads + h) * headDim
			for e := 0; e < nRot; e++ {
				dst[base+e] *= mscale
			}
		}
	}
}

// YaRN holds ggml_rope_ext's scaling parameters, with ggml's meanings.
type YaRN struct {
	FreqScale, ExtFactor, AttnFactor float64
	BetaFast, BetaSlow               float64
	OrigCtx                          int
}

// CorrDims is ggml_rope_yarn_corr_dims in float64.
func (y YaRN) CorrDims(nRot int, base float64) (lo, hi float64) {
	corr := func(beta float64) float64 {
		return float64(nRot) * math.Log(float64(y.OrigCtx)/(beta*2*math.Pi)) / (2 * math.Log(base))
	}
	return math.Max(0, math.Floor(corr(y.BetaFast))), math.Min(float64(nRot-1), math.Ceil(corr(y.BetaSlow)))
}

// Angle is ggml's rope_yarn angle of pair i at pos with freq factor ff:
// theta_extrap = pos*base^(-2i/nRot)/ff, theta_interp = FreqScale*theta_extrap,
// mixed by ExtFactor*ramp(i) when ExtFactor != 0.
func (y YaRN) Angle(pos float64, i, nRot int, base, ff float64) float64 {
	extrap := pos * math.Pow(base, -2*float64(i)/float64(nRot)) / ff
	interp := y.FreqScale * extrap
	if y.ExtFactor == 0 {
		return interp
	}
	lo, hi := y.CorrDims(nRot, base)
	ramp := 1 - math.Min(1, math.Max(0, (float64(i)-lo)/math.Max(0.001, hi-lo)))
	mix := ramp * y.ExtFactor
	return interp*(1-mix) + extrap*mix
}

// MScale is ggml's magnitude scale: AttnFactor, times 1 + 0.1 ln(1/FreqScale)
// when ExtFactor != 0.
func (y YaRN) MScale() float64 {
	m := y.AttnFactor
	if y.ExtFactor != 0 {
		m *= 1 + 0.1*math.Log(1/y.FreqScale)
	}
	return m
}
