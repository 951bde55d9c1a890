// Package ref holds float64 CPU references for every GPU op: the plainest
// loops that could be right, standard library only.
package ref

import "math"

// RMSNorm: dst[r,c] = x[r,c] / sqrt(mean_c x[r,c]^2 + eps) * w[c].
func RMSNorm(dst, x, w []float64, rows, cols int, eps float64) {
	for r := 0; r < rows; r++ {
		row := x[r*cols : (r+1)*cols]
		s := 0.0
		for _, v := range row {
			s += v * v
		}
		scale := 1 / math.Sqrt(s/float64(cols)+eps)
		for c, v := range row {
			dst[r*cols+c] = v * scale * w[c]
		}
	}
}
