package quant_test

import (
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/runtime/quant"
)

// One 4096×256 matrix's worth of values per op; bytes/s counts float32 output
// (dequantise) or input (quantise).
const benchElems = 1 << 20

func BenchmarkDequantize(b *testing.B) {
	x := gaussian(rand.New(rand.NewSource(1)), benchElems)
	dst := make([]float32, benchElems)
	for _, typ := range quant.Types() {
		q, err := quant.Quantize(typ, x)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(4 * benchElems)
			for b.Loop() {
				if err := quant.DequantizeRow(typ, q, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkQuantize(b *testing.B) {
	x := gaussian(rand.New(rand.NewSource(2)), benchElems)
	for _, typ := range quant.Types() {
		dst := make([]byte, typ.RowBytes(benchElems))
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(4 * benchElems)
			for b.Loop() {
				if err := quant.QuantizeRow(typ, x, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
