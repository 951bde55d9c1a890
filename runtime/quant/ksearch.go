package quant

import "math"

// The scale searches below follow ggml's reference quantisers
// (make_qkx2_quants, make_qx_quants with rmse_type 1, make_q3_quants) step
// by step in float32, so encoded blocks match ggml's in all but rounding
// corner cases. Products are rounded explicitly (float32(a*b)) where a
// fused multiply-add would change the result.

// groupMaxEps is ggml's GROUP_MAX_EPS: a group below it is all zero.
const groupMaxEps = 1e-15

func abs32(f float32) float32 { return float32(math.Abs(float64(f))) }

// searchScaleMin fits x ≈ scale*L + min with L in [0, nmax] and min <= 0,
// weighting errors by w (absolute errors when useMad, squared otherwise),
// trying nstep+1 scales around nmax/(max-min). It returns the scale and
// -min (a non-negative offset) and fills L. laux is scratch of len(x).
func searchScaleMin(x, w []float32, L, laux []uint8, nmax int, rmin, rdelta float32, nstep int, useMad bool) (scale, negMin float32) {
	lo, hi := x[0], x[0]
	sumW := w[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < len(x); i++ {
		lo, hi = min(lo, x[i]), max(hi, x[i])
		sumW += w[i]
		sumX += float32(w[i] * x[i])
	}
	lo = min(lo, 0)
	if hi == lo {
		clear(L)
		return 0, -lo
	}
	fmax := float32(nmax)
	iscale := fmax / (hi - lo)
	scale = 1 / iscale
	errOf := func(diff float32) float32 {
		if useMad {
			return abs32(diff)
		}
		return float32(diff * diff)
	}
	var bestErr float32
	for i, v := range x {
		l := clampInt(nearestInt(float32(iscale*(v-lo))), 0, nmax)
		L[i] = uint8(l)
		diff := float32(float32(scale*float32(l))+lo) - v
		bestErr += float32(w[i] * errOf(diff))
	}
	if nstep < 1 {
		return scale, -lo
	}
	for is := 0; is <= nstep; is++ {
		iscale = (float32(rmin+float32(rdelta*float32(is))) + fmax) / (hi - lo)
		var sumL, sumL2, sumXL float32
		for i, v := range x {
			l := clampInt(nearestInt(float32(iscale*(v-lo))), 0, nmax)
			laux[i] = uint8(l)
			wl := float32(w[i] * float32(l))
			sumL += wl
			sumL2 += float32(wl * float32(l))
			sumXL += float32(wl * v)
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D > 0 {
			thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
			thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
			if thisMin > 0 {
				thisMin = 0
				thisScale = sumXL / sumL2
			}
			var curErr float32
			for i, v := range x {
				diff := float32(float32(thisScale*float32(laux[i]))+thisMin) - v
				curErr += float32(w[i] * errOf(diff))
			}
			if curErr < bestErr {
				copy(L, laux)
				bestErr, scale, lo = curErr, thisScale, thisMin
			}
		}
	}
	return scale, -lo
}

// searchScaleSymmetric fits x ≈ scale*(L-nmax) with L-nmax in [-nmax,
// nmax-1], weighting squared errors by x² (ggml's make_qx_quants with
// rmse_type 1 and no importance weights), trying 19 scales.
func searchScaleSymmetric(x []float32, L []int8, nmax int) float32 {
	var amax, mx float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, mx = a, v
		}
	}
	if amax < groupMaxEps {
		clear(L)
		return 0
	}
	fmax := float32(nmax)
	quantAll := func(iscale float32, store bool) (sumLX, sumL2 float32) {
		for i, v := range x {
			l := clampInt(nearestInt(float32(iscale*v)), -nmax, nmax-1)
			if store {
				L[i] = int8(l + nmax)
			}
			w := float32(v * v)
			sumLX += float32(float32(w*v) * float32(l))
			sumL2 += float32(float32(w*float32(l)) * float32(l))
		}
		return sumLX, sumL2
	}
	iscale := -fmax / mx
	sumLX, sumL2 := quantAll(iscale, true)
	var scale float32
	if sumL2 != 0 {
		scale = sumLX / sumL2
	}
	best := float32(scale * sumLX)
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fmax + float32(0.1*float32(is))) / mx
		lx, l2 := quantAll(iscale, false)
		if l2 > 0 && float32(lx*lx) > float32(best*l2) {
			quantAll(iscale, true)
			scale = lx / l2
			best = float32(scale * lx)
		}
	}
	return scale
}

// searchScaleQ3 fits x ≈ scale*l with l in [-nmax, nmax-1] and then
// improves single quants while the x²-weighted fit gets better (ggml's
// make_q3_quants with do_rmse). L receives l+nmax.
func searchScaleQ3(x []float32, L []int8, nmax int) float32 {
	var amax, mx float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, mx = a, v
		}
	}
	if amax < groupMaxEps {
		clear(L)
		return 0
	}
	iscale := -float32(nmax) / mx
	var sumLX, sumL2 float32
	for i, v := range x {
		l := clampInt(nearestInt(float32(iscale*v)), -nmax, nmax-1)
		L[i] = int8(l)
		w := float32(v * v)
		sumLX += float32(float32(w*v) * float32(l))
		sumL2 += float32(float32(w*float32(l)) * float32(l))
	}
	for try := 0; try < 5; try++ {
		changed := 0
		for i, v := range x {
			w := float32(v * v)
			li := float32(L[i])
			slx := sumLX - float32(float32(w*v)*li)
			if slx > 0 {
				sl2 := sumL2 - float32(float32(w*li)*li)
				nl := clampInt(nearestInt(float32(v*sl2)/slx), -nmax, nmax-1)
				if nl != int(L[i]) {
					fl := float32(nl)
					slx += float32(float32(w*v) * fl)
					sl2 += float32(float32(w*fl) * fl)
					if sl2 > 0 && float32(float32(slx*slx)*sumL2) > float32(float32(sumLX*sumLX)*sl2) {
						L[i] = int8(nl)
						sumLX, sumL2 = slx, sl2
						changed++
					}
				}
			}
		}
		if changed == 0 {
			break
		}
	}
	for i := range L {
		L[i] += int8(nmax)
	}
	if sumL2 > 0 {
		return sumLX / sumL2
	}
	return 0
}

// sqrt32 is C's sqrtf (a correctly rounded float64 square root stays
// correctly rounded when narrowed).
func sqrt32(f float32) float32 { return float32(math.Sqrt(float64(f))) }
