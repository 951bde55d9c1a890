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

// TestRMSNormTwo: two row sets of one buffer (q heads, then k heads past a
// gap) normalised in place by two weights in one dispatch: against the
// float64 reference, bit for bit what RMSNorm gives each set, the gap and
// everything around untouched; overlapping or foreign views refused.
func TestRMSNormTwo(t *testing.T) {
	ctx := gputest.Ctx(t)
	for i, c := range []struct{ ra, rb, cols, gap int }{{1, 1, 8, 0}, {32, 8, 128, 40}, {7, 3, 57, 13}, {64, 16, 256, 256}} {
		t.Run(fmt.Sprintf("%d+%dx%d", c.ra, c.rb, c.cols), func(t *testing.T) {
			seed := int64(900 + i)
			rng := rand.New(rand.NewSource(seed))
			n := c.ra*c.cols + c.gap + c.rb*c.cols + 5
			all := gputest.Rand(rng, n, 3)
			wa, wb := gputest.Rand(rng, c.cols, 1.5), gputest.Rand(rng, c.cols, 1.5)
			buf, err := ops.FromFloat32(ctx, "qk", ops.F32, all, n)
			must(t, err)
			defer buf.Buf.Destroy()
			wat, err := ops.FromFloat32(ctx, "wa", ops.F32, wa, c.cols)
			must(t, err)
			defer wat.Buf.Destroy()
			wbt, err := ops.FromFloat32(ctx, "wb", ops.F32, wb, c.cols)
			must(t, err)
			defer wbt.Buf.Destroy()
			a := buf.View(0, c.ra, c.cols)
			bOff := c.ra*c.cols + c.gap
			b := buf.View(bOff, c.rb, c.cols)
			enc, err := ctx.NewEncoder()
			must(t, err)
			must(t, ops.RMSNormTwo(enc, a, b, wat, wbt, 1e-6))
			must(t, enc.SubmitAndWait())
			got, err := buf.Read()
			must(t, err)
			wantA := make([]float64, c.ra*c.cols)
			ref.RMSNorm(wantA, gputest.F64(all[:c.ra*c.cols]), gputest.F64(wa), c.ra, c.cols, 1e-6)
			wantB := make([]float64, c.rb*c.cols)
			ref.RMSNorm(wantB, gputest.F64(all[bOff:bOff+c.rb*c.cols]), gputest.F64(wb), c.rb, c.cols, 1e-6)
			gputest.Check(t, "a", seed, got[:c.ra*c.cols], wantA, gputest.TolF32)
			gputest.Check(t, "b", seed, got[bOff:bOff+c.rb*c.cols], wantB, gputest.TolF32)
			for j := c.ra * c.cols; j < bOff; j++ {
				if got[j] != all[j] {
					t.Fatalf("gap element %d changed: %v, was %v", j, got[j], all[j])
				}
			}
			for j := bOff + c.rb*c.cols; j < n; j++ {
				if got[j] != all[j] {
					t.Fatalf("element %d past b changed: %v, was %v", j, got[j], all[j])
				}
			}
			// The same bits as two RMSNorm dispatches.
			two, err := ops.FromFloat32(ctx, "qk2", ops.F32, all, n)
			must(t, err)
			defer two.Buf.Destroy()
			enc, err = ctx.NewEncoder()
			must(t, err)
			a2, b2 := two.View(0, c.ra, c.cols), two.View(bOff, c.rb, c.cols)
			must(t, ops.RMSNorm(enc, a2, a2, wat, 1e-6))
			must(t, ops.RMSNorm(enc, b2, b2, wbt, 1e-6))
			must(t, enc.SubmitAndWait())
			sep, err := two.Read()
			must(t, err)
			for j := range sep {
				if sep[j] != got[j] {
					t.Fatalf("element %d: one dispatch %v, two RMSNorms %v", j, got[j], sep[j])
				}
			}
		})
	}
	buf, _ := ops.New(ctx, "x", ops.F32, 64)
	defer buf.Buf.Destroy()
	other, _ := ops.New(ctx, "y", ops.F32, 16)
	defer other.Buf.Destroy()
	w, _ := ops.New(ctx, "w", ops.F32, 8)
	defer w.Buf.Destroy()
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	if err := ops.RMSNormTwo(enc, buf.View(0, 2, 8), buf.View(8, 2, 8), w, w, 1e-6); err == nil {
		t.Error("overlapping row sets accepted")
	}
	if err := ops.RMSNormTwo(enc, buf.View(0, 2, 8), other.View(0, 2, 8), w, w, 1e-6); err == nil {
		t.Error("row sets of two buffers accepted")
	}
}
