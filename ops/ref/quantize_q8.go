package ref

import "math"

// QuantizeQ8 models ops.QuantizeQ8 exactly on one row of f32 values x
// (len a multiple of 32): per block of 32, amax = max |x|, the scale
// d = f32(amax * f32(1/127)) and quants q = round(127 x / amax), ties away
// from zero (0 where amax is 0). It returns the quants and the scales.
func QuantizeQ8(x []float64) (q []int, d []float64) {
	inv := float64(float32(1.0 / 127))
	q = make([]int, len(x))
	d = make([]float64, len(x)/32)
	for b := range d {
		blk := x[32*b : 32*b+32]
		amax := 0.0
		for _, v := range blk {
			amax = math.Max(amax, math.Abs(v))
		}
		d[b] = float64(float32(amax * inv))
		if amax == 0 {
			continue
		}
		for i, v := range blk {
			// 127 * v is exact in float64, and the quotient rounds to the
			// right side of every half (an exact half stays exact).
			q[32*b+i] = int(math.Round(127 * v / amax))
		}
	}
	return q, d
}

// DequantizeQ8 is x as the int8 matvec sees it: each quant times its
// block's scale.
func DequantizeQ8(q []int, d []float64) []float64 {
	out := make([]float64, len(q))
	for i, v := range q {
		out[i] = float64(v) * d[i/32]
	}
	return out
}
