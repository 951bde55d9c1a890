// Package quant is the CPU reference for ggml's tensor encodings: a
// dequantiser and a quantiser for every type the runtime loads, bit-exact
// with ggml's block layouts (ggml-common.h) and decode formulas
// (dequantize_row_* in ggml-quants.c). Quantisers follow ggml's reference
// quantize_row_*_ref algorithms (no importance matrix); for IQ4_NL and
// IQ4_XS, quantize_iq4_nl and quantize_iq4_xs, which llama-quantize runs.
//
// Decoding evaluates in float32 in the order ggml's C does, with every
// product rounded to float32 before the following add (no fused
// multiply-add), so a GPU kernel has one well-defined value to match.
package quant

import (
	"fmt"
	"math"

	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/half"
)

type codec struct {
	// decode writes BlockSize values decoded from one block of BlockBytes.
	decode func(dst []float32, blk []byte)
	// encode writes one block from BlockSize finite values.
	encode func(dst []byte, x []float32)
}

var codecs = map[gguf.GGMLType]codec{
	gguf.F32:    {decodeF32, encodeF32},
	gguf.F16:    {decodeF16, encodeF16},
	gguf.BF16:   {decodeBF16, encodeBF16},
	gguf.Q4_0:   {decodeQ4_0, encodeQ4_0},
	gguf.Q4_1:   {decodeQ4_1, encodeQ4_1},
	gguf.Q5_0:   {decodeQ5_0, encodeQ5_0},
	gguf.Q5_1:   {decodeQ5_1, encodeQ5_1},
	gguf.Q8_0:   {decodeQ8_0, encodeQ8_0},
	gguf.Q2_K:   {decodeQ2_K, encodeQ2_K},
	gguf.Q3_K:   {decodeQ3_K, encodeQ3_K},
	gguf.Q4_K:   {decodeQ4_K, encodeQ4_K},
	gguf.Q5_K:   {decodeQ5_K, encodeQ5_K},
	gguf.Q6_K:   {decodeQ6_K, encodeQ6_K},
	gguf.IQ4_NL: {decodeIQ4_NL, encodeIQ4_NL},
	gguf.IQ4_XS: {decodeIQ4_XS, encodeIQ4_XS},
	gguf.MXFP4:  {decodeMXFP4, encodeMXFP4},
}

// Types lists the supported types in ggml's numbering order.
func Types() []gguf.GGMLType {
	return []gguf.GGMLType{gguf.F32, gguf.F16, gguf.Q4_0, gguf.Q4_1, gguf.Q5_0, gguf.Q5_1, gguf.Q8_0,
		gguf.Q2_K, gguf.Q3_K, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K, gguf.IQ4_NL, gguf.IQ4_XS, gguf.BF16, gguf.MXFP4}
}

// Supported reports whether Dequantize and Quantize handle t.
func Supported(t gguf.GGMLType) bool { _, ok := codecs[t]; return ok }

func lookup(t gguf.GGMLType, n int) (codec, error) {
	c, ok := codecs[t]
	if !ok {
		return codec{}, fmt.Errorf("quant: type %s is not supported", t)
	}
	if n < 0 {
		return codec{}, fmt.Errorf("quant: %s: negative element count %d", t, n)
	}
	if bs := t.BlockSize(); n%bs != 0 {
		return codec{}, fmt.Errorf("quant: %s: %d elements is not a whole number of blocks of %d", t, n, bs)
	}
	return c, nil
}

// Dequantize decodes n elements of type t from data, which must hold
// exactly t.RowBytes(n) bytes.
func Dequantize(t gguf.GGMLType, data []byte, n int) ([]float32, error) {
	if _, err := lookup(t, n); err != nil {
		return nil, err
	}
	if want := t.RowBytes(n); len(data) != want {
		return nil, fmt.Errorf("quant: %s: %d elements need %d bytes, got %d", t, n, want, len(data))
	}
	dst := make([]float32, n)
	return dst, DequantizeRow(t, data, dst)
}

// DequantizeRow decodes len(dst) elements of type t from data into dst
// (len(dst) a multiple of t.BlockSize(); data at least t.RowBytes(len(dst))
// bytes, extra bytes ignored, so a caller may pass a slice of a mapped file).
func DequantizeRow(t gguf.GGMLType, data []byte, dst []float32) error {
	c, err := lookup(t, len(dst))
	if err != nil {
		return err
	}
	bs, bb := t.BlockSize(), t.BlockBytes()
	if need := t.RowBytes(len(dst)); len(data) < need {
		return fmt.Errorf("quant: %s: %d elements need %d bytes, got %d", t, len(dst), need, len(data))
	}
	if decodePlain(t, data, dst) {
		return nil
	}
	for i := 0; i < len(dst)/bs; i++ {
		c.decode(dst[i*bs:(i+1)*bs], data[i*bb:(i+1)*bb])
	}
	return nil
}

// decodePlain is the loop for the one-element "block" types, without a
// call per element.
func decodePlain(t gguf.GGMLType, data []byte, dst []float32) bool {
	switch t {
	case gguf.F32:
		for i := range dst {
			dst[i] = math.Float32frombits(le.Uint32(data[4*i:]))
		}
	case gguf.F16:
		for i := range dst {
			dst[i] = half.ToFloat32(le.Uint16(data[2*i:]))
		}
	case gguf.BF16:
		for i := range dst {
			dst[i] = half.BF16ToFloat32(le.Uint16(data[2*i:]))
		}
	default:
		return false
	}
	return true
}

// maxF16 is the largest finite f16. Inputs up to it keep every block
// type's f16 scales finite.
const maxF16 = 65504

// Quantize encodes x (len(x) a multiple of t.BlockSize()) as type t.
// Block types reject NaN and ±Inf, and those with f16 scales (all but
// MXFP4, whose scale is a power of two up to 2^127) magnitudes above 65504,
// with an error naming the first bad index; F32, F16 and BF16 carry such
// values through (F16 rounds large ones to ±Inf).
func Quantize(t gguf.GGMLType, x []float32) ([]byte, error) {
	if _, err := lookup(t, len(x)); err != nil {
		return nil, err
	}
	dst := make([]byte, t.RowBytes(len(x)))
	return dst, QuantizeRow(t, x, dst)
}

// QuantizeRow encodes x as type t into dst, which must hold at least
// t.RowBytes(len(x)) bytes.
func QuantizeRow(t gguf.GGMLType, x []float32, dst []byte) error {
	c, err := lookup(t, len(x))
	if err != nil {
		return err
	}
	bs, bb := t.BlockSize(), t.BlockBytes()
	if need := t.RowBytes(len(x)); len(dst) < need {
		return fmt.Errorf("quant: %s: %d elements need %d bytes, destination has %d", t, len(x), need, len(dst))
	}
	if bs > 1 {
		for i, v := range x {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("quant: %s: element %d is %v; only finite values can be quantised", t, i, v)
			}
			if t != gguf.MXFP4 && math.Abs(float64(v)) > maxF16 {
				return fmt.Errorf("quant: %s: element %d is %v, beyond ±%d: block scales are f16 and would overflow", t, i, v, maxF16)
			}
		}
	}
	for i := 0; i < len(x)/bs; i++ {
		c.encode(dst[i*bb:(i+1)*bb], x[i*bs:(i+1)*bs])
	}
	return nil
}
