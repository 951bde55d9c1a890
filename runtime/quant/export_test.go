package quant

// Exported for the tests.
var (
	BestIndexIQ4       = bestIndexIQ4
	BestIndexIQ4Search = bestIndexIQ4Search
	IQ4Thresholds      = iq4Thresholds
)

// bestIndexIQ4Search is ggml's best_index_int8 written as ggml writes it,
// which bestIndexIQ4 must agree with.
func bestIndexIQ4Search(x float32) uint8 {
	val := &kvaluesIQ4NL
	if x <= float32(val[0]) {
		return 0
	}
	if x >= float32(val[15]) {
		return 15
	}
	ml, mu := 0, 15
	for mu-ml > 1 {
		mav := (ml + mu) / 2
		if x < float32(val[mav]) {
			mu = mav
		} else {
			ml = mav
		}
	}
	if x-float32(val[mu-1]) < float32(val[mu])-x {
		return uint8(mu - 1)
	}
	return uint8(mu)
}
