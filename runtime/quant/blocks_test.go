package quant_test

import (
	"encoding/binary"
	"math"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/half"
	"github.com/wgllm/wgllm/runtime/quant"
)

// f16 constants used below.
const (
	h0_25   = 0x3400
	h0_5    = 0x3800
	h1      = 0x3C00
	h2      = 0x4000
	hMinus1 = 0xBC00
)

func put16(b []byte, off int, v uint16) { binary.LittleEndian.PutUint16(b[off:], v) }

// Blocks built byte by byte from ggml-common.h's layouts, with the values
// ggml's dequantize_row_* formulas give worked out by hand. Elements not
// listed decode to def.
var handBlocks = []struct {
	name string
	typ  gguf.GGMLType
	bld  func(b []byte)
	def  float32
	want map[int]float32
}{
	{"F32", gguf.F32, func(b []byte) { binary.LittleEndian.PutUint32(b, math.Float32bits(-1.25)) }, 0, map[int]float32{0: -1.25}},
	{"F16 one", gguf.F16, func(b []byte) { put16(b, 0, h1) }, 0, map[int]float32{0: 1}},
	{"F16 max", gguf.F16, func(b []byte) { put16(b, 0, 0x7BFF) }, 0, map[int]float32{0: 65504}},
	{"F16 subnormal", gguf.F16, func(b []byte) { put16(b, 0, 0x8001) }, 0, map[int]float32{0: -1.0 / (1 << 24)}},
	{"BF16", gguf.BF16, func(b []byte) { put16(b, 0, 0xC040) }, 0, map[int]float32{0: -3}},
	// Q4_0 {d; qs[16]}: (nibble-8)*d, low nibbles are elements 0-15.
	{"Q4_0", gguf.Q4_0, func(b []byte) {
		put16(b, 0, h0_5)
		for j := 0; j < 16; j++ {
			b[2+j] = 0x88
		}
		b[2+0] = 0x9F  // e0 = 7*0.5, e16 = 1*0.5
		b[2+15] = 0x08 // e15 = 0, e31 = -8*0.5
	}, 0, map[int]float32{0: 3.5, 16: 0.5, 15: 0, 31: -4}},
	// Q4_1 {d; m; qs[16]}: nibble*d + m.
	{"Q4_1", gguf.Q4_1, func(b []byte) {
		put16(b, 0, h0_5)
		put16(b, 2, hMinus1)
		b[4+3] = 0xA5 // e3 = 5*0.5-1, e19 = 10*0.5-1
	}, -1, map[int]float32{3: 1.5, 19: 4}},
	// Q5_0 {d; qh u32; qs[16]}: (nibble | qh bit e <<4) - 16, times d.
	{"Q5_0", gguf.Q5_0, func(b []byte) {
		put16(b, 0, h0_25)
		binary.LittleEndian.PutUint32(b[2:], 1<<2|1<<18)
		b[6+2] = 0x31 // e2 = (1|16)-16, e18 = (3|16)-16
		b[6+5] = 0x0F // e5 = 15-16, e21 = 0-16
	}, -4, map[int]float32{2: 0.25, 18: 0.75, 5: -0.25}},
	// Q5_1 {d; m; qh u32; qs[16]}: (nibble | high bit) * d + m.
	{"Q5_1", gguf.Q5_1, func(b []byte) {
		put16(b, 0, h1)
		put16(b, 2, h0_5)
		binary.LittleEndian.PutUint32(b[4:], 1<<31)
		b[8+0] = 0x01  // e0 = 1+0.5
		b[8+15] = 0xF0 // e15 = 0+0.5, e31 = 31+0.5
	}, 0.5, map[int]float32{0: 1.5, 31: 31.5}},
	// Q8_0 {d; qs[32] int8}.
	{"Q8_0", gguf.Q8_0, func(b []byte) {
		put16(b, 0, h2)
		b[2+0], b[2+1], b[2+31] = 0x7F, 0x80, 0xFF
	}, 0, map[int]float32{0: 254, 1: -256, 31: -2}},
	// Q2_K {scales[16]; qs[64]; d; dmin}: scale byte lo = scale, hi = min;
	// value d*scale*q - dmin*min. Sub-block 5 (elements 80-95) reads bits
	// 4-5 of qs[16..31]; sub-block 15 (240-255) bits 6-7 of qs[48..63].
	{"Q2_K", gguf.Q2_K, func(b []byte) {
		put16(b, 80, h1)
		put16(b, 82, h0_5)
		b[0] = 0x21  // sub-block 0: scale 1, min 2
		b[5] = 0x03  // sub-block 5: scale 3, min 0
		b[15] = 0xF1 // sub-block 15: scale 1, min 15
		b[16+0] = 0x02
		b[16+16] = 0x30
		b[16+63] = 0xC0
	}, 0, func() map[int]float32 {
		m := map[int]float32{0: 1, 80: 9, 255: -4.5}
		for e := 1; e < 16; e++ {
			m[e] = -1
		}
		for e := 240; e < 255; e++ {
			m[e] = -7.5
		}
		return m
	}()},
	// Q3_K {hmask[32]; qs[64]; scales[12]; d}: 6-bit scales biased by 32
	// (bytes 8-11 = 0xAA makes every high pair 2, so 0 low bits mean 0);
	// value d*(scale-32)*(q2 - (hmask bit clear ? 4 : 0)).
	{"Q3_K", gguf.Q3_K, func(b []byte) {
		sc := b[96:108]
		for j := 8; j < 12; j++ {
			sc[j] = 0xAA
		}
		sc[0] = 0x03 // sub-block 0: 32+3
		sc[1] = 0xB0 // sub-block 9 low bits 0xB ...
		sc[9] = 0x9A // ... high bits 01: 0b011011 = 27 = 32-5
		put16(b, 108, h0_5)
		b[32+0] = 0x03  // e0: q 3
		b[0] |= 0x01    // e0: high bit set, so no -4
		b[32+48] = 0x01 // e144 (sub-block 9, qs[48] bits 0-1): q 1
		b[16] = 0x10    // e144: high bit (hmask[16] bit 4) set
	}, 0, func() map[int]float32 {
		m := map[int]float32{0: 4.5, 144: -2.5}
		for e := 1; e < 16; e++ {
			m[e] = -6 // 0.5*3*(0-4)
		}
		for e := 145; e < 160; e++ {
			m[e] = 10 // 0.5*-5*(0-4)
		}
		return m
	}()},
	// Q4_K {d; dmin; scales[12]; qs[128]}: sub-blocks 0-3 keep scale/min in
	// the low 6 bits of bytes 0-3 / 4-7; 4-7 keep the low 4 bits in bytes
	// 8-11 and the high 2 in the top bits of bytes 0-3 / 4-7.
	{"Q4_K", gguf.Q4_K, func(b []byte) {
		put16(b, 0, h1)
		put16(b, 2, h0_25)
		sc := b[4:16]
		sc[0], sc[4] = 2, 4 // sub-block 0: scale 2, min 4
		sc[9] = 0x35        // sub-block 5: scale low 5, min low 3
		sc[1] = 0x80        // sub-block 5 scale high bits 2: 37
		sc[5] = 0x40        // sub-block 5 min high bits 1: 19
		b[16+0] = 0x07      // e0 = 2*7 - 0.25*4
		b[16+64] = 0xF0     // e160 (sub-block 5, high nibble) = 37*15 - 0.25*19
	}, 0, func() map[int]float32 {
		m := map[int]float32{0: 13, 160: 550.25}
		for e := 1; e < 32; e++ {
			m[e] = -1
		}
		for e := 161; e < 192; e++ {
			m[e] = -4.75
		}
		return m
	}()},
	// Q5_K {d; dmin; scales[12]; qh[32]; qs[128]}: bit 4 of element e is
	// bit e/32 of qh[e%32].
	{"Q5_K", gguf.Q5_K, func(b []byte) {
		put16(b, 0, h0_5)
		put16(b, 2, h1)
		sc := b[4:16]
		sc[3], sc[7] = 10|0xC0, 3 // sub-block 3: scale 10, min 3; top bits of sc[3] belong to sub-block 7
		sc[11] = 0x0F             // sub-block 7: scale 63 (0xF | 3<<4), min 0
		b[48+32] = 0x70           // e96 (sub-block 3, high nibble of qs[32]) q low 7
		b[16+0] = 0x08            // e96 high bit (qh[0] bit 3)
		b[48+127] = 0xF0          // e255 q low 15
		b[16+31] = 0x80           // e255 high bit
	}, 0, func() map[int]float32 {
		m := map[int]float32{96: 112, 255: 976.5} // 0.5*10*23-3, 0.5*63*31
		for e := 97; e < 128; e++ {
			m[e] = -3
		}
		return m
	}()},
	// Q6_K {ql[128]; qh[64]; scales[16] int8; d}: q = (ql nibble | qh pair<<4) - 32.
	{"Q6_K", gguf.Q6_K, func(b []byte) {
		sc := b[192:208]
		sc[0] = 2
		sc[15] = 0xFD // -3
		put16(b, 208, h0_5)
		b[0] = 0x05      // e0 low 5
		b[128+0] = 0x02  // e0 high 2 -> q = 37-32
		b[127] = 0xF0    // e255: ql[64+63] high nibble
		b[128+63] = 0xC0 // e255: qh[32+31] bits 6-7 -> q = 63-32
	}, 0, func() map[int]float32 {
		m := map[int]float32{0: 5, 255: -46.5}
		for e := 1; e < 16; e++ {
			m[e] = -32 // 0.5*2*-32
		}
		for e := 240; e < 255; e++ {
			m[e] = 48 // 0.5*-3*-32
		}
		return m
	}()},
	// IQ4_NL {d; qs[16]}: nibbles index kvalues_iq4nl (-127 ... 113); 0x88
	// is index 8, value 1.
	{"IQ4_NL", gguf.IQ4_NL, func(b []byte) {
		put16(b, 0, h0_5)
		for j := 0; j < 16; j++ {
			b[2+j] = 0x88
		}
		b[2+0] = 0xF0  // e0 = -127*0.5, e16 = 113*0.5
		b[2+15] = 0x7A // e15 = 25*0.5, e31 = -10*0.5
	}, 0.5, map[int]float32{0: -63.5, 16: 56.5, 15: 12.5, 31: -5}},
	// IQ4_XS {d; scales_h; scales_l[4]; qs[128]}: sub-block ib's scale is
	// nibble ib%2 of scales_l[ib/2] | bits 2ib of scales_h << 4, minus 32.
	// Here every scale is 32 (zero) but sub-block 0's (33) and 7's (15).
	{"IQ4_XS", gguf.IQ4_XS, func(b []byte) {
		put16(b, 0, h0_5)
		put16(b, 2, 0x2AAA) // high bits 2 for sub-blocks 0-6, 0 for 7
		b[4+0] = 0x01       // sub-block 0 low bits 1: 33-32 = 1
		b[4+3] = 0xF0       // sub-block 7 low bits 15: 15-32 = -17
		for j := 8; j < 136; j++ {
			b[j] = 0x88
		}
		b[8+0] = 0x9E    // e0 = 89*0.5, e16 = 13*0.5
		b[8+16*7] = 0x0F // e224 = 113*-8.5, e240 = -127*-8.5
	}, 0, func() map[int]float32 {
		m := map[int]float32{}
		for e := 0; e < 32; e++ {
			m[e] = 0.5
		}
		for e := 224; e < 256; e++ {
			m[e] = -8.5
		}
		m[0], m[16], m[224], m[240] = 44.5, 6.5, -960.5, 1079.5
		return m
	}()},
	// MXFP4 {e; qs[16]}: E2M1 nibbles (sign bit 3; magnitudes 0, 0.5, 1,
	// 1.5, 2, 3, 4, 6) times 2^(e-127); e = 129 scales by 4.
	{"MXFP4", gguf.MXFP4, func(b []byte) {
		b[0] = 129
		b[1+0] = 0xF7  // e0 = 6*4, e16 = -6*4
		b[1+15] = 0x19 // e15 = -0.5*4, e31 = 0.5*4
		b[1+4] = 0xB0  // e20 = -1.5*4
	}, 0, map[int]float32{0: 24, 16: -24, 15: -2, 31: 2, 20: -6}},
	// e = 0 is 2^-127: ggml builds the subnormal scale from bits.
	{"MXFP4 e=0", gguf.MXFP4, func(b []byte) { b[1+3] = 0x70 }, 0, map[int]float32{19: 6 * 0x1p-127}},
	{"MXFP4 e=255", gguf.MXFP4, func(b []byte) { b[0], b[1] = 255, 0x91 }, 0, map[int]float32{0: 0x1p127, 16: -0x1p127}},
}

func TestHandBuiltBlocks(t *testing.T) {
	for _, c := range handBlocks {
		b := make([]byte, c.typ.BlockBytes())
		c.bld(b)
		got, err := quant.Dequantize(c.typ, b, c.typ.BlockSize())
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for e, v := range got {
			want, ok := c.want[e]
			if !ok {
				want = c.def
			}
			if v != want {
				t.Errorf("%s: element %d = %v, want %v", c.name, e, v, want)
			}
		}
	}
}

// layoutValue decodes element e of a block straight from the layout as the
// ggml-common.h comments describe it, one element at a time and in float64.
// It is deliberately written differently from the package's loops.
func layoutValue(typ gguf.GGMLType, b []byte, e int) float64 {
	f16 := func(off int) float64 { return float64(half.ToFloat32(binary.LittleEndian.Uint16(b[off:]))) }
	nib := func(by byte, high bool) int {
		if high {
			return int(by >> 4)
		}
		return int(by & 15)
	}
	bit := func(by byte, i int) int { return int(by>>i) & 1 }
	switch typ {
	case gguf.Q4_0:
		return float64(nib(b[2+e%16], e >= 16)-8) * f16(0)
	case gguf.Q4_1:
		return float64(nib(b[4+e%16], e >= 16))*f16(0) + f16(2)
	case gguf.Q5_0:
		q := nib(b[6+e%16], e >= 16) + 16*bit(b[2+e/8], e%8)
		return float64(q-16) * f16(0)
	case gguf.Q5_1:
		q := nib(b[8+e%16], e >= 16) + 16*bit(b[4+e/8], e%8)
		return float64(q)*f16(0) + f16(2)
	case gguf.Q8_0:
		return float64(int8(b[2+e])) * f16(0)
	case gguf.Q2_K, gguf.Q3_K:
		// Two halves of 128; each has 32 bytes of 2-bit fields, field k of
		// byte l is element 32k+l of the half.
		h, r := e/128, e%128
		qoff := 16
		if typ == gguf.Q3_K {
			qoff = 32
		}
		q := int(b[qoff+32*h+r%32]>>(2*(r/32))) & 3
		if typ == gguf.Q2_K {
			s := b[e/16]
			return f16(80)*float64(s&15)*float64(q) - f16(82)*float64(s>>4)
		}
		if bit(b[e%32], e/32) == 0 {
			q -= 4
		}
		j, sc := e/16, b[96:108]
		s := int(sc[j%8]>>(4*(j/8)))&15 | (int(sc[8+j%4]>>(2*(j/4)))&3)<<4
		return f16(108) * float64(s-32) * float64(q)
	case gguf.Q4_K, gguf.Q5_K:
		s, sc := e/32, b[4:16]
		var scale, mn int
		if s < 4 {
			scale, mn = int(sc[s]&63), int(sc[4+s]&63)
		} else {
			scale = int(sc[8+s-4]&15) | int(sc[s-4]>>6)<<4
			mn = int(sc[8+s-4]>>4) | int(sc[4+s-4]>>6)<<4
		}
		qs := 16
		if typ == gguf.Q5_K {
			qs = 48
		}
		q := nib(b[qs+32*(e/64)+e%32], s%2 == 1)
		if typ == gguf.Q5_K {
			q += 16 * bit(b[16+e%32], e/32)
		}
		return f16(0)*float64(scale)*float64(q) - f16(2)*float64(mn)
	case gguf.Q6_K:
		h, r := e/128, e%128
		k, l := r/32, r%32
		lo := nib(b[64*h+32*(k%2)+l], k >= 2)
		hi := int(b[128+32*h+l]>>(2*k)) & 3
		return f16(208) * float64(int8(b[192+e/16])) * float64(lo|hi<<4-32)
	case gguf.IQ4_NL:
		return float64(iq4Table[nib(b[2+e%16], e >= 16)]) * f16(0)
	case gguf.IQ4_XS:
		s := e / 32
		ls := int(b[4+s/2]>>(4*(s%2)))&15 | int(binary.LittleEndian.Uint16(b[2:])>>(2*s))&3<<4
		return f16(0) * float64(ls-32) * float64(iq4Table[nib(b[8+16*s+e%16], e%32 >= 16)])
	case gguf.MXFP4:
		// E2M1 from its definition: sign, two exponent bits (bias 1), one
		// mantissa bit; exponent 0 is subnormal (0 or 0.5).
		n := nib(b[1+e%16], e >= 16)
		ex, m := n>>1&3, float64(n&1)
		v := m / 2
		if ex > 0 {
			v = math.Ldexp(1+m/2, ex-1)
		}
		if n&8 != 0 {
			v = -v
		}
		return v * math.Ldexp(1, int(b[0])-127)
	}
	panic("no layout for " + typ.String())
}

// iq4Table is kvalues_iq4nl as ggml-common.h lists it.
var iq4Table = [16]int{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// randomF16 is a random finite f16 of magnitude 2^-8..2^4, so that every
// product in a decode is exact in float32 and only the final add rounds.
func randomF16(rng *rand.Rand) uint16 {
	v := math.Ldexp(1+rng.Float64(), rng.Intn(12)-8)
	if rng.Intn(2) == 0 {
		v = -v
	}
	return half.FromFloat32(float32(v))
}

// Random blocks decode, bit for bit, to the per-element layout model.
func TestDecodeMatchesLayout(t *testing.T) {
	f16Fields := map[gguf.GGMLType][]int{
		gguf.Q4_0: {0}, gguf.Q4_1: {0, 2}, gguf.Q5_0: {0}, gguf.Q5_1: {0, 2}, gguf.Q8_0: {0},
		gguf.Q2_K: {80, 82}, gguf.Q3_K: {108}, gguf.Q4_K: {0, 2}, gguf.Q5_K: {0, 2}, gguf.Q6_K: {208},
		gguf.IQ4_NL: {0}, gguf.IQ4_XS: {0}, gguf.MXFP4: nil,
	}
	rng := rand.New(rand.NewSource(11))
	for typ, fields := range f16Fields {
		const blocks = 40
		bb, bs := typ.BlockBytes(), typ.BlockSize()
		data := make([]byte, blocks*bb)
		rng.Read(data)
		for i := 0; i < blocks; i++ {
			for _, off := range fields {
				put16(data, i*bb+off, randomF16(rng))
			}
		}
		got, err := quant.Dequantize(typ, data, blocks*bs)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < blocks; i++ {
			for e := 0; e < bs; e++ {
				want := float32(layoutValue(typ, data[i*bb:(i+1)*bb], e))
				if g := got[i*bs+e]; g != want {
					t.Fatalf("%s block %d element %d: decoded %v, layout says %v", typ, i, e, g, want)
				}
			}
		}
	}
}

// ggml's GGML_E8M0_TO_FP32_HALF: 2^(e-128), subnormal for e < 2, and 255
// is 2^127 rather than NaN.
func TestE8M0Half(t *testing.T) {
	for e, want := range map[uint8]float32{0: 0x1p-128, 1: 0x1p-127, 2: 0x1p-126, 127: 0.5, 128: 1, 130: 4, 254: 0x1p126, 255: 0x1p127} {
		if got := quant.E8M0Half(e); got != want {
			t.Errorf("E8M0Half(%d) = %g, want %g", e, got, want)
		}
	}
}

// MXFP4's scale is a power of two, not an f16: values far beyond 65504
// quantise, and the exponent puts the block's largest magnitude at 8 or 12
// doubled E2M1 steps (floor(log2 max) - 2 + 127).
func TestMXFP4Range(t *testing.T) {
	x := make([]float32, 64)
	for i := range x {
		x[i] = float32(i%7-3) * 1e30
	}
	x[5] = -3.5e30 // the largest magnitude of block 0
	q, err := quant.Quantize(gguf.MXFP4, x)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint8(math.Floor(math.Log2(3.5e30)) - 2 + 127); q[0] != want {
		t.Errorf("block 0 exponent %d, want %d", q[0], want)
	}
	y, err := quant.Dequantize(gguf.MXFP4, q, len(x))
	if err != nil {
		t.Fatal(err)
	}
	if e := relRMS(y, x); e > 0.2 {
		t.Errorf("relative RMS error %.3f on values near 1e30", e)
	}
	// Tiny values take the smallest exponent rather than wrapping to 255,
	// which ggml's row validation would reject.
	tiny := make([]float32, 32)
	tiny[3] = 1e-39
	if q, err = quant.Quantize(gguf.MXFP4, tiny); err != nil || q[0] != 0 {
		t.Errorf("tiny block: exponent %d, error %v; want 0", q[0], err)
	}
}

// The quantisers' table search by thresholds gives ggml's best_index_int8
// for every float32 near a threshold or a table entry, for random values
// of every magnitude, and for ±0, ±Inf and NaN.
func TestBestIndexIQ4(t *testing.T) {
	check := func(x float32) {
		if got, want := quant.BestIndexIQ4(x), quant.BestIndexIQ4Search(x); got != want {
			t.Fatalf("best index of %v (%#08x): %d, ggml's search %d", x, math.Float32bits(x), got, want)
		}
	}
	var around []float32
	around = append(around, quant.IQ4Thresholds[:]...)
	for _, v := range iq4Table {
		around = append(around, float32(v))
	}
	for _, c := range around {
		up, down := c, c
		for i := 0; i < 1<<12; i++ {
			check(up)
			check(down)
			up, down = math.Nextafter32(up, float32(math.Inf(1))), math.Nextafter32(down, float32(math.Inf(-1)))
		}
	}
	rng := rand.New(rand.NewSource(5))
	for i := 0; i < 1<<20; i++ {
		check(float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()*4)))
	}
	for _, x := range []float64{0, math.Copysign(0, -1), math.Inf(1), math.Inf(-1), math.NaN(), 1e38, -1e38} {
		check(float32(x))
	}
}
