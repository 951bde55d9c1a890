package ops_test

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// Tolerance for every MatMul case: gputest.TolDot(k) (rel. L2 1e-5; the
// elementwise absolute bound grows like sqrt(k) for outputs that cancel). f16 b is
// compared against the reference run on the f16-rounded values as stored.

type matMulCase struct {
	batch, m, n, k int
	transB         bool
	b              ops.DType
	broadcast      bool // b is 2-D and shared by every batch
	aPad, bPad     int  // views start this far into their buffers (forces scalar loads)
}

func (c matMulCase) name() string {
	layout := "kn"
	if c.transB {
		layout = "nk"
	}
	s := fmt.Sprintf("%s_%s/%dx%dx%dx%d", c.b, layout, c.batch, c.m, c.n, c.k)
	if c.broadcast {
		s += "_bcast"
	}
	if c.aPad+c.bPad > 0 {
		s += fmt.Sprintf("_pad%d_%d", c.aPad, c.bPad)
	}
	return s
}

func TestMatMul(t *testing.T) {
	ctx := gputest.Ctx(t)
	var cases []matMulCase
	for _, dt := range []ops.DType{ops.F32, ops.F16} {
		for _, tb := range []bool{true, false} {
			add := func(c matMulCase) {
				c.b, c.transB = dt, tb
				if c.batch == 0 {
					c.batch = 1
				}
				cases = append(cases, c)
			}
			add(matMulCase{m: 1, n: 1, k: 1})
			add(matMulCase{m: 57, n: 57, k: 57})
			add(matMulCase{m: 1001, n: 19, k: 24}) // odd sizes along each of M, N, K
			add(matMulCase{m: 21, n: 1001, k: 40})
			add(matMulCase{m: 13, n: 17, k: 1001})
			add(matMulCase{m: 65, n: 65, k: 17})                  // one past a 64x64 tile and a 16-deep K slice
			add(matMulCase{m: 64, n: 72, k: 48})                  // exactly whole tiles, 16-byte loads
			add(matMulCase{m: 9, n: 24, k: 32, aPad: 1, bPad: 3}) // unaligned views
			add(matMulCase{batch: 3, m: 37, n: 45, k: 33})
			add(matMulCase{batch: 3, m: 37, n: 45, k: 33, broadcast: true})
			add(matMulCase{batch: 3, m: 20, n: 40, k: 64, broadcast: true})
			// 128x128 tiles: enough of them to pick the large tile.
			add(matMulCase{batch: 3, m: 640, n: 1029, k: 9, broadcast: true})
			add(matMulCase{batch: 3, m: 641, n: 1032, k: 16})
		}
	}
	// Realistic prefill projections (TinyLlama attention: 64 tokens, K 512 slice, N 1536).
	cases = append(cases,
		matMulCase{batch: 1, m: 64, n: 1536, k: 512, transB: true, b: ops.F32},
		matMulCase{batch: 1, m: 64, n: 1536, k: 512, transB: true, b: ops.F16},
	)
	for i, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			runMatMulCase(t, ctx, c, int64(2000+i))
		})
	}
}

// matMulOperands makes a, b and a poisoned dst for a case, and returns the
// values of a and of b as stored (f16-rounded).
func matMulOperands(t *testing.T, ctx *gpu.Context, c matMulCase, seed int64) (a, b, d ops.Tensor, av, bq []float32) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	bBatch := c.batch
	if c.broadcast {
		bBatch = 1
	}
	av = gputest.Rand(rng, c.batch*c.m*c.k, 1)
	bv := gputest.Rand(rng, bBatch*c.n*c.k, 1)
	aShape := []int{c.m, c.k}
	if c.batch > 1 {
		aShape = []int{c.batch, c.m, c.k}
	}
	bShape := []int{c.k, c.n}
	if c.transB {
		bShape = []int{c.n, c.k}
	}
	if !c.broadcast && c.batch > 1 {
		bShape = append([]int{c.batch}, bShape...)
	}
	dShape := append(append([]int{}, aShape[:len(aShape)-1]...), c.n)
	a = paddedTensor(t, ctx, "a", ops.F32, c.aPad, av, aShape...)
	b = paddedTensor(t, ctx, "b", c.b, c.bPad, bv, bShape...)
	var err error
	d, err = ops.New(ctx, "d", ops.F32, dShape...)
	must(t, err)
	gputest.Poison(t, d)
	bq, err = b.Read()
	must(t, err)
	return a, b, d, av, bq
}

func runMatMulCase(t *testing.T, ctx *gpu.Context, c matMulCase, seed int64) {
	t.Helper()
	a, b, d, av, bq := matMulOperands(t, ctx, c, seed)
	defer a.Buf.Destroy()
	defer b.Buf.Destroy()
	defer d.Buf.Destroy()
	enc, err := ctx.NewEncoder()
	must(t, err)
	must(t, ops.MatMul(enc, d, a, b, c.transB))
	must(t, enc.SubmitAndWait())
	got, err := d.Read()
	must(t, err)
	want := make([]float64, c.batch*c.m*c.n)
	ref.MatMul(want, gputest.F64(av), gputest.F64(bq), c.batch, c.m, c.n, c.k, c.transB, c.broadcast || c.batch == 1)
	gputest.Check(t, "matmul "+c.name(), seed, got, want, gputest.TolDot(c.k))
}

// A row of a gets bit-identical results whatever else is in the batch, also
// when the batch is large enough to switch to the 128x128 tile.
func TestMatMulBatchInvariant(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, c := range []matMulCase{
		{batch: 1, m: 57, n: 45, k: 1001, transB: true, b: ops.F32},
		{batch: 1, m: 57, n: 45, k: 64, transB: true, b: ops.F16},
		{batch: 1, m: 57, n: 45, k: 64, transB: false, b: ops.F32},
		{batch: 8, m: 129, n: 1000, k: 40, transB: true, b: ops.F16, broadcast: true}, // 128x128 tiles
		{batch: 8, m: 129, n: 1000, k: 33, transB: false, b: ops.F32, broadcast: true},
	} {
		t.Run(c.name(), func(t *testing.T) {
			a, b, d, _, _ := matMulOperands(t, ctx, c, 11)
			defer a.Buf.Destroy()
			defer b.Buf.Destroy()
			defer d.Buf.Destroy()
			one, err := ops.New(ctx, "one", ops.F32, c.batch*c.m, c.n) // selected rows computed alone
			must(t, err)
			defer one.Buf.Destroy()
			gputest.Poison(t, one)
			rows := []int{0, c.m / 2, c.m - 1, c.batch*c.m - 1, (c.batch / 2) * c.m}
			enc, err := ctx.NewEncoder()
			must(t, err)
			must(t, ops.MatMul(enc, d, a, b, c.transB))
			flatA := a.View(0, c.batch*c.m, c.k)
			for _, r := range rows {
				bz := b
				if !c.broadcast && c.batch > 1 {
					bz = b.View((r/c.m)*c.n*c.k, b.Shape[1:]...)
				}
				must(t, ops.MatMul(enc, one.View(r*c.n, 1, c.n), flatA.View(r*c.k, 1, c.k), bz, c.transB))
			}
			must(t, enc.SubmitAndWait())
			batched, err := d.Read()
			must(t, err)
			alone, err := one.Read()
			must(t, err)
			for _, r := range rows {
				checkBitIdentical(t, batched[r*c.n:(r+1)*c.n], alone[r*c.n:(r+1)*c.n], c.n)
			}
		})
	}
}

// withBindingLimit runs f with the context pretending its storage bindings
// hold at most limit bytes, so the splitting paths run at test-sized shapes.
// (Smaller bindings than the device allows are always valid.)
func withBindingLimit(ctx *gpu.Context, limit uint64, f func()) {
	old := ctx.Limits.MaxStorageBufferBindingSize
	ctx.Limits.MaxStorageBufferBindingSize = limit
	defer func() { ctx.Limits.MaxStorageBufferBindingSize = old }()
	f()
}

// Operands over the binding limit are split into several dispatches that give
// the same bits as one dispatch, and match the reference.
func TestMatMulSplitOverBindingLimit(t *testing.T) {
	ctx := gputest.Ctx(t)
	const limit = 64 << 10
	for i, c := range []matMulCase{
		// b rows (N ranges), per-batch dispatches, a and dst in row ranges.
		{batch: 2, m: 150, n: 600, k: 72, transB: true, b: ops.F16, broadcast: true},
		{batch: 2, m: 30, n: 301, k: 77, transB: true, b: ops.F32},
		// b [K, N] over the limit: K ranges, later ones continuing from dst.
		{batch: 1, m: 40, n: 100, k: 300, transB: false, b: ops.F32},
		{batch: 1, m: 33, n: 77, k: 500, transB: false, b: ops.F16},
	} {
		t.Run(c.name(), func(t *testing.T) {
			seed := int64(3000 + i)
			a, b, d, av, bq := matMulOperands(t, ctx, c, seed)
			defer a.Buf.Destroy()
			defer b.Buf.Destroy()
			defer d.Buf.Destroy()
			whole, err := ops.New(ctx, "whole", ops.F32, d.Shape...)
			must(t, err)
			defer whole.Buf.Destroy()
			enc, err := ctx.NewEncoder()
			must(t, err)
			must(t, ops.MatMul(enc, whole, a, b, c.transB))
			must(t, enc.SubmitAndWait())

			var dispatches int
			withBindingLimit(ctx, limit, func() {
				enc, err := ctx.NewEncoder()
				must(t, err)
				must(t, ops.MatMul(enc, d, a, b, c.transB))
				dispatches = enc.Dispatches()
				must(t, enc.SubmitAndWait())
			})
			if dispatches < 2 {
				t.Errorf("%d dispatch(es) with operands over a %d-byte binding limit", dispatches, limit)
			}
			got, err := d.Read()
			must(t, err)
			one, err := whole.Read()
			must(t, err)
			want := make([]float64, c.batch*c.m*c.n)
			ref.MatMul(want, gputest.F64(av), gputest.F64(bq), c.batch, c.m, c.n, c.k, c.transB, c.broadcast || c.batch == 1)
			gputest.Check(t, "split matmul "+c.name(), seed, got, want, gputest.TolDot(c.k))
			checkBitIdentical(t, got, one, c.n)
		})
	}
	// Likewise MatVec's weight row ranges, at odd sizes.
	for i, c := range []matVecCase{
		{m: 3, n: 301, k: 77, w: ops.F32},
		{m: 2, n: 517, k: 96, w: ops.F16},
	} {
		t.Run(fmt.Sprintf("matvec_%s/m%d_n%d_k%d", c.w, c.m, c.n, c.k), func(t *testing.T) {
			withBindingLimit(ctx, limit, func() { runMatVecCase(t, ctx, c, int64(3100+i)) })
		})
	}
}

// A row of a, or of dst, over the binding limit cannot be split.
func TestMatMulRowOverBindingLimit(t *testing.T) {
	ctx := gputest.Ctx(t)
	const limit = 64 << 10
	a, err := ops.New(ctx, "a", ops.F32, 2, 20000) // 80 KB rows
	must(t, err)
	defer a.Buf.Destroy()
	b, err := ops.New(ctx, "b", ops.F16, 3, 20000)
	must(t, err)
	defer b.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, 2, 3)
	must(t, err)
	defer d.Buf.Destroy()
	withBindingLimit(ctx, limit, func() {
		expectBindingTooLarge(t, ctx, func(enc *gpu.Encoder) error { return ops.MatMul(enc, d, a, b, true) })
	})
}

func TestMatMulRejectsMismatchedShapes(t *testing.T) {
	ctx := gputest.Ctx(t)
	a, _ := ops.New(ctx, "a", ops.F32, 3, 5, 7)
	b, _ := ops.New(ctx, "b", ops.F16, 9, 8)
	d, _ := ops.New(ctx, "d", ops.F32, 3, 5, 9)
	defer a.Buf.Destroy()
	defer b.Buf.Destroy()
	defer d.Buf.Destroy()
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	err = ops.MatMul(enc, d, a, b, true)
	if err == nil {
		t.Fatal("a with K=7 accepted for b^T with K=8")
	}
	for _, s := range []string{"MatMul", "f32[3 5 7]", "f16[9 8]", "f32[3 5 9]"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %q", err, s)
		}
	}
	if err := ops.MatMul(enc, d, a, b.View(0, 8, 9), false); err == nil {
		t.Error("b [K=8, N=9] accepted for a with K=7")
	}
}
