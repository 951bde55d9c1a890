package sample

import (
	"fmt"
	"math"
)

// MaxTopLogprobs bounds LogProbs' alternatives (OpenAI's limit).
const MaxTopLogprobs = 20

// TokenLogprob is a token and its log-probability.
type TokenLogprob struct {
	ID      int32
	Logprob float32
}

// LogProbs gives the log-probability of token id under the softmax of the
// model's raw logits (no penalties, bias, mask or temperature: the model's
// own distribution, as llama.cpp's server and OpenAI report it) and the top
// most likely tokens, best first (ties by lower id), appended to dst.
func LogProbs(logits []float32, id int32, top int, dst []TokenLogprob) (float32, []TokenLogprob, error) {
	if id < 0 || int(id) >= len(logits) {
		return 0, dst, fmt.Errorf("sample: token %d is outside the %d logits", id, len(logits))
	}
	if top < 0 || top > MaxTopLogprobs {
		return 0, dst, fmt.Errorf("sample: top_logprobs %d must be in [0, %d]", top, MaxTopLogprobs)
	}
	maxLogit := float32(math.Inf(-1))
	for _, l := range logits {
		maxLogit = max(maxLogit, l)
	}
	sum := 0.0
	for _, l := range logits {
		sum += math.Exp(float64(l - maxLogit))
	}
	logZ := float64(maxLogit) + math.Log(sum)
	lp := func(l float32) float32 { return float32(float64(l) - logZ) }
	// Keep the top best in a small sorted buffer: top is at most 20.
	start := len(dst)
	for i, l := range logits {
		n := len(dst) - start
		if n == top && (top == 0 || l <= logits[dst[len(dst)-1].ID]) {
			continue
		}
		c := TokenLogprob{ID: int32(i), Logprob: l}
		pos := start + n
		for pos > start && dst[pos-1].Logprob < l {
			pos--
		}
		if n < top {
			dst = append(dst, TokenLogprob{})
		}
		copy(dst[pos+1:], dst[pos:len(dst)-1])
		dst[pos] = c
	}
	for i := start; i < len(dst); i++ {
		dst[i].Logprob = lp(dst[i].Logprob)
	}
	return lp(logits[id]), dst, nil
}
