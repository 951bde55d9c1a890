package ref

import "math"

// Softmax over rows: dst[r*dstStride+c] = exp(x[r*xStride+c] - max_r) / sum_r
// for c < cols. Entries equal to -inf count as masked: they get 0, a row
// with a single finite entry is one-hot and a row entirely -inf is zeros.
// Elements between cols and the stride are not touched.
func Softmax(dst, x []float64, rows, cols, dstStride, xStride int) {
	for r := 0; r < rows; r++ {
		row := x[r*xStride : r*xStride+cols]
		out := dst[r*dstStride : r*dstStride+cols]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, v)
		}
		if math.IsInf(m, -1) {
			for c := range out {
				out[c] = 0
			}
			continue
		}
		s := 0.0
		for c, v := range row {
			out[c] = math.Exp(v - m) // exp(-inf) = 0
			s += out[c]
		}
		for c := range out {
			out[c] /= s
		}
	}
}

// CausalMask sets scores[h*headStride + i*rowStride + j] to -inf where key j
// lies after query i's absolute position qOffset+i, for h < heads, i < nq,
// j < nk. Nothing else is touched.
func CausalMask(scores []float64, heads, nq, nk, rowStride, headStride, qOffset int) {
	for h := 0; h < heads; h++ {
		for i := 0; i < nq; i++ {
			for j := qOffset + i + 1; j < nk; j++ {
				scores[h*headStride+i*rowStride+j] = math.Inf(-1)
			}
		}
	}
}

// WeightedSum: out[(i*heads+h)*headDim+d] = sum_j probs[h*probHeadStride +
// i*probRowStride + j] * v[j*vTokenStride + (h/(heads/kvHeads))*headDim + d].
func WeightedSum(out, probs, v []float64, heads, kvHeads, nq, nk, headDim,
	probRowStride, probHeadStride, vTokenStride int) {
	group := heads / kvHeads
	for i := 0; i < nq; i++ {
		for h := 0; h < heads; h++ {
			kvh := h / group
			for d := 0; d < headDim; d++ {
				s := 0.0
				for j := 0; j < nk; j++ {
					s += probs[h*probHeadStride+i*probRowStride+j] * v[j*vTokenStride+kvh*headDim+d]
				}
				out[(i*heads+h)*headDim+d] = s
			}
		}
	}
}

// AttentionShape describes the token-major tensors of Attention:
// q and out [Batch, Queries, Heads, HeadDim], k and v [Batch, KVCap,
// KVHeads, HeadDim] of which the first KVLen tokens are used.
type AttentionShape struct {
	Batch, Queries, Heads, KVHeads, HeadDim int
	KVCap, KVLen                            int
	Causal                                  bool
	QOffset                                 int     // absolute position of query 0 (causal, or with Window)
	Scale                                   float64 // applied to q·k
	// SoftCap > 0 caps each scaled score: SoftCap·tanh(s/SoftCap).
	SoftCap float64
	// Window > 0 masks key j for the query at position p when p-j >= Window.
	Window int
	// Sinks, when set, holds one logit per head that joins each softmax's
	// max and denominator with no value (gpt-oss).
	Sinks []float64
}

// Attention is softmax(q·kᵀ·scale + mask)·v computed the plain way: the
// full score row per query, then the masked softmax, then the weighted sum.
// Head h reads kv head h/(Heads/KVHeads). A query that sees no key gets 0.
// SoftCap, Window and Sinks modify the scores and the softmax as
// llama.cpp's build_attn_mha does (see AttentionShape).
func Attention(out, q, k, v []float64, s AttentionShape) {
	group := s.Heads / s.KVHeads
	D := s.HeadDim
	scores := make([]float64, s.KVLen)
	probs := make([]float64, s.KVLen)
	for b := 0; b < s.Batch; b++ {
		for i := 0; i < s.Queries; i++ {
			for h := 0; h < s.Heads; h++ {
				kvh := h / group
				qrow := q[((b*s.Queries+i)*s.Heads+h)*D:][:D]
				for j := 0; j < s.KVLen; j++ {
					krow := k[((b*s.KVCap+j)*s.KVHeads+kvh)*D:][:D]
					dot := 0.0
					for d := range qrow {
						dot += qrow[d] * krow[d]
					}
					scores[j] = dot * s.Scale
					if s.SoftCap > 0 {
						scores[j] = s.SoftCap * math.Tanh(scores[j]/s.SoftCap)
					}
					if s.Window > 0 && s.QOffset+i-j >= s.Window {
						scores[j] = math.Inf(-1)
					}
				}
				if s.Causal {
					CausalMask(scores, 1, 1, s.KVLen, s.KVLen, s.KVLen, s.QOffset+i)
				}
				if s.Sinks != nil {
					SoftmaxSink(probs, scores, s.Sinks[h])
				} else {
					Softmax(probs, scores, 1, s.KVLen, s.KVLen, s.KVLen)
				}
				orow := out[((b*s.Queries+i)*s.Heads+h)*D:][:D]
				for d := range orow {
					acc := 0.0
					for j := 0; j < s.KVLen; j++ {
						acc += probs[j] * v[((b*s.KVCap+j)*s.KVHeads+kvh)*D+d]
					}
					orow[d] = acc
				}
			}
		}
	}
}

// SoftmaxSink is the softmax of one row whose denominator also counts
// exp(sink) (ggml_soft_max_add_sinks): with m = max(max_c x[c], sink),
// dst[c] = exp(x[c]-m) / (Σ_c exp(x[c]-m) + exp(sink-m)). -inf entries
// get 0; a row entirely -inf is zeros.
func SoftmaxSink(dst, x []float64, sink float64) {
	m := sink
	for _, v := range x {
		m = math.Max(m, v)
	}
	sum := math.Exp(sink - m)
	for c, v := range x {
		dst[c] = math.Exp(v - m)
		sum += dst[c]
	}
	for c := range dst {
		dst[c] /= sum
	}
}
