package ops_test

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// Projections [N, K] for the quantised matmul: TinyLlama's q/o (2048x2048),
// gate/up (5632x2048) and down (2048x5632); Llama-3-8B's gate/up
// (14336x4096) and down (4096x14336).
var matMulQuantBenchShapes = [][2]int{{2048, 2048}, {5632, 2048}, {2048, 5632}, {14336, 4096}, {4096, 14336}}

// BenchmarkMatMulQuant compares three ways to multiply M rows of x by a
// quantised weight: "quant" (MatMulQuant, the weight read in place),
// "dequant" (Dequantize to f16 scratch, then MatMul: today's prefill path)
// and "matvec8" (MatVecQuant once per 8 rows: today's decode path for
// batches). GB/s counts the weight bytes as stored, once per op; TFLOP/s
// counts 2·M·N·K. Weights rotate through copies so they come from DRAM.
//
//	go test ./ops -run '^$' -bench '^BenchmarkMatMulQuant$' -benchtime 1s
func BenchmarkMatMulQuant(b *testing.B) {
	for _, dt := range []ops.DType{ops.Q4_0, ops.Q4_K, ops.Q6_K, ops.Q8_0} {
		for _, sh := range matMulQuantBenchShapes {
			for _, m := range []int{16, 64, 512} {
				for _, method := range []string{"quant", "dequant", "matvec8"} {
					n, k := sh[0], sh[1]
					b.Run(fmt.Sprintf("%s/%dx%d/m%d/%s", dt, n, k, m, method), func(b *testing.B) {
						benchMatMulQuant(b, dt, n, k, m, method, -1)
					})
				}
			}
		}
	}
}

// BenchmarkMatMulQuantTiles runs MatMulQuant with each of its tiles forced,
// to set the tile choice (matMulQuantPick) by measurement.
//
//	go test ./ops -run '^$' -bench '^BenchmarkMatMulQuantTiles$' -benchtime 1s
func BenchmarkMatMulQuantTiles(b *testing.B) {
	for _, dt := range []ops.DType{ops.Q4_0, ops.Q4_K} {
		for _, sh := range matMulQuantBenchShapes {
			for _, m := range []int{16, 32, 64, 512} {
				for tile := 0; tile < ops.MatMulQuantTiles; tile++ {
					n, k := sh[0], sh[1]
					b.Run(fmt.Sprintf("%s/%dx%d/m%d/t%s", dt, n, k, m, ops.MatMulQuantTileName(tile)), func(b *testing.B) {
						benchMatMulQuant(b, dt, n, k, m, "quant", tile)
					})
				}
			}
		}
	}
}

func benchMatMulQuant(b *testing.B, dt ops.DType, n, k, m int, method string, tile int) {
	bytes := n * k / dt.BlockSize() * dt.BlockBytes()
	flops := 2 * float64(m) * float64(n) * float64(k)
	ctx := gputest.BenchCtx(b, bytes > 8<<20 || flops > 1e9)
	if tile >= 0 {
		b.Cleanup(ops.SetMatMulQuantTile(tile))
	}
	rng := rand.New(rand.NewSource(1))
	raw := randomBlocks(rng, dt, n*k)
	ws := make([]ops.Tensor, copiesFor(ctx, bytes))
	for i := range ws {
		w, err := ops.FromBytes(ctx, "w", dt, raw, n, k)
		must(b, err)
		b.Cleanup(w.Buf.Destroy)
		ws[i] = w
	}
	x, err := ops.FromFloat32(ctx, "x", ops.F32, gputest.Rand(rng, m*k, 1), m, k)
	must(b, err)
	b.Cleanup(x.Buf.Destroy)
	d, err := ops.New(ctx, "d", ops.F32, m, n)
	must(b, err)
	b.Cleanup(d.Buf.Destroy)
	var scratch ops.Tensor
	if method == "dequant" {
		scratch, err = ops.New(ctx, "wdeq", ops.F16, n, k)
		must(b, err)
		b.Cleanup(scratch.Buf.Destroy)
	}
	record := map[string]func(enc *gpu.Encoder, w ops.Tensor) error{
		"quant": func(enc *gpu.Encoder, w ops.Tensor) error { return ops.MatMulQuant(enc, d, x, w) },
		"dequant": func(enc *gpu.Encoder, w ops.Tensor) error {
			if err := ops.Dequantize(enc, scratch, w); err != nil {
				return err
			}
			return ops.MatMul(enc, d, x, scratch, true)
		},
		"matvec8": func(enc *gpu.Encoder, w ops.Tensor) error {
			for r := 0; r < m; r += ops.MaxMatVecRows {
				rows := min(ops.MaxMatVecRows, m-r)
				if err := ops.MatVecQuant(enc, d.View(r*n, rows, n), w, x.View(r*k, rows, k)); err != nil {
					return err
				}
			}
			return nil
		},
	}[method]
	timeSubmission(b, ctx, bytes, func(enc *gpu.Encoder, i int) error { return record(enc, ws[i%len(ws)]) })
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(flops*float64(b.N)/s/1e12, "TFLOP/s")
	}
}

// BenchmarkMatMulExperts is the MoE prefill's gated gate/up projection on
// the Qwen3-30B-A3B shape (128 experts of [2·768, 2048], 8 per token) and a
// down projection ([2048, 768]), for a batch of tokens routed by random
// logits: MatMulExpertsGated / MatMulExperts ("matmul") against
// MatVecExpertsGated / MatVecExperts ("matvec"). GB/s counts all experts'
// weight bytes once per op; TFLOP/s the slots' 2·N·K each.
//
//	go test ./ops -run '^$' -bench '^BenchmarkMatMulExperts$' -benchtime 1s
func BenchmarkMatMulExperts(b *testing.B) {
	const experts, used, dim, ffn = 128, 8, 2048, 768
	for _, dt := range []ops.DType{ops.Q4_K, ops.Q8_0, ops.MXFP4} {
		for _, tokens := range []int{64, 512} {
			for _, proj := range []string{"gate_up", "down"} {
				for _, method := range []string{"matmul", "matvec"} {
					b.Run(fmt.Sprintf("%s/%s/t%d/%s", dt, proj, tokens, method), func(b *testing.B) {
						n, k, xPer, xRows := 2*ffn, dim, used, tokens
						if proj == "down" {
							n, k, xPer, xRows = dim, ffn, 1, tokens*used
						}
						benchExpertsMatMul(b, dt, experts, used, n, k, tokens, xPer, xRows, proj == "gate_up", method)
					})
				}
			}
		}
	}
}

func benchExpertsMatMul(b *testing.B, dt ops.DType, experts, used, n, k, tokens, xPer, xRows int, gated bool, method string) {
	bytes := experts * n * k / dt.BlockSize() * dt.BlockBytes()
	slots := tokens * used
	flops := 2 * float64(slots) * float64(n) * float64(k)
	ctx := gputest.BenchCtx(b, bytes > 8<<20 || flops > 1e9)
	if uint64(bytes) > ctx.MaxBinding() {
		b.Skipf("experts' weights of %d bytes exceed the binding limit %d", bytes, ctx.MaxBinding())
	}
	rng := rand.New(rand.NewSource(1))
	w, err := ops.FromBytes(ctx, "w", dt, randomBlocks(rng, dt, experts*n*k), experts, n, k)
	must(b, err)
	b.Cleanup(w.Buf.Destroy)
	logits, err := ops.FromFloat32(ctx, "logits", ops.F32, gputest.Rand(rng, tokens*experts, 3), tokens, experts)
	must(b, err)
	b.Cleanup(logits.Buf.Destroy)
	ids, err := ops.New(ctx, "ids", ops.U32, tokens, used)
	must(b, err)
	b.Cleanup(ids.Buf.Destroy)
	weights, err := ops.New(ctx, "weights", ops.F32, tokens, used)
	must(b, err)
	b.Cleanup(weights.Buf.Destroy)
	route, err := ops.New(ctx, "route", ops.U32, ops.RouteLen(experts, slots))
	must(b, err)
	b.Cleanup(route.Buf.Destroy)
	x, err := ops.FromFloat32(ctx, "x", ops.F32, gputest.Rand(rng, xRows*k, 1), xRows, k)
	must(b, err)
	b.Cleanup(x.Buf.Destroy)
	out := n
	if gated {
		out = n / 2
	}
	d, err := ops.New(ctx, "d", ops.F32, slots, out)
	must(b, err)
	b.Cleanup(d.Buf.Destroy)
	enc, err := ctx.NewEncoder()
	must(b, err)
	must(b, ops.MoERoute(enc, ids, weights, route, logits, ops.RouteOpts{K: used, Normalize: true}))
	must(b, enc.SubmitAndWait())
	timeSubmission(b, ctx, bytes, func(enc *gpu.Encoder, i int) error {
		switch {
		case gated && method == "matmul":
			return ops.MatMulExpertsGated(enc, d, w, x, route, nil, xPer, ops.ActSiLU)
		case gated:
			return ops.MatVecExpertsGated(enc, d, w, x, route, nil, xPer, ops.ActSiLU)
		case method == "matmul":
			return ops.MatMulExperts(enc, d, w, x, route, nil, xPer)
		}
		return ops.MatVecExperts(enc, d, w, x, route, nil, xPer)
	})
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(flops*float64(b.N)/s/1e12, "TFLOP/s")
	}
}
