package ops_test

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// Decode shapes [N, K]: TinyLlama's q/o (2048x2048), gate/up (5632x2048),
// down (2048x5632) and output (32000x2048); Llama-7B's square (4096x4096) and gate/up (11008x4096).
var quantBenchShapes = [][2]int{{2048, 2048}, {5632, 2048}, {2048, 5632}, {32000, 2048}, {4096, 4096}, {11008, 4096}}

// rotateBytes is how much distinct weight memory a benchmark cycles through,
// so that weights come from DRAM as in decoding a model much bigger than
// the GPU's L2 (50 MB on the H100), not from cache.
const rotateBytes = 160 << 20

// benchSetup gives the benchmark's context with per-dispatch validation
// off (restored afterwards), and whether a shape of the given size runs.
func quantBenchCtx(b *testing.B, bytes int) *gpu.Context {
	return gputest.BenchCtx(b, bytes > 8<<20)
}

// copiesFor is how many copies of a weight of the given size the benchmark
// rotates through (one on a software adapter, which has no such cache).
func copiesFor(ctx *gpu.Context, bytes int) int {
	if ctx.Software() {
		return 1
	}
	return max(1, min(64, ceilDivInt(rotateBytes, bytes)))
}

func ceilDivInt(a, b int) int { return (a + b - 1) / b }

// timeSubmission records b.N dispatches untimed, then times one submission
// of all of them and the wait for the GPU, and reports GB/s of weight bytes.
func timeSubmission(b *testing.B, ctx *gpu.Context, bytes int, record func(enc *gpu.Encoder, i int) error) {
	// Warm-up: compile, first-touch the memory.
	enc, err := ctx.NewEncoder()
	must(b, err)
	for i := 0; i < 3; i++ {
		must(b, record(enc, i))
	}
	must(b, enc.SubmitAndWait())

	// Keep the GPU busy for a while first, so that its clocks have left
	// their idle state (skipped for the framework's one-iteration probe).
	if b.N > 1 {
		for start := time.Now(); time.Since(start) < 150*time.Millisecond; {
			enc, err := ctx.NewEncoder()
			must(b, err)
			for i := 0; i < 256; i++ {
				must(b, record(enc, i))
			}
			must(b, enc.SubmitAndWait())
		}
	}
	b.SetBytes(int64(bytes))
	b.ResetTimer()
	b.StopTimer()
	enc, err = ctx.NewEncoder()
	must(b, err)
	for i := 0; i < b.N; i++ {
		must(b, record(enc, i))
	}
	b.StartTimer()
	must(b, enc.SubmitAndWait())
	b.StopTimer()
	b.ReportMetric(float64(bytes)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
}

// BenchmarkMatVecQuant: decode matvec (M=1) over block-quantised weights;
// GB/s counts the weight bytes as stored.
func BenchmarkMatVecQuant(b *testing.B) {
	types := append(append([]ops.DType{}, quantTypes...), ops.BF16)
	for _, m := range []int{1, 4} {
		for _, dt := range types {
			for _, sh := range quantBenchShapes {
				n, k := sh[0], sh[1]
				name := fmt.Sprintf("%s/%dx%d", dt, n, k)
				if m != 1 {
					if dt != ops.Q4_0 && dt != ops.Q4_K && dt != ops.Q8_0 && dt != ops.Q6_K {
						continue
					}
					name = fmt.Sprintf("%s/m%d/%dx%d", dt, m, n, k)
				}
				b.Run(name, func(b *testing.B) { benchMatVecQuant(b, dt, n, k, m) })
			}
		}
	}
}

func benchMatVecQuant(b *testing.B, dt ops.DType, n, k, m int) {
	bytes := n * k / dt.BlockSize() * dt.BlockBytes()
	ctx := quantBenchCtx(b, bytes)
	rng := rand.New(rand.NewSource(1))
	raw := randomBlocks(rng, dt, n*k)
	ws := make([]ops.Tensor, copiesFor(ctx, bytes))
	for i := range ws {
		w, err := ops.FromBytes(ctx, "w", dt, raw, n, k)
		must(b, err)
		defer w.Buf.Destroy()
		ws[i] = w
	}
	x, err := ops.FromFloat32(ctx, "x", ops.F32, gputest.Rand(rng, m*k, 1), m, k)
	must(b, err)
	defer x.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, m, n)
	must(b, err)
	defer d.Buf.Destroy()
	timeSubmission(b, ctx, bytes, func(enc *gpu.Encoder, i int) error {
		return ops.MatVecQuant(enc, d, ws[i%len(ws)], x)
	})
}

// BenchmarkDequantize: a weight decoded to f16 for a prefill matmul; GB/s
// counts the bytes read and written.
func BenchmarkDequantize(b *testing.B) {
	for _, dt := range []ops.DType{ops.Q4_0, ops.Q8_0, ops.Q4_K, ops.Q6_K, ops.IQ4_NL, ops.IQ4_XS, ops.MXFP4} {
		for _, sh := range [][2]int{{2048, 2048}, {5632, 2048}} {
			n, k := sh[0], sh[1]
			b.Run(fmt.Sprintf("%s/%dx%d", dt, n, k), func(b *testing.B) {
				src := n * k / dt.BlockSize() * dt.BlockBytes()
				bytes := src + 2*n*k
				ctx := quantBenchCtx(b, bytes)
				rng := rand.New(rand.NewSource(1))
				w, err := ops.FromBytes(ctx, "w", dt, randomBlocks(rng, dt, n*k), n, k)
				must(b, err)
				defer w.Buf.Destroy()
				d, err := ops.New(ctx, "d", ops.F16, n, k)
				must(b, err)
				defer d.Buf.Destroy()
				timeSubmission(b, ctx, bytes, func(enc *gpu.Encoder, i int) error {
					return ops.Dequantize(enc, d, w)
				})
			})
		}
	}
}

// BenchmarkMatVecQuantLaunch: a tiny matvec, so ns/op is the cost of one
// dispatch in a long submission (launch and the barrier between dispatches).
func BenchmarkMatVecQuantLaunch(b *testing.B) { benchMatVecQuant(b, ops.Q4_0, 64, 256, 1) }
