package ops_test

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// Benchmarks time b.N dispatches recorded into one encoder and sent as one
// submission with one wait, so ns/op is GPU time per dispatch (plus the
// submission round trip spread over b.N); the recording itself is outside the
// timer, as are the pipeline build and a warm-up run. Consecutive dispatches
// write the same dst, so each waits for the previous one, as in a decode step.
//
//	go test ./ops -run '^$' -bench 'MatVec|MatMul' -benchtime 2s
//
// Heavy cases skip on a software adapter (lavapipe) unless WGLLM_BENCH_FULL is
// set, and skip wherever their operands exceed the adapter's limits.

type benchOperand struct {
	label string
	dt    ops.DType
	shape []int
}

func (o benchOperand) bytes() uint64 {
	n := uint64(o.dt.Size())
	for _, d := range o.shape {
		n *= uint64(d)
	}
	return n
}

// benchSetup opens the shared context with debug mode off (debug ends the
// compute pass after every dispatch), skips heavy cases where asked, and
// allocates the operands filled with non-zero random values.
func benchSetup(b *testing.B, heavy bool, operands ...benchOperand) (*gpu.Context, []ops.Tensor) {
	b.Helper()
	ctx := gputest.BenchCtx(b, heavy)
	for _, o := range operands {
		if o.bytes() > ctx.MaxBinding() || o.bytes() > ctx.Limits.MaxBufferSize {
			b.Skipf("%s %s%v is %d bytes: over the adapter's binding limit %d or buffer limit %d",
				o.label, o.dt, o.shape, o.bytes(), ctx.MaxBinding(), ctx.Limits.MaxBufferSize)
		}
	}

	rng := rand.New(rand.NewSource(1))
	block := gputest.Rand(rng, 1<<20, 1) // repeated: random enough, cheap to make
	ts := make([]ops.Tensor, len(operands))
	for i, o := range operands {
		t, err := ops.New(ctx, o.label, o.dt, o.shape...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(t.Buf.Destroy)
		for off := 0; off < t.Len(); off += len(block) {
			n := min(len(block), t.Len()-off)
			if err := t.View(off, n).Write(block[:n]); err != nil {
				b.Fatal(err)
			}
		}
		ts[i] = t
	}
	return ctx, ts
}

// benchGPUTime warms up (pipeline build, first run), then times b.N
// recorded ops in one submission and reports GFLOP/s for flopsPerOp.
func benchGPUTime(b *testing.B, ctx *gpu.Context, flopsPerOp float64, op func(*gpu.Encoder) error) {
	b.Helper()
	record := func(n int) *gpu.Encoder {
		enc, err := ctx.NewEncoder()
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if err := op(enc); err != nil {
				b.Fatal(err)
			}
		}
		return enc
	}
	if err := record(2).SubmitAndWait(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.StopTimer()
	enc := record(b.N)
	b.StartTimer()
	if err := enc.SubmitAndWait(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if s := b.Elapsed().Seconds(); s > 0 && flopsPerOp > 0 {
		b.ReportMetric(flopsPerOp*float64(b.N)/s/1e9, "GFLOP/s")
	}
}

// BenchmarkMatVec is the decode projection with one row of x: bandwidth-bound,
// so MB/s (weight + x + dst bytes per op) is the figure to read.
func BenchmarkMatVec(b *testing.B) {
	for _, c := range []struct {
		w    ops.DType
		n, k int
	}{
		{ops.F32, 4096, 4096}, {ops.F16, 4096, 4096},
		{ops.F32, 11008, 4096}, {ops.F16, 11008, 4096},
		{ops.F32, 8192, 8192}, {ops.F16, 16384, 8192}, // 256 MiB weights
	} {
		b.Run(fmt.Sprintf("%s/%dx%d", c.w, c.n, c.k), func(b *testing.B) {
			benchMatVec(b, c.w, 1, c.n, c.k)
		})
	}
}

// BenchmarkMatVecBatch is decode with several sequences at once: the weight
// is still read once per op.
func BenchmarkMatVecBatch(b *testing.B) {
	for _, m := range []int{2, 4, 8} {
		for _, c := range []struct {
			w    ops.DType
			n, k int
		}{{ops.F16, 11008, 4096}, {ops.F16, 16384, 8192}} {
			b.Run(fmt.Sprintf("%s/%dx%d/m%d", c.w, c.n, c.k, m), func(b *testing.B) {
				benchMatVec(b, c.w, m, c.n, c.k)
			})
		}
	}
}

func benchMatVec(b *testing.B, wt ops.DType, m, n, k int) {
	wBytes := uint64(n * k * wt.Size())
	ctx, ts := benchSetup(b, wBytes > 64<<20,
		benchOperand{"w", wt, []int{n, k}},
		benchOperand{"x", ops.F32, []int{m, k}},
		benchOperand{"dst", ops.F32, []int{m, n}})
	w, x, dst := ts[0], ts[1], ts[2]
	b.SetBytes(int64(wBytes) + int64(4*m*k+4*m*n))
	benchGPUTime(b, ctx, 2*float64(m)*float64(n)*float64(k), func(enc *gpu.Encoder) error {
		return ops.MatVec(enc, dst, w, x)
	})
}

// BenchmarkMatMul is the prefill projection (a [M, K] x b^T for b [N, K],
// "_kn": b [K, N]): compute-bound, so GFLOP/s is the figure to read.
func BenchmarkMatMul(b *testing.B) {
	for _, c := range []struct {
		b       ops.DType
		m, n, k int
		transB  bool
	}{
		{ops.F16, 64, 1536, 512, true}, // small enough for lavapipe
		{ops.F32, 512, 4096, 4096, true}, {ops.F16, 512, 4096, 4096, true},
		{ops.F32, 512, 11008, 4096, true}, {ops.F16, 512, 11008, 4096, true},
		{ops.F32, 512, 4096, 4096, false},
	} {
		name := c.b.String()
		if !c.transB {
			name += "_kn"
		}
		b.Run(fmt.Sprintf("%s/%dx%dx%d", name, c.m, c.n, c.k), func(b *testing.B) {
			bShape := []int{c.k, c.n}
			if c.transB {
				bShape = []int{c.n, c.k}
			}
			flops := 2 * float64(c.m) * float64(c.n) * float64(c.k)
			ctx, ts := benchSetup(b, flops > 1e9,
				benchOperand{"a", ops.F32, []int{c.m, c.k}},
				benchOperand{"b", c.b, bShape},
				benchOperand{"dst", ops.F32, []int{c.m, c.n}})
			a, bt, dst := ts[0], ts[1], ts[2]
			b.SetBytes(int64(a.Bytes() + bt.Bytes() + dst.Bytes()))
			benchGPUTime(b, ctx, flops, func(enc *gpu.Encoder) error {
				return ops.MatMul(enc, dst, a, bt, c.transB)
			})
		})
	}
}
