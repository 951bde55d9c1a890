package ops_test

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// benchDispatches records b.N dispatches, submitted 256 to a command buffer
// without waiting, and waits once at the end: the GPU's throughput for
// back-to-back dispatches, plus whatever recording costs on the CPU when
// that is slower.
func benchDispatches(b *testing.B, ctx *gpu.Context, bytesPerOp int64, record func(*gpu.Encoder) error) {
	b.Helper()
	run := func(n int) {
		for done := 0; done < n; {
			enc, err := ctx.NewEncoder()
			if err != nil {
				b.Fatal(err)
			}
			k := min(256, n-done)
			for i := 0; i < k; i++ {
				if err := record(enc); err != nil {
					enc.Release()
					b.Fatal(err)
				}
			}
			if err := enc.Submit(); err != nil {
				b.Fatal(err)
			}
			done += k
		}
		if err := ctx.Wait(); err != nil {
			b.Fatal(err)
		}
	}
	run(8) // pipelines, bind groups
	b.SetBytes(bytesPerOp)
	b.ResetTimer()
	run(b.N)
}

func benchF32(b *testing.B, ctx *gpu.Context, rng *rand.Rand, label string, shape ...int) ops.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	t, err := ops.FromFloat32(ctx, label, ops.F32, gputest.Rand(rng, n, 3), shape...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(t.Buf.Destroy)
	return t
}

var benchElemShapes = []struct{ rows, cols int }{{1, 5632}, {512, 5632}, {1, 32000}, {512, 32000}}

// BenchmarkAdd / BenchmarkSiluMul: 2 reads and 1 write of f32 per element
// (SetBytes counts all three).
func BenchmarkAdd(b *testing.B) {
	benchBinary(b, func(enc *gpu.Encoder, d, x, y ops.Tensor) error { return ops.Add(enc, d, x, y) })
}

func BenchmarkSiluMul(b *testing.B) {
	benchBinary(b, func(enc *gpu.Encoder, d, x, y ops.Tensor) error { return ops.SiluMul(enc, d, x, y) })
}

func benchBinary(b *testing.B, op func(enc *gpu.Encoder, d, x, y ops.Tensor) error) {
	for _, s := range benchElemShapes {
		b.Run(fmt.Sprintf("%dx%d", s.cols, s.rows), func(b *testing.B) {
			ctx := gputest.BenchCtx(b, false)
			rng := rand.New(rand.NewSource(1))
			x := benchF32(b, ctx, rng, "x", s.rows, s.cols)
			y := benchF32(b, ctx, rng, "y", s.rows, s.cols)
			d := benchF32(b, ctx, rng, "d", s.rows, s.cols)
			benchDispatches(b, ctx, int64(3*4*s.rows*s.cols), func(enc *gpu.Encoder) error { return op(enc, d, x, y) })
		})
	}
}

// BenchmarkArgmax: greedy token choice over the logits (SetBytes: the
// logits read).
func BenchmarkArgmax(b *testing.B) {
	for _, s := range []struct{ rows, cols int }{{1, 32000}, {512, 32000}, {1, 151936}, {64, 151936}} {
		b.Run(fmt.Sprintf("%dx%d", s.cols, s.rows), func(b *testing.B) {
			ctx := gputest.BenchCtx(b, false)
			rng := rand.New(rand.NewSource(2))
			x := benchF32(b, ctx, rng, "logits", s.rows, s.cols)
			d, err := ops.New(ctx, "ids", ops.U32, s.rows)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(d.Buf.Destroy)
			benchDispatches(b, ctx, int64(4*s.rows*s.cols), func(enc *gpu.Encoder) error { return ops.Argmax(enc, d, x) })
		})
	}
}

// BenchmarkRoPE: in place on qwen2-7B's queries (28 heads of 128), neox
// layout, per-token positions (SetBytes: read and write of every element).
func BenchmarkRoPE(b *testing.B) {
	for _, tokens := range []int{1, 512} {
		b.Run(fmt.Sprintf("neox/%dx28x128", tokens), func(b *testing.B) {
			ctx := gputest.BenchCtx(b, false)
			rng := rand.New(rand.NewSource(3))
			x := benchF32(b, ctx, rng, "q", tokens, 28, 128)
			pos := make([]uint32, tokens)
			for i := range pos {
				pos[i] = uint32(1000 + i)
			}
			pt, err := ops.FromUint32(ctx, "pos", pos, tokens)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(pt.Buf.Destroy)
			o := ops.RoPEOpts{Mode: ops.RoPENeox, NRot: 128, Base: 1e6, Positions: &pt}
			benchDispatches(b, ctx, int64(2*4*x.Len()), func(enc *gpu.Encoder) error { return ops.RoPE(enc, x, x, o) })
		})
	}
}

// BenchmarkCopyRows: K rows of 4 KV heads x 128 (f32) written into an f16
// cache of 4096 positions, at an even and an odd element offset (the odd
// one merges half-words at every row end). SetBytes: f32 read + f16 write.
func BenchmarkCopyRows(b *testing.B) {
	for _, tokens := range []int{1, 512} {
		for _, off := range []int{0, 1} {
			b.Run(fmt.Sprintf("f32_to_f16/%dx512_off%d", tokens, off), func(b *testing.B) {
				ctx := gputest.BenchCtx(b, false)
				rng := rand.New(rand.NewSource(4))
				src := benchF32(b, ctx, rng, "k", tokens, 512)
				cache, err := ops.New(ctx, "cache", ops.F16, 4096*512+2)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(cache.Buf.Destroy)
				dst := cache.View(1000*512+off, tokens*512)
				benchDispatches(b, ctx, int64(6*tokens*512), func(enc *gpu.Encoder) error {
					return ops.CopyRows(enc, dst, src, tokens, 512, 512, 512)
				})
			})
		}
	}
}
