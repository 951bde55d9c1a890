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

// GeluTanh is ggml_gelu's tanh approximation,
// 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x³))).
func GeluTanh(x float64) float64 {
	return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
}

// SwiGLUOAI is gpt-oss's clamped SwiGLU (ggml_swiglu_oai, alpha 1.702,
// limit 7): g = min(gate, 7), u = clamp(up, -7, 7), g·sigmoid(1.702g)·(u+1).
func SwiGLUOAI(gate, up float64) float64 {
	const alpha, limit = 1.702, 7.0
	g := math.Min(gate, limit)
	u := math.Max(-limit, math.Min(up, limit))
	return g / (1 + math.Exp(-alpha*g)) * (u + 1)
}

// GeluMul: dst[i] = GeluTanh(gate[i]) * up[i] (GeGLU).
func GeluMul(dst, gate, up []float64) {
	for i := range dst {
		dst[i] = GeluTanh(gate[i]) * up[i]
	}
}

// SwiGLUOAIMul: dst[i] = SwiGLUOAI(gate[i], up[i]).
func SwiGLUOAIMul(dst, gate, up []float64) {
	for i := range dst {
		dst[i] = SwiGLUOAI(gate[i], up[i])
	}
}

// SoftCap: dst[i] = cap * tanh(x[i] / cap).
func SoftCap(dst, x []float64, cap float64) {
	for i := range dst {
		dst[i] = cap * math.Tanh(x[i]/cap)
	}
}
