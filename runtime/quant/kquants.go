package quant

// K-quants: super-blocks of 256 elements (ggml's QK_K), split into
// sub-blocks that each carry a small integer scale (and for Q2_K, Q4_K,
// Q5_K a min) relative to the super-block's f16 d (and dmin).

const qkK = 256

// Byte layouts (ggml-common.h), offsets within one block:
//
//	block_q2_K (84):  scales[16] (lo nibble scale, hi nibble min) | qs[64] | d | dmin
//	block_q3_K (110): hmask[32] | qs[64] | scales[12] (16 packed 6-bit) | d
//	block_q4_K (144): d | dmin | scales[12] (8 scales + 8 mins, 6-bit) | qs[128]
//	block_q5_K (176): d | dmin | scales[12] | qh[32] | qs[128]
//	block_q6_K (210): ql[128] | qh[64] | scales[16] int8 | d

// scaleMinK4 unpacks sub-block j's 6-bit scale and min from the 12 bytes
// shared by Q4_K and Q5_K (ggml's get_scale_min_k4).
func scaleMinK4(j int, q []byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0xF | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

// packScaleMinK4 is the inverse of scaleMinK4 for 8 scales and 8 mins.
func packScaleMinK4(q []byte, ls, lm *[8]uint8) {
	clear(q[:12])
	for j := 0; j < 8; j++ {
		if j < 4 {
			q[j] = ls[j]
			q[j+4] = lm[j]
		} else {
			q[j+4] = ls[j]&0xF | (lm[j]&0xF)<<4
			q[j-4] |= (ls[j] >> 4) << 6
			q[j] |= (lm[j] >> 4) << 6
		}
	}
}

// scaleQ3 unpacks Q3_K's 6-bit scale j (0..15) and removes its bias of 32.
func scaleQ3(j int, s []byte) int {
	var lo byte
	if j < 8 {
		lo = s[j] & 0xF
	} else {
		lo = s[j-8] >> 4
	}
	hi := (s[8+j%4] >> (2 * (j / 4))) & 3
	return int(lo|hi<<4) - 32
}

// pack2bit stores 256 two-bit values the way Q2_K and Q3_K lay them out:
// byte 32h+l holds elements 128h+l, +32, +64, +96 in bits 0-1, 2-3, 4-5, 6-7.
func pack2bit(qs []byte, L []uint8) {
	for h := 0; h < 2; h++ {
		for l := 0; l < 32; l++ {
			b := 128*h + l
			qs[32*h+l] = L[b] | L[b+32]<<2 | L[b+64]<<4 | L[b+96]<<6
		}
	}
}

func decodeQ2_K(dst []float32, b []byte) {
	scales, qs := b[0:16], b[16:80]
	d, dmin := getF16(b[80:]), getF16(b[82:])
	is := 0
	for h := 0; h < 2; h++ {
		q := qs[32*h : 32*h+32]
		for shift := 0; shift < 8; shift += 2 {
			for half := 0; half < 2; half++ {
				sc := scales[is]
				is++
				dl := d * float32(sc&0xF)
				ml := dmin * float32(sc>>4)
				out := dst[128*h+16*(shift+half) : 128*h+16*(shift+half)+16]
				for l := 0; l < 16; l++ {
					out[l] = float32(dl*float32(q[16*half+l]>>shift&3)) - ml
				}
			}
		}
	}
}

func encodeQ2_K(dst []byte, x []float32) {
	var L [qkK]uint8
	var laux [16]uint8
	var w [16]float32
	var scales, mins [16]float32
	var maxScale, maxMin float32
	for j := 0; j < 16; j++ {
		xs := x[16*j : 16*j+16]
		for l, v := range xs {
			w[l] = abs32(v)
		}
		scales[j], mins[j] = searchScaleMin(xs, w[:], L[16*j:16*j+16], laux[:], 3, -0.5, 0.1, 15, true)
		maxScale = max(maxScale, scales[j])
		maxMin = max(maxMin, mins[j])
	}
	sc := dst[0:16]
	clear(sc)
	if maxScale > 0 {
		iscale := 15 / maxScale
		for j := range 16 {
			sc[j] = byte(clampInt(nearestInt(float32(iscale*scales[j])), 0, 15))
		}
		putF16(dst[80:], maxScale/15)
	} else {
		putF16(dst[80:], 0)
	}
	if maxMin > 0 {
		iscale := 15 / maxMin
		for j := range 16 {
			sc[j] |= byte(clampInt(nearestInt(float32(iscale*mins[j])), 0, 15)) << 4
		}
		putF16(dst[82:], maxMin/15)
	} else {
		putF16(dst[82:], 0)
	}
	d, dmin := getF16(dst[80:]), getF16(dst[82:])
	for j := 0; j < 16; j++ {
		dl := d * float32(sc[j]&0xF)
		if dl == 0 {
			continue
		}
		ml := dmin * float32(sc[j]>>4)
		for i := 0; i < 16; i++ {
			L[16*j+i] = uint8(clampInt(nearestInt((x[16*j+i]+ml)/dl), 0, 3))
		}
	}
	pack2bit(dst[16:80], L[:])
}

func decodeQ3_K(dst []float32, b []byte) {
	hmask, qs, scales := b[0:32], b[32:96], b[96:108]
	d := getF16(b[108:])
	is := 0
	m := byte(1)
	for h := 0; h < 2; h++ {
		q := qs[32*h : 32*h+32]
		for shift := 0; shift < 8; shift += 2 {
			for half := 0; half < 2; half++ {
				dl := d * float32(scaleQ3(is, scales))
				is++
				out := dst[128*h+16*(shift+half) : 128*h+16*(shift+half)+16]
				for l := 0; l < 16; l++ {
					v := int(q[16*half+l] >> shift & 3)
					if hmask[16*half+l]&m == 0 {
						v -= 4
					}
					out[l] = dl * float32(v)
				}
			}
			m <<= 1
		}
	}
}

func encodeQ3_K(dst []byte, x []float32) {
	var L [qkK]int8
	var scales [16]float32
	var maxScale, amax float32
	for j := 0; j < 16; j++ {
		scales[j] = searchScaleQ3(x[16*j:16*j+16], L[16*j:16*j+16], 4)
		if a := abs32(scales[j]); a > amax {
			amax, maxScale = a, scales[j]
		}
	}
	sc := dst[96:108]
	clear(sc)
	if maxScale != 0 {
		iscale := -32 / maxScale
		for j := 0; j < 16; j++ {
			l := clampInt(nearestInt(float32(iscale*scales[j])), -32, 31) + 32
			if j < 8 {
				sc[j] = byte(l & 0xF)
			} else {
				sc[j-8] |= byte(l&0xF) << 4
			}
			sc[8+j%4] |= byte(l>>4) << (2 * (j / 4))
		}
		putF16(dst[108:], 1/iscale)
	} else {
		putF16(dst[108:], 0)
	}
	d := getF16(dst[108:])
	for j := 0; j < 16; j++ {
		dl := d * float32(scaleQ3(j, sc))
		if dl == 0 {
			continue
		}
		for i := 0; i < 16; i++ {
			L[16*j+i] = int8(clampInt(nearestInt(x[16*j+i]/dl), -4, 3) + 4)
		}
	}
	// Bit 2 of element e goes to hmask[e%32] bit e/32.
	hmask := dst[0:32]
	clear(hmask)
	var low [qkK]uint8
	for e, l := range L {
		if l > 3 {
			hmask[e%32] |= 1 << (e / 32)
			l -= 4
		}
		low[e] = uint8(l)
	}
	pack2bit(dst[32:96], low[:])
}

func decodeQ4_K(dst []float32, b []byte) {
	d, dmin := getF16(b), getF16(b[2:])
	scales, qs := b[4:16], b[16:144]
	for p := 0; p < 4; p++ {
		sc1, m1 := scaleMinK4(2*p, scales)
		sc2, m2 := scaleMinK4(2*p+1, scales)
		d1, dm1 := d*float32(sc1), dmin*float32(m1)
		d2, dm2 := d*float32(sc2), dmin*float32(m2)
		q := qs[32*p : 32*p+32]
		out := dst[64*p : 64*p+64]
		for l := 0; l < 32; l++ {
			out[l] = float32(d1*float32(q[l]&0xF)) - dm1
			out[l+32] = float32(d2*float32(q[l]>>4)) - dm2
		}
	}
}

// encodeScaleMinK4 quantises the 8 sub-block scales and mins of a Q4_K or
// Q5_K super-block to 6 bits, writes them with d and dmin, and requantises
// x to L (values 0..nmax) with the stored scales.
func encodeScaleMinK4(dst []byte, x []float32, L []uint8, scales, mins *[8]float32, nmax int) {
	var maxScale, maxMin float32
	for j := range 8 {
		maxScale = max(maxScale, scales[j])
		maxMin = max(maxMin, mins[j])
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	var ls, lm [8]uint8
	for j := range 8 {
		ls[j] = uint8(clampInt(nearestInt(float32(invScale*scales[j])), 0, 63))
		lm[j] = uint8(clampInt(nearestInt(float32(invMin*mins[j])), 0, 63))
	}
	packScaleMinK4(dst[4:16], &ls, &lm)
	putF16(dst[0:], maxScale/63)
	putF16(dst[2:], maxMin/63)
	d, dmin := getF16(dst[0:]), getF16(dst[2:])
	for j := range 8 {
		sc, m := scaleMinK4(j, dst[4:16])
		dl := d * float32(sc)
		if dl == 0 {
			continue
		}
		ml := dmin * float32(m)
		for i := 0; i < 32; i++ {
			L[32*j+i] = uint8(clampInt(nearestInt((x[32*j+i]+ml)/dl), 0, nmax))
		}
	}
}

// subBlockFits runs the weighted scale/min search on the eight 32-element
// sub-blocks, weighting each element by the sub-block's RMS plus |x|.
func subBlockFits(x []float32, L []uint8, nmax int, rmin, rdelta float32, nstep int) (scales, mins [8]float32) {
	var w [32]float32
	var laux [32]uint8
	for j := range 8 {
		xs := x[32*j : 32*j+32]
		var sumX2 float32
		for _, v := range xs {
			sumX2 += float32(v * v)
		}
		avX := float32(sqrt32(sumX2 / 32))
		for l, v := range xs {
			w[l] = avX + abs32(v)
		}
		scales[j], mins[j] = searchScaleMin(xs, w[:], L[32*j:32*j+32], laux[:], nmax, rmin, rdelta, nstep, false)
	}
	return scales, mins
}

func encodeQ4_K(dst []byte, x []float32) {
	var L [qkK]uint8
	scales, mins := subBlockFits(x, L[:], 15, -1, 0.1, 20)
	encodeScaleMinK4(dst, x, L[:], &scales, &mins, 15)
	qs := dst[16:144]
	for p := 0; p < 4; p++ {
		for l := 0; l < 32; l++ {
			qs[32*p+l] = L[64*p+l] | L[64*p+l+32]<<4
		}
	}
}

func decodeQ5_K(dst []float32, b []byte) {
	d, dmin := getF16(b), getF16(b[2:])
	scales, qh, qs := b[4:16], b[16:48], b[48:176]
	for p := 0; p < 4; p++ {
		sc1, m1 := scaleMinK4(2*p, scales)
		sc2, m2 := scaleMinK4(2*p+1, scales)
		d1, dm1 := d*float32(sc1), dmin*float32(m1)
		d2, dm2 := d*float32(sc2), dmin*float32(m2)
		u1, u2 := byte(1)<<(2*p), byte(2)<<(2*p)
		q := qs[32*p : 32*p+32]
		out := dst[64*p : 64*p+64]
		for l := 0; l < 32; l++ {
			lo, hi := int(q[l]&0xF), int(q[l]>>4)
			if qh[l]&u1 != 0 {
				lo += 16
			}
			if qh[l]&u2 != 0 {
				hi += 16
			}
			out[l] = float32(d1*float32(lo)) - dm1
			out[l+32] = float32(d2*float32(hi)) - dm2
		}
	}
}

func encodeQ5_K(dst []byte, x []float32) {
	var L [qkK]uint8
	scales, mins := subBlockFits(x, L[:], 31, -0.5, 0.1, 15)
	encodeScaleMinK4(dst, x, L[:], &scales, &mins, 31)
	qh, qs := dst[16:48], dst[48:176]
	clear(qh)
	for p := 0; p < 4; p++ {
		for l := 0; l < 32; l++ {
			lo, hi := L[64*p+l], L[64*p+l+32]
			if lo > 15 {
				lo -= 16
				qh[l] |= 1 << (2 * p)
			}
			if hi > 15 {
				hi -= 16
				qh[l] |= 2 << (2 * p)
			}
			qs[32*p+l] = lo | hi<<4
		}
	}
}

func decodeQ6_K(dst []float32, b []byte) {
	ql, qh, sc := b[0:128], b[128:192], b[192:208]
	d := getF16(b[208:])
	for h := 0; h < 2; h++ {
		l0, h0, s0 := ql[64*h:], qh[32*h:], sc[8*h:]
		out := dst[128*h : 128*h+128]
		for l := 0; l < 32; l++ {
			is := l / 16
			q1 := int(l0[l]&0xF|(h0[l]>>0&3)<<4) - 32
			q2 := int(l0[l+32]&0xF|(h0[l]>>2&3)<<4) - 32
			q3 := int(l0[l]>>4|(h0[l]>>4&3)<<4) - 32
			q4 := int(l0[l+32]>>4|(h0[l]>>6&3)<<4) - 32
			out[l] = float32(d*float32(int8(s0[is]))) * float32(q1)
			out[l+32] = float32(d*float32(int8(s0[is+2]))) * float32(q2)
			out[l+64] = float32(d*float32(int8(s0[is+4]))) * float32(q3)
			out[l+96] = float32(d*float32(int8(s0[is+6]))) * float32(q4)
		}
	}
}

func encodeQ6_K(dst []byte, x []float32) {
	var L [qkK]int8
	var scales [16]float32
	var maxScale, maxAbs float32
	for j := 0; j < 16; j++ {
		scales[j] = searchScaleSymmetric(x[16*j:16*j+16], L[16*j:16*j+16], 32)
		if a := abs32(scales[j]); a > maxAbs {
			maxAbs, maxScale = a, scales[j]
		}
	}
	if maxAbs < groupMaxEps {
		clear(dst[:210])
		return
	}
	iscale := -128 / maxScale
	putF16(dst[208:], 1/iscale)
	sc := dst[192:208]
	for j := 0; j < 16; j++ {
		sc[j] = byte(int8(clampInt(nearestInt(float32(iscale*scales[j])), -128, 127)))
	}
	d := getF16(dst[208:])
	for j := 0; j < 16; j++ {
		dl := d * float32(int8(sc[j]))
		if dl == 0 {
			continue
		}
		for i := 0; i < 16; i++ {
			L[16*j+i] = int8(clampInt(nearestInt(x[16*j+i]/dl), -32, 31) + 32)
		}
	}
	ql, qh := dst[0:128], dst[128:192]
	for h := 0; h < 2; h++ {
		for l := 0; l < 32; l++ {
			e := 128*h + l
			q1, q2, q3, q4 := uint8(L[e]), uint8(L[e+32]), uint8(L[e+64]), uint8(L[e+96])
			ql[64*h+l] = q1&0xF | (q3&0xF)<<4
			ql[64*h+l+32] = q2&0xF | (q4&0xF)<<4
			qh[32*h+l] = q1>>4 | (q2>>4)<<2 | (q3>>4)<<4 | (q4>>4)<<6
		}
	}
}
