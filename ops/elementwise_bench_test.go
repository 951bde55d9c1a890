package ops_test

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// benchCtx is the shared context with per-dispatch validation off for the
// benchmark (restored afterwards).
func benchCtx(b *testing.B) *gpu.Context {
	ctx := gputest.Ctx(b)
	old := ctx.Debug
	ctx.Debug = false
	b.Cleanup(func() { ctx.Debug = old })
	return ctx
}

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
			ctx := benchCtx(b)
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
			ctx := benchCtx(b)
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
