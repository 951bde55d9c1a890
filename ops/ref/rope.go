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
