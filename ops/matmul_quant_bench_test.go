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
//	go test ./ops -run '^$' -bench 'MatMulQuant/' -benchtime 1s
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
//	go test ./ops -run '^$' -bench 'MatMulQuantTiles' -benchtime 1s
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
