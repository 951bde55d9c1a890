package ref

import (
	"math"
	"sort"
)

// Gating functions of Route, as ops.Gating numbers them.
const (
	GateSoftmax     = 0 // softmax over all experts, then the top k
	GateSigmoid     = 1 // sigmoid per expert, then the top k
	GateSoftmaxTopK = 2 // the top k logits, softmax over those
)

// Route is one token's expert choice as llama.cpp's build_moe_ffn makes it:
// the probabilities by gating, the k largest (ties: the lower id) in
// decreasing order, their weights (softmax over the chosen for
// GateSoftmaxTopK), divided by their sum when normalize (clamped at
// 6.103515625e-5), times scale.
func Route(logits []float64, k, gating int, normalize bool, scale float64) (ids []int, w []float64) {
	probs := make([]float64, len(logits))
	mx := math.Inf(-1)
	for _, l := range logits {
		mx = math.Max(mx, l)
	}
	sum := 0.0
	for _, l := range logits {
		sum += math.Exp(l - mx)
	}
	for e, l := range logits {
		switch gating {
		case GateSoftmax:
			probs[e] = math.Exp(l-mx) / sum
		case GateSigmoid:
			probs[e] = 1 / (1 + math.Exp(-l))
		default:
			probs[e] = l
		}
	}
	order := make([]int, len(logits))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return probs[order[a]] > probs[order[b]] })
	ids = order[:k]
	w = make([]float64, k)
	for j, e := range ids {
		w[j] = probs[e]
	}
	if gating == GateSoftmaxTopK {
		Softmax(w, w, 1, k, k, k)
	}
	if normalize {
		t := 0.0
		for _, v := range w {
			t += v
		}
		t = math.Max(t, 6.103515625e-5)
		for j := range w {
			w[j] /= t
		}
	}
	for j := range w {
		w[j] *= scale
	}
	return ids, w
}

// Sigmoid is 1/(1+exp(-x)).
func Sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
