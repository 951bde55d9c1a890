package ref

import (
	"math"
	"sort"
)

// Philox4x32 is the Philox4x32-10 counter-based generator (Salmon et al.,
// "Parallel random numbers: as easy as 1, 2, 3", 2011; Random123's
// philox4x32_10): ten rounds over a 128-bit counter with a 64-bit key.
func Philox4x32(key [2]uint32, ctr [4]uint32) [4]uint32 {
	const m0, m1, w0, w1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
	for r := 0; r < 10; r++ {
		if r > 0 {
			key[0] += w0
			key[1] += w1
		}
		p0 := uint64(m0) * uint64(ctr[0])
		p1 := uint64(m1) * uint64(ctr[2])
		ctr = [4]uint32{uint32(p1>>32) ^ ctr[1] ^ key[0], uint32(p1), uint32(p0>>32) ^ ctr[3] ^ key[1], uint32(p0)}
	}
	return ctr
}

// SampleUniform is the draw's uniform number in [0, 1) for a seed and a
// step: the top 24 bits of Philox word 0, keyed by the seed, counting the
// step (exact in float32 too).
func SampleUniform(seed, step uint64) float64 {
	out := Philox4x32([2]uint32{uint32(seed), uint32(seed >> 32)}, [4]uint32{uint32(step), uint32(step >> 32), 0, 0})
	return float64(out[0]>>8) / (1 << 24)
}

// SampleParams are the sampling chain's settings (runtime/sample's).
type SampleParams struct {
	Temperature                                      float64 // 0: greedy
	TopK                                             int     // 0: off
	TopP, MinP                                       float64 // 1, 0: off
	RepeatPenalty, FrequencyPenalty, PresencePenalty float64 // 1, 0, 0: off
}

// SampleRow picks a token from one row of logits with llama.cpp's chain
// (penalties over the window's tokens → top-k → top-p → min-p →
// temperature → a draw with u in [0, 1)), ties broken by lower id. The
// candidates are in best-first order when top-k or top-p sorted them, by
// id otherwise, and the draw takes the first whose cumulative probability
// exceeds u. It returns -1 when a logit is NaN or +Inf or all are -Inf.
func SampleRow(logits []float64, p SampleParams, window []int32, u float64) int {
	l := append([]float64(nil), logits...)
	anyFinite := false
	for _, v := range l {
		if math.IsNaN(v) || math.IsInf(v, 1) {
			return -1
		}
		anyFinite = anyFinite || !math.IsInf(v, -1)
	}
	if !anyFinite {
		return -1
	}
	// Penalties: once per distinct token of the window.
	count := map[int32]int{}
	for _, id := range window {
		count[id]++
	}
	for id, c := range count {
		v := l[id]
		if v <= 0 {
			v *= p.RepeatPenalty
		} else {
			v /= p.RepeatPenalty
		}
		l[id] = v - (float64(c)*p.FrequencyPenalty + p.PresencePenalty)
	}
	ids := make([]int, len(l))
	for i := range ids {
		ids[i] = i
	}
	better := func(a, b int) bool { return l[a] > l[b] || (l[a] == l[b] && a < b) }
	if p.Temperature == 0 {
		best := -1
		for i, v := range l {
			if !math.IsInf(v, -1) && (best < 0 || better(i, best)) {
				best = i
			}
		}
		return best
	}
	if p.TopK > 0 && p.TopK < len(ids) {
		sort.Slice(ids, func(a, b int) bool { return better(ids[a], ids[b]) })
		ids = ids[:p.TopK]
	}
	if p.TopP < 1 {
		sort.Slice(ids, func(a, b int) bool { return better(ids[a], ids[b]) })
		top := l[ids[0]]
		total := 0.0
		for _, i := range ids {
			total += math.Exp(l[i] - top)
		}
		cum := 0.0
		for n, i := range ids {
			cum += math.Exp(l[i]-top) / total
			if cum >= p.TopP {
				ids = ids[:n+1]
				break
			}
		}
	}
	if p.MinP > 0 {
		top := math.Inf(-1)
		for _, i := range ids {
			top = math.Max(top, l[i])
		}
		kept := ids[:0:0]
		for _, i := range ids {
			if l[i] >= top+math.Log(p.MinP) {
				kept = append(kept, i)
			}
		}
		ids = kept
	}
	top := math.Inf(-1)
	for _, i := range ids {
		top = math.Max(top, l[i])
	}
	probs := make([]float64, len(ids))
	total := 0.0
	for n, i := range ids {
		probs[n] = math.Exp((l[i] - top) / p.Temperature)
		total += probs[n]
	}
	cum := 0.0
	for n, pr := range probs {
		cum += pr / total
		if u < cum {
			return ids[n]
		}
	}
	for n := len(ids) - 1; n > 0; n-- { // rounding left u above the total
		if probs[n] > 0 {
			return ids[n]
		}
	}
	return ids[0]
}
