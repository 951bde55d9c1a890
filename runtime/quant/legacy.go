package quant

import (
	"encoding/binary"
	"math"

	"github.com/wgllm/wgllm/runtime/half"
)

var le = binary.LittleEndian

func getF16(b []byte) float32    { return half.ToFloat32(le.Uint16(b)) }
func putF16(b []byte, f float32) { le.PutUint16(b, half.FromFloat32(f)) }

// roundF16 is the value a float32 becomes once stored as f16 and read back.
func roundF16(f float32) float32 { return half.ToFloat32(half.FromFloat32(f)) }

// truncInt is C's float-to-int conversion (toward zero), with NaN and
// out-of-range values pinned so that garbage in never means a panic or
// platform-dependent results.
func truncInt(f float32) int {
	switch {
	case f != f:
		return 0
	case f > 1<<22:
		return 1 << 22
	case f < -(1 << 22):
		return -(1 << 22)
	}
	return int(f)
}

// nearestInt rounds half to even, as ggml's nearest_int (the 1.5·2^23
// trick) does for |f| <= 2^22.
func nearestInt(f float32) int {
	switch {
	case f != f:
		return 0
	case f > 4194303:
		return 4194303
	case f < -4194303:
		return -4194303
	}
	return int(math.RoundToEven(float64(f)))
}

// roundAway is C's roundf (half away from zero).
func roundAway(f float32) int {
	if f != f {
		return 0
	}
	return truncInt(float32(math.Round(float64(f))))
}

func clampInt(v, lo, hi int) int { return max(lo, min(hi, v)) }

// --- plain floats ---

func decodeF32(dst []float32, b []byte) { dst[0] = math.Float32frombits(le.Uint32(b)) }
func encodeF32(dst []byte, x []float32) { le.PutUint32(dst, math.Float32bits(x[0])) }

func decodeF16(dst []float32, b []byte) { dst[0] = getF16(b) }
func encodeF16(dst []byte, x []float32) { putF16(dst, x[0]) }

func decodeBF16(dst []float32, b []byte) { dst[0] = half.BF16ToFloat32(le.Uint16(b)) }
func encodeBF16(dst []byte, x []float32) { le.PutUint16(dst, half.BF16FromFloat32(x[0])) }

// --- 32-element blocks ---
//
// block_q4_0 {d f16; qs[16]}: element j is low nibble of qs[j], j+16 the
// high nibble; value (q-8)*d.
// block_q4_1 {d, m f16; qs[16]}: q*d + m.
// block_q5_0 {d f16; qh u32; qs[16]}: bit 4 of element j is bit j of qh;
// value (q-16)*d.
// block_q5_1 {d, m f16; qh u32; qs[16]}: q*d + m.
// block_q8_0 {d f16; qs[32] int8}: q*d.

// signedMax is the value of largest magnitude (the first such), as the
// symmetric legacy quantisers pick it.
func signedMax(x []float32) float32 {
	var amax, mx float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); amax < a {
			amax, mx = a, v
		}
	}
	return mx
}

func minMax(x []float32) (lo, hi float32) {
	lo, hi = math.MaxFloat32, -math.MaxFloat32
	for _, v := range x {
		lo, hi = min(lo, v), max(hi, v)
	}
	return lo, hi
}

func inverse(d float32) float32 {
	if d == 0 {
		return 0
	}
	return 1 / d
}

func decodeQ4_0(dst []float32, b []byte) {
	d := getF16(b)
	qs := b[2:18]
	for j := 0; j < 16; j++ {
		dst[j] = float32(int(qs[j]&0xF)-8) * d
		dst[j+16] = float32(int(qs[j]>>4)-8) * d
	}
}

func encodeQ4_0(dst []byte, x []float32) {
	d := signedMax(x) / -8
	id := inverse(d)
	putF16(dst, d)
	for j := 0; j < 16; j++ {
		q0 := min(15, truncInt(float32(x[j]*id)+8.5))
		q1 := min(15, truncInt(float32(x[j+16]*id)+8.5))
		dst[2+j] = byte(q0) | byte(q1)<<4
	}
}

func decodeQ4_1(dst []float32, b []byte) {
	d, m := getF16(b), getF16(b[2:])
	qs := b[4:20]
	for j := 0; j < 16; j++ {
		dst[j] = float32(float32(qs[j]&0xF)*d) + m
		dst[j+16] = float32(float32(qs[j]>>4)*d) + m
	}
}

func encodeQ4_1(dst []byte, x []float32) {
	lo, hi := minMax(x)
	d := (hi - lo) / 15
	id := inverse(d)
	putF16(dst, d)
	putF16(dst[2:], lo)
	for j := 0; j < 16; j++ {
		q0 := clampInt(truncInt(float32((x[j]-lo)*id)+0.5), 0, 15)
		q1 := clampInt(truncInt(float32((x[j+16]-lo)*id)+0.5), 0, 15)
		dst[4+j] = byte(q0) | byte(q1)<<4
	}
}

func decodeQ5_0(dst []float32, b []byte) {
	d := getF16(b)
	qh := le.Uint32(b[2:])
	qs := b[6:22]
	for j := 0; j < 16; j++ {
		h0 := int(qh>>j&1) << 4
		h1 := int(qh>>(j+16)&1) << 4
		dst[j] = float32((int(qs[j]&0xF)|h0)-16) * d
		dst[j+16] = float32((int(qs[j]>>4)|h1)-16) * d
	}
}

func encodeQ5_0(dst []byte, x []float32) {
	d := signedMax(x) / -16
	id := inverse(d)
	putF16(dst, d)
	var qh uint32
	for j := 0; j < 16; j++ {
		q0 := min(31, truncInt(float32(x[j]*id)+16.5))
		q1 := min(31, truncInt(float32(x[j+16]*id)+16.5))
		dst[6+j] = byte(q0&0xF) | byte(q1&0xF)<<4
		qh |= uint32(q0>>4&1)<<j | uint32(q1>>4&1)<<(j+16)
	}
	le.PutUint32(dst[2:], qh)
}

func decodeQ5_1(dst []float32, b []byte) {
	d, m := getF16(b), getF16(b[2:])
	qh := le.Uint32(b[4:])
	qs := b[8:24]
	for j := 0; j < 16; j++ {
		q0 := int(qs[j]&0xF) | int(qh>>j&1)<<4
		q1 := int(qs[j]>>4) | int(qh>>(j+16)&1)<<4
		dst[j] = float32(float32(q0)*d) + m
		dst[j+16] = float32(float32(q1)*d) + m
	}
}

func encodeQ5_1(dst []byte, x []float32) {
	lo, hi := minMax(x)
	d := (hi - lo) / 31
	id := inverse(d)
	putF16(dst, d)
	putF16(dst[2:], lo)
	var qh uint32
	for j := 0; j < 16; j++ {
		// ggml does not clamp here; rounding can only reach 31.5 through
		// float error, and clamping keeps that from wrapping to 0.
		q0 := clampInt(truncInt(float32((x[j]-lo)*id)+0.5), 0, 31)
		q1 := clampInt(truncInt(float32((x[j+16]-lo)*id)+0.5), 0, 31)
		dst[8+j] = byte(q0&0xF) | byte(q1&0xF)<<4
		qh |= uint32(q0>>4&1)<<j | uint32(q1>>4&1)<<(j+16)
	}
	le.PutUint32(dst[4:], qh)
}

func decodeQ8_0(dst []float32, b []byte) {
	d := getF16(b)
	for j := 0; j < 32; j++ {
		dst[j] = float32(int8(b[2+j])) * d
	}
}

func encodeQ8_0(dst []byte, x []float32) {
	var amax float32
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	d := amax / 127
	id := inverse(d)
	putF16(dst, d)
	for j := 0; j < 32; j++ {
		dst[2+j] = byte(int8(clampInt(roundAway(x[j]*id), -128, 127)))
	}
}
