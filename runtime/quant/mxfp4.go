package quant

import "math"

// MXFP4 (OCP microscaling FP4): block_mxfp4 (17 bytes) is e | qs[16]: an
// E8M0 exponent shared by 32 E2M1 values, element j < 16 the low nibble of
// qs[j] and element j + 16 the high nibble. ggml keeps the E2M1 values
// doubled as integers (kvalues_mxfp4) and halves the scale to match.

// kvaluesMXFP4 is ggml's kvalues_mxfp4: E2M1 values times two.
var kvaluesMXFP4 = [16]int8{0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12}

// E8M0Half is ggml's GGML_E8M0_TO_FP32_HALF: 2^(e-128) as float32, the
// scale of a doubled E2M1 value, built from bits as ggml builds it (e < 2
// are the subnormals 2^-128 and 2^-127; e = 255 is 2^127, not NaN).
func E8M0Half(e uint8) float32 {
	if e < 2 {
		return math.Float32frombits(0x00200000 << e)
	}
	return math.Float32frombits(uint32(e-1) << 23)
}

func decodeMXFP4(dst []float32, b []byte) {
	d := E8M0Half(b[0])
	qs := b[1:17]
	for j := 0; j < 16; j++ {
		dst[j] = float32(kvaluesMXFP4[qs[j]&0xF]) * d
		dst[j+16] = float32(kvaluesMXFP4[qs[j]>>4]) * d
	}
}

// encodeMXFP4 is ggml's quantize_row_mxfp4_ref (which llama-quantize runs
// for MXFP4 too): e = floor(log2(max |x|)) - 2 + 127, so the largest
// magnitude lands in [4, 8) doubled E2M1 steps, then each value takes the
// nearest table entry (the first on a tie).
func encodeMXFP4(dst []byte, x []float32) {
	var amax float32
	for _, v := range x {
		amax = max(amax, abs32(v))
	}
	var e uint8
	if amax > 0 {
		// log2f is exact at powers of two and within an ulp elsewhere;
		// floor only differs from the float64 value's within 2^-22 of a
		// power of two. Below 2^-125 ggml's exponent would wrap to 255,
		// which its own validation rejects: clamp to 0 instead.
		l := math.Floor(float64(float32(math.Log2(float64(amax))))) - 2 + 127
		e = uint8(max(l, 0))
	}
	dst[0] = e
	d := E8M0Half(e)
	for j := 0; j < 16; j++ {
		dst[1+j] = bestIndexMXFP4(x[j], d) | bestIndexMXFP4(x[j+16], d)<<4
	}
}

func bestIndexMXFP4(x, d float32) uint8 {
	best, bestErr := 0, abs32(float32(kvaluesMXFP4[0])*d-x)
	for i := 1; i < 16; i++ {
		if err := abs32(float32(float32(kvaluesMXFP4[i])*d) - x); err < bestErr {
			best, bestErr = i, err
		}
	}
	return uint8(best)
}
