package ops_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/half"
)

// Tolerance for every MatVec case: gputest.TolDot(k) (rel. L2 1e-5). f16 weights
// are compared against the reference run on the f16-rounded values as stored,
// so only the f32 accumulation differs from the float64 reference.

type matVecCase struct {
	m, n, k int
	w       ops.DType
	wPad    int // weight view starts this many elements into its buffer
	xPad    int // likewise for x (an unaligned start forces the scalar path)
}

func TestMatVec(t *testing.T) {
	ctx := gputest.Ctx(t)
	var cases []matVecCase
	for _, dt := range []ops.DType{ops.F32, ops.F16} {
		cases = append(cases,
			matVecCase{m: 1, n: 1, k: 1, w: dt},
			matVecCase{m: 1, n: 57, k: 57, w: dt},
			matVecCase{m: 3, n: 1001, k: 57, w: dt},
			matVecCase{m: 2, n: 57, k: 1001, w: dt},
			matVecCase{m: 1, n: 1001, k: 1001, w: dt},
			matVecCase{m: 4, n: 5, k: 8, w: dt},                     // one row past a 4-row workgroup
			matVecCase{m: 5, n: 3, k: 64, w: dt},                    // two rows a workgroup, fewer rows than that
			matVecCase{m: 2, n: 9, k: 1032, w: dt},                  // just past one pass of 128 threads x 8 (f16)
			matVecCase{m: 2, n: 9, k: 516, w: dt},                   // just past one pass of 128 threads x 4 (f32)
			matVecCase{m: 8, n: 33, k: 256, w: dt},                  // the most rows one dispatch carries
			matVecCase{m: 11, n: 17, k: 96, w: dt},                  // past 8 rows: two dispatches
			matVecCase{m: 3, n: 21, k: 64, w: dt, wPad: 3, xPad: 1}, // unaligned views: scalar loads
			matVecCase{m: 1, n: 5632, k: 2048, w: dt},               // TinyLlama FFN up projection
		)
	}
	cases = append(cases, matVecCase{m: 4, n: 5632, k: 2048, w: ops.F16})
	matVecReductions(t, ctx, func(t *testing.T) {
		for i, c := range cases {
			name := fmt.Sprintf("%s/m%d_n%d_k%d", c.w, c.m, c.n, c.k)
			if c.wPad+c.xPad > 0 {
				name += fmt.Sprintf("_pad%d_%d", c.wPad, c.xPad)
			}
			t.Run(name, func(t *testing.T) {
				seed := int64(1000 + i)
				runMatVecCase(t, ctx, c, seed)
			})
		}
	})
}

// matVecReductions runs f once for each reduction MatVec has on this device:
// by subgroups where it has them, and through workgroup memory always.
func matVecReductions(t *testing.T, ctx *gpu.Context, f func(t *testing.T)) {
	if !ctx.Features.Subgroups {
		f(t)
		return
	}
	for _, sg := range []bool{true, false} {
		name := "workgroup"
		if sg {
			name = "subgroups"
		}
		t.Run(name, func(t *testing.T) {
			defer ops.SetMatVecSubgroups(sg)()
			f(t)
		})
	}
}

func runMatVecCase(t *testing.T, ctx *gpu.Context, c matVecCase, seed int64) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	wv := gputest.Rand(rng, c.n*c.k, 1)
	xv := gputest.Rand(rng, c.m*c.k, 1)
	w := paddedTensor(t, ctx, "w", c.w, c.wPad, wv, c.n, c.k)
	defer w.Buf.Destroy()
	x := paddedTensor(t, ctx, "x", ops.F32, c.xPad, xv, c.m, c.k)
	defer x.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, c.m, c.n)
	must(t, err)
	defer d.Buf.Destroy()
	gputest.Poison(t, d)

	enc, err := ctx.NewEncoder()
	must(t, err)
	must(t, ops.MatVec(enc, d, w, x))
	must(t, enc.SubmitAndWait())
	got, err := d.Read()
	must(t, err)

	wq, err := w.Read() // the weights as stored (f16 rounding included)
	must(t, err)
	want := make([]float64, c.m*c.n)
	ref.MatVec(want, gputest.F64(wq), gputest.F64(xv), c.m, c.n, c.k)
	gputest.Check(t, "matvec", seed, got, want, gputest.TolDot(c.k))
}

// paddedTensor stores data as a [shape] view starting pad elements into a
// larger buffer (pad 0: a plain tensor).
func paddedTensor(t testing.TB, ctx *gpu.Context, label string, dt ops.DType, pad int, data []float32, shape ...int) ops.Tensor {
	t.Helper()
	if pad == 0 {
		x, err := ops.FromFloat32(ctx, label, dt, data, shape...)
		must(t, err)
		return x
	}
	all := make([]float32, pad+len(data))
	for i := range pad {
		all[i] = float32(math.NaN()) // never read
	}
	copy(all[pad:], data)
	buf, err := ops.FromFloat32(ctx, label, dt, all, len(all))
	must(t, err)
	return buf.View(pad, shape...)
}

// A row of x gets bit-identical results alone and inside a batch.
func TestMatVecBatchInvariant(t *testing.T) {
	ctx := gputest.Ctx(t)
	matVecReductions(t, ctx, func(t *testing.T) {
		for _, c := range []struct {
			m, n, k int
			w       ops.DType
		}{
			{4, 37, 1001, ops.F32}, {4, 37, 1001, ops.F16}, // scalar path
			{4, 37, 2048, ops.F32}, {4, 37, 2048, ops.F16}, // 16-byte loads
			{8, 19, 512, ops.F16}, // two rows a workgroup in the batch
		} {
			t.Run(fmt.Sprintf("%s/m%d_n%d_k%d", c.w, c.m, c.n, c.k), func(t *testing.T) {
				rng := rand.New(rand.NewSource(7))
				w, err := ops.FromFloat32(ctx, "w", c.w, gputest.Rand(rng, c.n*c.k, 1), c.n, c.k)
				must(t, err)
				defer w.Buf.Destroy()
				x, err := ops.FromFloat32(ctx, "x", ops.F32, gputest.Rand(rng, c.m*c.k, 1), c.m, c.k)
				must(t, err)
				defer x.Buf.Destroy()
				d, err := ops.New(ctx, "d", ops.F32, c.m, c.n)
				must(t, err)
				defer d.Buf.Destroy()
				one, err := ops.New(ctx, "d1", ops.F32, c.m, c.n) // row r computed alone into row r
				must(t, err)
				defer one.Buf.Destroy()
				gputest.Poison(t, d)
				gputest.Poison(t, one)

				enc, err := ctx.NewEncoder()
				must(t, err)
				must(t, ops.MatVec(enc, d, w, x))
				for r := 0; r < c.m; r++ {
					must(t, ops.MatVec(enc, one.View(r*c.n, 1, c.n), w, x.View(r*c.k, 1, c.k)))
				}
				must(t, enc.SubmitAndWait())
				batch, err := d.Read()
				must(t, err)
				alone, err := one.Read()
				must(t, err)
				checkBitIdentical(t, batch, alone, c.n)
			})
		}
	})
}

// checkBitIdentical compares two results bit for bit (rows of n values).
func checkBitIdentical(t *testing.T, batch, alone []float32, n int) {
	t.Helper()
	diff := 0
	for i := range batch {
		if math.Float32bits(batch[i]) != math.Float32bits(alone[i]) || math.IsNaN(float64(batch[i])) {
			if diff == 0 {
				t.Errorf("row %d col %d: batched %.9g, alone %.9g", i/n, i%n, batch[i], alone[i])
			}
			diff++
		}
	}
	if diff > 0 {
		t.Errorf("%d of %d elements differ between batched and single-row runs", diff, len(batch))
	}
}

// A weight over the adapter's binding limit is split into row ranges. On
// lavapipe (128 MiB) an f16 36864x2048 weight (144 MiB) takes two dispatches.
func TestMatVecWeightOverBindingLimit(t *testing.T) {
	ctx := gputest.Ctx(t)
	const n, k = 36864, 2048
	limit := ctx.MaxBinding()
	if uint64(n*k*2) <= limit {
		t.Skipf("the adapter binds %d bytes at once: a %d-byte weight fits, nothing to split", limit, n*k*2)
	}
	if uint64(n*k*2) > ctx.Limits.MaxBufferSize {
		t.Skipf("the adapter's maxBufferSize %d is under %d bytes", ctx.Limits.MaxBufferSize, n*k*2)
	}
	const seed = 31
	rng := rand.New(rand.NewSource(seed))
	// Write the f16 bytes directly (no float32 copy of 75M weights); the
	// reference decodes the same bytes.
	raw := make([]byte, 2*n*k)
	for i := 0; i < n*k; i++ {
		binary.LittleEndian.PutUint16(raw[2*i:], half.FromFloat32(float32(rng.Float64()*2-1)))
	}
	w, err := ops.New(ctx, "w", ops.F16, n, k)
	must(t, err)
	defer w.Buf.Destroy()
	must(t, w.Buf.Write(0, raw))
	xv := gputest.Rand(rng, k, 1)
	x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, 1, k)
	must(t, err)
	defer x.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, 1, n)
	must(t, err)
	defer d.Buf.Destroy()
	gputest.Poison(t, d)

	enc, err := ctx.NewEncoder()
	must(t, err)
	must(t, ops.MatVec(enc, d, w, x))
	if enc.Dispatches() < 2 {
		t.Errorf("%d dispatches for a weight over the binding limit, want at least 2", enc.Dispatches())
	}
	must(t, enc.SubmitAndWait())
	got, err := d.Read()
	must(t, err)

	want := make([]float64, n)
	x64 := gputest.F64(xv)
	const rowsAtOnce = 1024
	wrows := make([]float64, rowsAtOnce*k)
	for r0 := 0; r0 < n; r0 += rowsAtOnce {
		for i := range wrows {
			wrows[i] = float64(half.ToFloat32(binary.LittleEndian.Uint16(raw[2*(r0*k+i):])))
		}
		ref.MatVec(want[r0:r0+rowsAtOnce], wrows, x64, 1, rowsAtOnce, k)
	}
	gputest.Check(t, "matvec 144 MiB weight", seed, got, want, gputest.TolF32)
}

// x or dst over the binding limit cannot be split: a clear error, no dispatch.
func TestMatVecOperandOverBindingLimit(t *testing.T) {
	ctx := gputest.Ctx(t)
	limit := int(ctx.MaxBinding())
	if limit > 256<<20 {
		t.Skipf("binding limit %d bytes: over-limit operands would need too much memory for a test", limit)
	}
	big := limit/4 + 64 // f32 elements just past one binding
	t.Run("x", func(t *testing.T) {
		w, err := ops.New(ctx, "w", ops.F16, 1, big)
		must(t, err)
		defer w.Buf.Destroy()
		x, err := ops.New(ctx, "x", ops.F32, 1, big)
		must(t, err)
		defer x.Buf.Destroy()
		d, err := ops.New(ctx, "d", ops.F32, 1, 1)
		must(t, err)
		defer d.Buf.Destroy()
		expectBindingTooLarge(t, ctx, func(enc *gpu.Encoder) error { return ops.MatVec(enc, d, w, x) })
	})
	t.Run("dst", func(t *testing.T) {
		w, err := ops.New(ctx, "w", ops.F16, big, 1)
		must(t, err)
		defer w.Buf.Destroy()
		x, err := ops.New(ctx, "x", ops.F32, 1, 1)
		must(t, err)
		defer x.Buf.Destroy()
		d, err := ops.New(ctx, "d", ops.F32, 1, big)
		must(t, err)
		defer d.Buf.Destroy()
		expectBindingTooLarge(t, ctx, func(enc *gpu.Encoder) error { return ops.MatVec(enc, d, w, x) })
	})
}

func expectBindingTooLarge(t *testing.T, ctx *gpu.Context, op func(*gpu.Encoder) error) {
	t.Helper()
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	err = op(enc)
	if !errors.Is(err, gpu.ErrBindingTooLarge) {
		t.Fatalf("got error %v, want one wrapping gpu.ErrBindingTooLarge", err)
	}
	if enc.Dispatches() != 0 {
		t.Errorf("%d dispatches recorded before the error", enc.Dispatches())
	}
	t.Logf("error: %v", err)
}

func TestMatVecRejectsMismatchedShapes(t *testing.T) {
	ctx := gputest.Ctx(t)
	w, _ := ops.New(ctx, "w", ops.F16, 6, 8)
	x, _ := ops.New(ctx, "x", ops.F32, 2, 7)
	d, _ := ops.New(ctx, "d", ops.F32, 2, 6)
	defer w.Buf.Destroy()
	defer x.Buf.Destroy()
	defer d.Buf.Destroy()
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	err = ops.MatVec(enc, d, w, x)
	if err == nil {
		t.Fatal("x with 7 columns accepted for a weight of 8 columns")
	}
	for _, s := range []string{"MatVec", "f16[6 8]", "f32[2 7]", "f32[2 6]"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %q", err, s)
		}
	}
}
