package ref

import "math"

// Add: dst[i] = a[i] + b[i].
func Add(dst, a, b []float64) {
	for i := range dst {
		dst[i] = a[i] + b[i]
	}
}

// Mul: dst[i] = a[i] * b[i].
func Mul(dst, a, b []float64) {
	for i := range dst {
		dst[i] = a[i] * b[i]
	}
}

// Scale: dst[i] = x[i] * s.
func Scale(dst, x []float64, s float64) {
	for i := range dst {
		dst[i] = x[i] * s
	}
}

// Silu is x / (1 + exp(-x)); in float64 exp(100) is finite, so the plain
// formula is exact enough for every input the tests use.
func Silu(x float64) float64 { return x / (1 + math.Exp(-x)) }

// SiluMul: dst[i] = silu(gate[i]) * up[i].
func SiluMul(dst, gate, up []float64) {
	for i := range dst {
		dst[i] = Silu(gate[i]) * up[i]
	}
}

// AddRow: dst[r, c] = x[r, c] + bias[c] for x [rows, len(bias)].
func AddRow(dst, x, bias []float64) {
	n := len(bias)
	for i := range dst {
		dst[i] = x[i] + bias[i%n]
	}
}

// CopyRows: dst[r*dstStride+c] = src[r*srcStride+c] for r < rows, c < cols;
// the rest of dst is left as it is.
func CopyRows(dst, src []float64, rows, cols, dstStride, srcStride int) {
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			dst[r*dstStride+c] = src[r*srcStride+c]
		}
	}
}
