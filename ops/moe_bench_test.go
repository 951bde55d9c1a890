package ops_test

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// expertBenchCase is one expert matvec of a decode token: experts stacked
// matrices [experts, n, k] (n counts gate and up rows when pair), used of
// them per token.
type expertBenchCase struct {
	name                string
	dt                  ops.DType
	experts, used, n, k int
	pair, bias          bool
	act                 ops.Activation
}

// The MoE layers of Qwen3-30B-A3B (128 experts, top 8, dim 2048, expert
// FFN 768; Q4_K_M: gate and up Q4_K, down Q6_K or Q4_K) and gpt-oss-20b (32
// experts, top 4, dim 2880, FFN 2880, MXFP4 with biases), gate and up
// joined as the model loads them.
var expertBenchCases = []expertBenchCase{
	{name: "qwen3-30b-a3b/gate_up_q4_k", dt: ops.Q4_K, experts: 128, used: 8, n: 2 * 768, k: 2048, pair: true},
	{name: "qwen3-30b-a3b/down_q6_k", dt: ops.Q6_K, experts: 128, used: 8, n: 2048, k: 768},
	{name: "qwen3-30b-a3b/down_q4_k", dt: ops.Q4_K, experts: 128, used: 8, n: 2048, k: 768},
	{name: "gpt-oss-20b/gate_up_mxfp4", dt: ops.MXFP4, experts: 32, used: 4, n: 2 * 2880, k: 2880, pair: true, bias: true, act: ops.ActSwiGLUOAI},
	{name: "gpt-oss-20b/down_mxfp4", dt: ops.MXFP4, experts: 32, used: 4, n: 2880, k: 2880, bias: true},
}

// BenchmarkMatVecExperts: the expert matvecs of one decode token
// (ops.MatVecExperts, MatVecExpertsGated) at the shapes above; GB/s counts
// the selected experts' weight bytes as stored. Next to each, "dense" is
// MatVecQuant over a [used·n, k] matrix of the same type: the same bytes
// read by the dense kernel, the speed to reach. Successive calls route the
// token to the next of experts/used disjoint sets of experts, so every
// expert's weights are read in turn and, as in decoding, from DRAM (each
// stacked matrix is larger than the GPU's L2).
//
//	go test ./ops -run '^$' -bench 'MatVecExperts' -benchtime 2000x
func BenchmarkMatVecExperts(b *testing.B) {
	for _, c := range expertBenchCases {
		b.Run(c.name+"/experts", func(b *testing.B) { benchExperts(b, c) })
		b.Run(c.name+"/dense", func(b *testing.B) { benchMatVecQuant(b, c.dt, c.used*c.n, c.k, 1) })
	}
}

func benchExperts(b *testing.B, c expertBenchCase) {
	selected := c.used * c.n * (c.k / c.dt.BlockSize() * c.dt.BlockBytes())
	ctx := quantBenchCtx(b, selected)
	rng := rand.New(rand.NewSource(1))
	tensor := func(label string, dt ops.DType, shape ...int) ops.Tensor {
		t, err := ops.New(ctx, label, dt, shape...)
		must(b, err)
		b.Cleanup(t.Buf.Destroy)
		return t
	}
	if all := uint64(c.experts * c.n * (c.k / c.dt.BlockSize() * c.dt.BlockBytes())); all > ctx.MaxBinding() {
		b.Skipf("the %d experts' %d bytes exceed this adapter's storage binding of %d", c.experts, all, ctx.MaxBinding())
	}
	w, err := ops.FromBytes(ctx, "w", c.dt, randomBlocks(rng, c.dt, c.experts*c.n*c.k), c.experts, c.n, c.k)
	must(b, err)
	b.Cleanup(w.Buf.Destroy)
	var bias *ops.Tensor
	if c.bias {
		bt, err := ops.FromFloat32(ctx, "bias", ops.F32, gputest.Rand(rng, c.experts*c.n, 1), c.experts, c.n)
		must(b, err)
		b.Cleanup(bt.Buf.Destroy)
		bias = &bt
	}
	out := c.n
	if c.pair {
		out /= 2
	}
	// Gate and up read the token's row (xPer = used); down the slots' rows.
	xRows, xPer := 1, c.used
	if !c.pair {
		xRows, xPer = c.used, 1
	}
	x, err := ops.FromFloat32(ctx, "x", ops.F32, gputest.Rand(rng, xRows*c.k, 1), xRows, c.k)
	must(b, err)
	b.Cleanup(x.Buf.Destroy)
	dst := tensor("dst", ops.F32, c.used, out)
	// One routing table per disjoint set of experts: logits that put the
	// set's experts far above the rest.
	perm := rng.Perm(c.experts)
	ids, wts := tensor("ids", ops.U32, 1, c.used), tensor("wts", ops.F32, 1, c.used)
	var routes []ops.Tensor
	enc, err := ctx.NewEncoder()
	must(b, err)
	for s := 0; s+c.used <= c.experts; s += c.used {
		logits := make([]float32, c.experts)
		for j, e := range perm[s : s+c.used] {
			logits[e] = 8 - float32(j)/16
		}
		lt, err := ops.FromFloat32(ctx, "logits", ops.F32, logits, 1, c.experts)
		must(b, err)
		b.Cleanup(lt.Buf.Destroy)
		r := tensor(fmt.Sprintf("route%d", len(routes)), ops.U32, ops.RouteLen(c.experts, c.used))
		must(b, ops.MoERoute(enc, ids, wts, r, lt, ops.RouteOpts{K: c.used}))
		routes = append(routes, r)
	}
	must(b, enc.SubmitAndWait())
	timeSubmission(b, ctx, selected, func(enc *gpu.Encoder, i int) error {
		r := routes[i%len(routes)]
		if c.pair {
			return ops.MatVecExpertsGated(enc, dst, w, x, r, bias, xPer, c.act)
		}
		return ops.MatVecExperts(enc, dst, w, x, r, bias, xPer)
	})
}
