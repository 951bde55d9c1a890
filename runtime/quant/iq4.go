package quant

import "math"

// IQ4_NL and IQ4_XS: 4-bit indices into ggml's fixed non-linear table
// kvalues_iq4nl, with one f16 scale per 32 elements (IQ4_NL) or an f16
// super-block scale and 6-bit sub-block scales per 256 (IQ4_XS).
//
// Byte layouts (ggml-common.h):
//
//	block_iq4_nl (18):  d f16 | qs[16]
//	block_iq4_xs (136): d f16 | scales_h u16 | scales_l[4] | qs[128]
//
// In each 32 elements, element j < 16 is the low nibble of qs[j] and
// element j + 16 the high nibble. IQ4_XS sub-block ib's scale is the
// nibble ib%2 of scales_l[ib/2] with bits 2ib, 2ib+1 of scales_h above it,
// biased by 32.

// kvaluesIQ4NL is ggml's kvalues_iq4nl.
var kvaluesIQ4NL = [16]int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// iq4Tries is the ntry llama-quantize's quantize_iq4_nl and quantize_iq4_xs
// pass: 15 scales around the first guess are tried per 32 elements.
// (quantize_row_iq4_nl_ref, ggml's from_float for IQ4_NL, tries none.)
const iq4Tries = 7

func decodeIQ4_NL(dst []float32, b []byte) {
	d := getF16(b)
	qs := b[2:18]
	for j := 0; j < 16; j++ {
		dst[j] = d * float32(kvaluesIQ4NL[qs[j]&0xF])
		dst[j+16] = d * float32(kvaluesIQ4NL[qs[j]>>4])
	}
}

func decodeIQ4_XS(dst []float32, b []byte) {
	d := getF16(b)
	sh := le.Uint16(b[2:])
	sl := b[4:8]
	for ib := 0; ib < 8; ib++ {
		ls := int(sl[ib/2]>>(4*(ib%2))&0xF) | int(sh>>(2*ib)&3)<<4
		dl := d * float32(ls-32)
		qs := b[8+16*ib : 24+16*ib]
		out := dst[32*ib : 32*ib+32]
		for j := 0; j < 16; j++ {
			out[j] = dl * float32(kvaluesIQ4NL[qs[j]&0xF])
			out[j+16] = dl * float32(kvaluesIQ4NL[qs[j]>>4])
		}
	}
}

func encodeIQ4_NL(dst []byte, x []float32) {
	var L [32]uint8
	d := iq4GroupScale(x, L[:], iq4Tries)
	putF16(dst, d)
	// With tries, the indices are chosen again for the final (unrounded) scale.
	id := inverse(d)
	for j, v := range x {
		L[j] = bestIndexIQ4(float32(id * v))
	}
	packIQ4(dst[2:18], L[:])
}

func encodeIQ4_XS(dst []byte, x []float32) {
	var L [qkK]uint8
	var scales [8]float32
	var maxScale, amaxScale float32
	for ib := range scales {
		scales[ib] = iq4GroupScale(x[32*ib:32*ib+32], L[32*ib:32*ib+32], iq4Tries)
		if a := abs32(scales[ib]); a > amaxScale {
			amaxScale, maxScale = a, scales[ib]
		}
	}
	// -maxScale keeps ggml's sign: an all-zero block stores d = -0.
	d := -maxScale / 32
	putF16(dst, d)
	id := inverse(d)
	var sh uint16
	sl := dst[4:8]
	clear(sl)
	for ib, s := range scales {
		l := clampInt(nearestInt(float32(id*s)), -32, 31)
		idl := inverse(float32(d * float32(l)))
		for j := 32 * ib; j < 32*ib+32; j++ {
			L[j] = bestIndexIQ4(float32(idl * x[j]))
		}
		l += 32
		sl[ib/2] |= byte(l&0xF) << (4 * (ib % 2))
		sh |= uint16(l>>4) << (2 * ib)
	}
	le.PutUint16(dst[2:], sh)
	for i := 0; i < 8; i++ {
		packIQ4(dst[8+16*i:24+16*i], L[32*i:32*i+32])
	}
}

// packIQ4 stores 32 indices as 16 bytes: j low, j+16 high.
func packIQ4(qs []byte, L []uint8) {
	for j := 0; j < 16; j++ {
		qs[j] = L[j] | L[j+16]<<4
	}
}

// bestIndexIQ4 is ggml's best_index_int8 over kvalues_iq4nl: the nearest
// table entry (the upper one on a tie, NaN the last), found as the count of
// thresholds at or below x (four compares, no subtraction): it is the inner
// loop of the IQ4 quantisers.
func bestIndexIQ4(x float32) uint8 {
	if x != x {
		return 15
	}
	t := &iq4Thresholds
	n := 0
	if x >= t[7] {
		n = 8
	}
	if x >= t[n+3] {
		n += 4
	}
	if x >= t[n+1] {
		n += 2
	}
	if x >= t[n] {
		n++
	}
	return uint8(n)
}

// iq4Thresholds[k] (k < 15) is the least float32 that best_index_int8 maps
// past entry k: the search compares x - v[k] < v[k+1] - x in float32 after
// bisecting to v[k] <= x < v[k+1], a test that is monotone in x, so its
// answer changes at one value per pair, found here by bisection.
var iq4Thresholds = func() (t [15]float32) {
	for k := range t {
		a, b := float32(kvaluesIQ4NL[k]), float32(kvaluesIQ4NL[k+1])
		// lower(x): ggml keeps entry k. lower(a) holds and lower(b) does not.
		lower := func(x float32) bool { return x-a < b-x }
		lo, hi := a, b
		for math.Nextafter32(lo, hi) != hi {
			mid := float32((float64(lo) + float64(hi)) / 2)
			if mid == lo || mid == hi {
				mid = math.Nextafter32(lo, hi)
			}
			if lower(mid) {
				lo = mid
			} else {
				hi = mid
			}
		}
		t[k] = hi
	}
	return t
}()

// iq4GroupScale is the per-32-element part of ggml's
// quantize_row_iq4_nl_impl without an importance matrix (weights x²): a
// first scale from the largest magnitude, refined by least squares, then
// ntry scales either side; it returns the best scale and leaves the first
// guess's indices in L.
func iq4GroupScale(xb []float32, L []uint8, ntry int) float32 {
	var w [32]float32
	var amax, mx float32
	for j, v := range xb {
		w[j] = float32(v * v)
		if a := abs32(v); a > amax {
			amax, mx = a, v
		}
	}
	if amax < groupMaxEps {
		return 0
	}
	v0 := float32(kvaluesIQ4NL[0])
	d := mx / v0
	if ntry > 0 {
		d = -mx / v0
	}
	id := 1 / d
	var sumQX, sumQ2 float32
	for j, v := range xb {
		l := bestIndexIQ4(float32(id * v))
		L[j] = l
		q := float32(kvaluesIQ4NL[l])
		wq := float32(w[j] * q)
		sumQX += float32(wq * v)
		sumQ2 += float32(wq * q)
	}
	d = 0
	if sumQ2 > 0 {
		d = sumQX / sumQ2
	}
	best := float32(d * sumQX)
	for itry := -ntry; itry <= ntry; itry++ {
		id = float32(itry+int(kvaluesIQ4NL[0])) / mx
		sumQX, sumQ2 = 0, 0
		for j, v := range xb {
			q := float32(kvaluesIQ4NL[bestIndexIQ4(float32(id*v))])
			wq := float32(w[j] * q)
			sumQX += float32(wq * v)
			sumQ2 += float32(wq * q)
		}
		if sumQ2 > 0 && float32(sumQX*sumQX) > float32(best*sumQ2) {
			d = sumQX / sumQ2
			best = float32(d * sumQX)
		}
	}
	return d
}
