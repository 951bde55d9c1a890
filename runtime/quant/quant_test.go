package quant_test

import (
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/quant"
)

// relRMS is ||got-want|| / ||want||.
func relRMS(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num / den)
}

func gaussian(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

func roundTrip(t *testing.T, typ gguf.GGMLType, x []float32) []float32 {
	t.Helper()
	q, err := quant.Quantize(typ, x)
	if err != nil {
		t.Fatalf("Quantize(%s): %v", typ, err)
	}
	if len(q) != typ.RowBytes(len(x)) {
		t.Fatalf("Quantize(%s) gave %d bytes, want %d", typ, len(q), typ.RowBytes(len(x)))
	}
	y, err := quant.Dequantize(typ, q, len(x))
	if err != nil {
		t.Fatalf("Dequantize(%s): %v", typ, err)
	}
	return y
}

// Relative RMS round-trip error on N(0,1) data, 64 super-blocks. The
// bounds sit about 15% above what ggml's reference quantisers reach here
// (measured: F16 2.1e-4, BF16 1.7e-3, Q8_0 0.53%, Q4_0 8.5%, Q4_1 7.8%,
// Q5_0 4.2%, Q5_1 3.8%, Q2_K 29.5%, Q3_K 15.0%, Q4_K 7.1%, Q5_K 3.6%,
// Q6_K 1.8%, IQ4_NL 7.6%, IQ4_XS 7.7%, MXFP4 11.5%), so a weaker algorithm
// or a layout slip fails.
var gaussianBound = map[gguf.GGMLType]float64{
	gguf.F32: 0, gguf.F16: 2.5e-4, gguf.BF16: 2e-3,
	gguf.Q8_0: 0.006, gguf.Q4_0: 0.097, gguf.Q4_1: 0.09, gguf.Q5_0: 0.049, gguf.Q5_1: 0.044,
	gguf.Q2_K: 0.34, gguf.Q3_K: 0.173, gguf.Q4_K: 0.082, gguf.Q5_K: 0.042, gguf.Q6_K: 0.021,
	gguf.IQ4_NL: 0.087, gguf.IQ4_XS: 0.089, gguf.MXFP4: 0.133,
}

func TestRoundTripGaussian(t *testing.T) {
	for _, typ := range quant.Types() {
		bound, ok := gaussianBound[typ]
		if !ok {
			t.Fatalf("no bound for %s", typ)
		}
		x := gaussian(rand.New(rand.NewSource(int64(typ)+1)), 256*64)
		got := relRMS(roundTrip(t, typ, x), x)
		if got > bound || (typ != gguf.F32 && got == 0) {
			t.Errorf("%s: relative RMS error %.5f, want (0, %g]", typ, got, bound)
		}
	}
}

// TestGGMLQuantizeFnsBounds repeats llama.cpp's tests/test-quantize-fns.cpp
// quantisation check with its data (0.1 + 2cos(i), 4096 values), its metric
// (sqrt(sum of squared errors) / n) and its limits.
func TestGGMLQuantizeFnsBounds(t *testing.T) {
	const n = 32 * 128
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(0.1 + 2*math.Cos(float64(float32(i))))
	}
	for _, typ := range quant.Types() {
		limit := 0.002
		switch typ {
		case gguf.Q2_K:
			limit = 0.0075
		case gguf.Q3_K:
			limit = 0.0040
		}
		y := roundTrip(t, typ, x)
		var sum float64
		for i := range x {
			d := float64(x[i]) - float64(y[i])
			sum += d * d
		}
		if e := math.Sqrt(sum) / n; !(e < limit) {
			t.Errorf("%s: ggml total quantisation error %.6f, limit %g", typ, e, limit)
		}
	}
}

// Odd lengths: one block, and a count of blocks that is not a power of two.
func TestOddLengths(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for _, typ := range quant.Types() {
		bs := typ.BlockSize()
		for _, blocks := range []int{1, 3, 37} {
			if bs == 1 {
				blocks = blocks*7 + 2
			}
			x := gaussian(rng, bs*blocks)
			got := relRMS(roundTrip(t, typ, x), x)
			// A single block has fewer values to average over, so double the bound.
			if bound := 2 * gaussianBound[typ]; got > bound {
				t.Errorf("%s, %d elements: relative RMS error %.5f > %g", typ, len(x), got, bound)
			}
		}
	}
}

// DequantizeRow decodes into a caller slice and reads only the bytes it needs.
func TestDequantizeRowIntoSlice(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for _, typ := range quant.Types() {
		x := gaussian(rng, typ.BlockSize()*5)
		q, err := quant.Quantize(typ, x)
		if err != nil {
			t.Fatal(err)
		}
		want, err := quant.Dequantize(typ, q, len(x))
		if err != nil {
			t.Fatal(err)
		}
		dst := make([]float32, len(x)+1)
		dst[len(x)] = 12345 // must stay untouched
		padded := append(append([]byte{}, q...), 0xAB, 0xCD)
		if err := quant.DequantizeRow(typ, padded, dst[:len(x)]); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		for i := range want {
			if math.Float32bits(dst[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s: element %d: DequantizeRow %v, Dequantize %v", typ, i, dst[i], want[i])
			}
		}
		if dst[len(x)] != 12345 {
			t.Fatalf("%s: DequantizeRow wrote past its slice", typ)
		}
		// QuantizeRow into a larger buffer gives the same bytes.
		buf := make([]byte, len(q)+3)
		if err := quant.QuantizeRow(typ, x, buf); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if string(buf[:len(q)]) != string(q) || buf[len(q)] != 0 {
			t.Fatalf("%s: QuantizeRow differs from Quantize", typ)
		}
	}
}

// Inputs that would divide by zero or overflow in a careless quantiser.
func TestDegenerateInputs(t *testing.T) {
	cases := map[string]func(i int) float32{
		"zeros":    func(int) float32 { return 0 },
		"constant": func(int) float32 { return 3 },
		"negative": func(int) float32 { return -0.75 },
		"tiny":     func(i int) float32 { return float32(i%5-2) * 1e-30 },
		"f16 max":  func(i int) float32 { return float32(i%9-4) / 4 * 65504 },
		"spike": func(i int) float32 {
			if i == 77 {
				return 1000
			}
			return 0.001 * float32(i%3)
		},
	}
	for name, f := range cases {
		for _, typ := range quant.Types() {
			x := make([]float32, 512)
			for i := range x {
				x[i] = f(i)
			}
			y := roundTrip(t, typ, x)
			var maxAbs float64
			for _, v := range x {
				maxAbs = max(maxAbs, math.Abs(float64(v)))
			}
			for i, v := range y {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("%s/%s: element %d decodes to %v", name, typ, i, v)
				}
				// Every type reproduces zero exactly and stays within the range of
				// its input (up to one quantisation step, 1/3 of the largest value for Q2_K).
				if x[i] == 0 && name == "zeros" && v != 0 {
					t.Fatalf("%s/%s: element %d decodes to %v, want 0", name, typ, i, v)
				}
				if math.Abs(float64(v)) > maxAbs*1.34+1e-6 {
					t.Fatalf("%s/%s: element %d decodes to %v, input max |x| %v", name, typ, i, v, maxAbs)
				}
			}
		}
	}
}

func TestErrors(t *testing.T) {
	good := make([]float32, 256)
	for i := range good {
		good[i] = float32(i%7) - 3
	}
	nan := append([]float32{}, good...)
	nan[40] = float32(math.NaN())
	inf := append([]float32{}, good...)
	inf[3] = float32(math.Inf(-1))
	huge := append([]float32{}, good...)
	huge[200] = -70000
	cases := []struct {
		name string
		err  func() error
		want string
	}{
		{"unsupported Q8_K", func() error { _, err := quant.Dequantize(gguf.Q8_K, make([]byte, 292), 256); return err }, "not supported"},
		{"unknown type 99", func() error { _, err := quant.Quantize(gguf.GGMLType(99), good); return err }, "not supported"},
		{"partial block", func() error { _, err := quant.Quantize(gguf.Q4_K, good[:100]); return err }, "whole number of blocks"},
		{"negative count", func() error { _, err := quant.Dequantize(gguf.Q8_0, nil, -32); return err }, "negative"},
		{"short data", func() error { _, err := quant.Dequantize(gguf.Q6_K, make([]byte, 209), 256); return err }, "need 210 bytes, got 209"},
		{"long data", func() error { _, err := quant.Dequantize(gguf.Q4_0, make([]byte, 19), 32); return err }, "need 18 bytes, got 19"},
		{"row short data", func() error { return quant.DequantizeRow(gguf.Q5_K, make([]byte, 100), make([]float32, 256)) }, "need 176 bytes"},
		{"row partial block", func() error { return quant.DequantizeRow(gguf.Q5_0, make([]byte, 100), make([]float32, 33)) }, "whole number of blocks"},
		{"NaN input", func() error { _, err := quant.Quantize(gguf.Q4_K, nan); return err }, "element 40 is NaN"},
		{"Inf input", func() error { _, err := quant.Quantize(gguf.Q8_0, inf); return err }, "element 3 is -Inf"},
		{"beyond f16", func() error { _, err := quant.Quantize(gguf.Q6_K, huge); return err }, "element 200 is -70000, beyond ±65504"},
		{"small destination", func() error { return quant.QuantizeRow(gguf.Q3_K, good, make([]byte, 109)) }, "destination has 109"},
	}
	for _, c := range cases {
		err := c.err()
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
	}
	// Plain float types carry non-finite values through.
	for _, typ := range []gguf.GGMLType{gguf.F32, gguf.F16, gguf.BF16} {
		y := roundTrip(t, typ, inf)
		if !math.IsInf(float64(y[3]), -1) {
			t.Errorf("%s: -Inf decodes to %v", typ, y[3])
		}
		y = roundTrip(t, typ, nan)
		if !math.IsNaN(float64(y[40])) {
			t.Errorf("%s: NaN decodes to %v", typ, y[40])
		}
	}
	if quant.Supported(gguf.Q8_1) || !quant.Supported(gguf.Q6_K) {
		t.Errorf("Supported: Q8_1 %v, Q6_K %v", quant.Supported(gguf.Q8_1), quant.Supported(gguf.Q6_K))
	}
}
