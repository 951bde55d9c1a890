package ops_test

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/gpu"
)

func TestRMSNorm(t *testing.T) {
	ctx := gputest.Ctx(t)
	cases := []struct {
		rows, cols int
		w          ops.DType
		tol        gputest.Tol
	}{
		{1, 1, ops.F32, gputest.TolF32},
		{1, 8, ops.F32, gputest.TolF32}, // the small tensor a comparable engine got wrong
		{3, 57, ops.F32, gputest.TolF32},
		{2, 1001, ops.F32, gputest.TolF32},
		{5, 257, ops.F32, gputest.TolF32}, // just past one workgroup
		{7, 2048, ops.F32, gputest.TolF32},
		{4, 1001, ops.F16, gputest.TolF16},
		{3, 57, ops.F16, gputest.TolF16},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%dx%d_w%s", c.rows, c.cols, c.w), func(t *testing.T) {
			seed := int64(100 + i)
			rng := rand.New(rand.NewSource(seed))
			xv := gputest.Rand(rng, c.rows*c.cols, 2)
			wv := gputest.Rand(rng, c.cols, 1.5)
			x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, c.rows, c.cols)
			must(t, err)
			defer x.Buf.Destroy()
			w, err := ops.FromFloat32(ctx, "w", c.w, wv, c.cols)
			must(t, err)
			defer w.Buf.Destroy()
			d, err := ops.New(ctx, "d", ops.F32, c.rows, c.cols)
			must(t, err)
			defer d.Buf.Destroy()
			gputest.Poison(t, d)

			enc, err := ctx.NewEncoder()
			must(t, err)
			must(t, ops.RMSNorm(enc, d, x, w, 1e-5))
			must(t, enc.SubmitAndWait())
			got, err := d.Read()
			must(t, err)

			wq, _ := w.Read() // the weights as stored (f16 rounding included)
			want := make([]float64, c.rows*c.cols)
			ref.RMSNorm(want, gputest.F64(xv), gputest.F64(wq), c.rows, c.cols, 1e-5)
			gputest.Check(t, "rmsnorm", seed, got, want, gputest.TolF32)
		})
	}
}

func TestRMSNormInPlace(t *testing.T) {
	ctx := gputest.Ctx(t)
	const seed, rows, cols = 7, 12, 64 // e.g. qwen3's per-head q norm: rows = tokens × heads
	rng := rand.New(rand.NewSource(seed))
	xv := gputest.Rand(rng, rows*cols, 3)
	wv := gputest.Rand(rng, cols, 1)
	x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, rows, cols)
	must(t, err)
	defer x.Buf.Destroy()
	w, err := ops.FromFloat32(ctx, "w", ops.F32, wv, cols)
	must(t, err)
	defer w.Buf.Destroy()
	enc, err := ctx.NewEncoder()
	must(t, err)
	must(t, ops.RMSNorm(enc, x, x, w, 1e-6))
	must(t, enc.SubmitAndWait())
	got, err := x.Read()
	must(t, err)
	want := make([]float64, rows*cols)
	ref.RMSNorm(want, gputest.F64(xv), gputest.F64(wv), rows, cols, 1e-6)
	gputest.Check(t, "rmsnorm in place", seed, got, want, gputest.TolF32)

	enc2, err := ctx.NewEncoder()
	must(t, err)
	defer enc2.Release()
	if err := ops.RMSNorm(enc2, x.View(cols, rows-1, cols), x.View(0, rows-1, cols), w, 1e-6); err == nil {
		t.Error("overlapping shifted views accepted")
	}
}

func TestRMSNormRejectsMismatchedWeight(t *testing.T) {
	ctx := gputest.Ctx(t)
	x, _ := ops.New(ctx, "x", ops.F32, 2, 8)
	w, _ := ops.New(ctx, "w", ops.F32, 7)
	d, _ := ops.New(ctx, "d", ops.F32, 2, 8)
	defer x.Buf.Destroy()
	defer w.Buf.Destroy()
	defer d.Buf.Destroy()
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	if err := ops.RMSNorm(enc, d, x, w, 1e-5); err == nil {
		t.Fatal("mismatched weight accepted")
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkRMSNorm is bandwidth-bound: x read, dst written, w read per row.
func BenchmarkRMSNorm(b *testing.B) {
	for _, c := range []struct{ rows, cols int }{{1, 4096}, {512, 2048}, {512, 4096}} {
		b.Run(fmt.Sprintf("%dx%d", c.rows, c.cols), func(b *testing.B) {
			ctx := gputest.BenchCtx(b, false)
			rng := rand.New(rand.NewSource(1))
			x := benchF32(b, ctx, rng, "x", c.rows, c.cols)
			w := benchF32(b, ctx, rng, "w", c.cols)
			d := benchF32(b, ctx, rng, "d", c.rows, c.cols)
			benchGPUTime(b, ctx, 0, func(enc *gpu.Encoder) error { return ops.RMSNorm(enc, d, x, w, 1e-5) })
			if s := b.Elapsed().Seconds(); s > 0 {
				b.ReportMetric(float64(4*(2*c.rows*c.cols+c.cols))*float64(b.N)/s/1e9, "GB/s")
			}
		})
	}
}

// TestRMSNormAdd: dst += rmsnorm(x)·w, against the float64 reference, at
// odd sizes; the residual dst starts from random values (a poisoned dst
// would stay NaN, so the add is checked against its starting values).
func TestRMSNormAdd(t *testing.T) {
	ctx := gputest.Ctx(t)
	for i, c := range []struct{ rows, cols int }{{1, 1}, {3, 57}, {2, 1001}, {5, 257}, {4, 2304}} {
		t.Run(fmt.Sprintf("%dx%d", c.rows, c.cols), func(t *testing.T) {
			seed := int64(300 + i)
			rng := rand.New(rand.NewSource(seed))
			xv := gputest.Rand(rng, c.rows*c.cols, 2)
			wv := gputest.Rand(rng, c.cols, 1.5)
			dv := gputest.Rand(rng, c.rows*c.cols, 3)
			x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, c.rows, c.cols)
			must(t, err)
			defer x.Buf.Destroy()
			w, err := ops.FromFloat32(ctx, "w", ops.F32, wv, c.cols)
			must(t, err)
			defer w.Buf.Destroy()
			d, err := ops.FromFloat32(ctx, "d", ops.F32, dv, c.rows, c.cols)
			must(t, err)
			defer d.Buf.Destroy()
			enc, err := ctx.NewEncoder()
			must(t, err)
			must(t, ops.RMSNormAdd(enc, d, x, w, 1e-6))
			must(t, enc.SubmitAndWait())
			got, err := d.Read()
			must(t, err)
			want := make([]float64, c.rows*c.cols)
			ref.RMSNorm(want, gputest.F64(xv), gputest.F64(wv), c.rows, c.cols, 1e-6)
			ref.Add(want, want, gputest.F64(dv))
			gputest.Check(t, "rmsnorm_add", seed, got, want, gputest.TolF32)
		})
	}
	x, _ := ops.New(ctx, "x", ops.F32, 2, 8)
	defer x.Buf.Destroy()
	w, _ := ops.New(ctx, "w", ops.F32, 8)
	defer w.Buf.Destroy()
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	if err := ops.RMSNormAdd(enc, x, x, w, 1e-6); err == nil {
		t.Error("RMSNormAdd in place was accepted")
	}
}
