package engine

import (
	"fmt"
	"math"

	"github.com/wgllm/wgllm/runtime/model"
)

// PerplexityResult is llama.cpp's perplexity estimate.
type PerplexityResult struct {
	PPL, Err float64
	Chunks   int
	Scored   int // predictions scored
}

// Perplexity scores text as llama.cpp's perplexity tool does: the text is
// tokenised (BOS first if the model adds one) and cut into chunks of ctx
// tokens, each chunk starts with BOS, and only the predictions of the second
// half of each chunk are scored. chunkDone, if set, gets each chunk's running
// estimate.
func (g *Generator) Perplexity(text string, ctx int, chunkDone func(chunk int, ppl float64)) (PerplexityResult, error) {
	var res PerplexityResult
	addBOS := g.Tok.AddBOS()
	ids := g.Tok.Encode(text, addBOS)
	capacity := g.M.KV.Config().MaxSeqLen
	if ctx < 4 || ctx > capacity {
		return res, fmt.Errorf("engine: perplexity context %d: want 4..%d", ctx, capacity)
	}
	nChunks := len(ids) / ctx
	if nChunks == 0 {
		return res, fmt.Errorf("engine: %d tokens are fewer than one chunk of %d", len(ids), ctx)
	}
	vocab := g.M.Cfg.Vocab
	logits := make([]float32, ctx*vocab)
	seq, err := g.M.KV.Acquire()
	if err != nil {
		return res, err
	}
	defer g.M.KV.Release(seq)
	first := ctx / 2
	var nll, nll2 float64
	chunk := make([]int32, ctx)
	for c := 0; c < nChunks; c++ {
		copy(chunk, ids[c*ctx:(c+1)*ctx])
		if addBOS {
			chunk[0] = g.Tok.BOS()
		}
		if err := g.M.KV.Truncate(seq, 0); err != nil {
			return res, err
		}
		// Feed the chunk in batches, collecting every position's logits.
		for s := 0; s < ctx; s += g.M.Batch() {
			e := min(s+g.M.Batch(), ctx)
			if _, err := g.M.Forward(seq, chunk[s:e], model.AllLogits, logits[s*vocab:]); err != nil {
				return res, err
			}
		}
		for j := first; j < ctx-1; j++ {
			lp := logSoftmaxAt(logits[j*vocab:(j+1)*vocab], int(ids[c*ctx+j+1]))
			nll -= lp
			nll2 += lp * lp
			res.Scored++
		}
		if chunkDone != nil {
			chunkDone(c, math.Exp(nll/float64(res.Scored)))
		}
	}
	res.Chunks = nChunks
	n := float64(res.Scored)
	mean := nll / n
	res.PPL = math.Exp(mean)
	if v := nll2/n - mean*mean; v > 0 && n > 1 {
		res.Err = math.Sqrt(v/(n-1)) * res.PPL
	}
	return res, nil
}

// logSoftmaxAt is log(softmax(logits)[i]) in float64.
func logSoftmaxAt(logits []float32, i int) float64 {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	s := 0.0
	for _, v := range logits {
		s += math.Exp(float64(v) - mx)
	}
	return float64(logits[i]) - mx - math.Log(s)
}
