package ops_test

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// paddedF32 uploads data as an f32 view starting at element pad of a larger
// buffer (so the shader's element offsets are exercised), with the padding
// filled by random values that a stray write would change.
func paddedF32(t *testing.T, ctx *gpu.Context, label string, rng *rand.Rand, data []float32, pad int, shape ...int) ops.Tensor {
	t.Helper()
	all := append(gputest.Rand(rng, pad, 1), data...)
	all = append(all, gputest.Rand(rng, 3, 1)...)
	buf, err := ops.FromFloat32(ctx, label, ops.F32, all, len(all))
	must(t, err)
	t.Cleanup(buf.Buf.Destroy)
	return buf.View(pad, shape...)
}

type elemCase struct {
	name string
	nIn  int
	run  func(enc *gpu.Encoder, dst ops.Tensor, in []ops.Tensor) error
	ref  func(dst []float64, in [][]float64)
}

const testScale = -0.7319

var elemCases = []elemCase{
	{"Add", 2, func(e *gpu.Encoder, d ops.Tensor, in []ops.Tensor) error { return ops.Add(e, d, in[0], in[1]) },
		func(d []float64, in [][]float64) { ref.Add(d, in[0], in[1]) }},
	{"Mul", 2, func(e *gpu.Encoder, d ops.Tensor, in []ops.Tensor) error { return ops.Mul(e, d, in[0], in[1]) },
		func(d []float64, in [][]float64) { ref.Mul(d, in[0], in[1]) }},
	{"SiluMul", 2, func(e *gpu.Encoder, d ops.Tensor, in []ops.Tensor) error { return ops.SiluMul(e, d, in[0], in[1]) },
		func(d []float64, in [][]float64) { ref.SiluMul(d, in[0], in[1]) }},
	{"Scale", 1, func(e *gpu.Encoder, d ops.Tensor, in []ops.Tensor) error { return ops.Scale(e, d, in[0], testScale) },
		func(d []float64, in [][]float64) { ref.Scale(d, in[0], float64(float32(testScale))) }},
}

// TestElementwise runs every op at sizes 1, 57, 1001 and 65537 with each
// operand at a different odd element offset and a poisoned output.
// Tolerance: TolF32 (each element is one or two f32 roundings from exact;
// silu adds the GPU's exp error, a few ulp).
func TestElementwise(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ci, c := range elemCases {
		for si, n := range []int{1, 57, 1001, 65537} {
			t.Run(fmt.Sprintf("%s/%d", c.name, n), func(t *testing.T) {
				seed := int64(1000 + 10*ci + si)
				rng := rand.New(rand.NewSource(seed))
				in := make([]ops.Tensor, c.nIn)
				in64 := make([][]float64, c.nIn)
				for k := range in {
					v := gputest.Rand(rng, n, 3)
					in[k] = paddedF32(t, ctx, fmt.Sprintf("in%d", k), rng, v, 2*k+3, n)
					in64[k] = gputest.F64(v)
				}
				d := paddedF32(t, ctx, "d", rng, make([]float32, n), 1, n)
				gputest.Poison(t, d)
				runOp(t, ctx, func(enc *gpu.Encoder) error { return c.run(enc, d, in) })
				got, err := d.Read()
				must(t, err)
				want := make([]float64, n)
				c.ref(want, in64)
				gputest.Check(t, c.name, seed, got, want, gputest.TolF32)
			})
		}
	}
}

// TestSiluMulExtremes: silu at ±100 and beyond must be finite (no inf/inf).
func TestSiluMulExtremes(t *testing.T) {
	ctx := gputest.Ctx(t)
	gate := []float32{-100, 100, -88.8, 88.8, -1e4, 1e4, -3e38, 3e38, -20, 20, -1e-30, 1e-30, 0.5, -0.5, 87, -87}
	rng := rand.New(rand.NewSource(7))
	up := gputest.Rand(rng, len(gate), 2)
	g, err := ops.FromFloat32(ctx, "g", ops.F32, gate, len(gate))
	must(t, err)
	defer g.Buf.Destroy()
	u, err := ops.FromFloat32(ctx, "u", ops.F32, up, len(up))
	must(t, err)
	defer u.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, len(gate))
	must(t, err)
	defer d.Buf.Destroy()
	gputest.Poison(t, d)
	runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.SiluMul(enc, d, g, u) })
	got, err := d.Read()
	must(t, err)
	want := make([]float64, len(gate))
	ref.SiluMul(want, gputest.F64(gate), gputest.F64(up))
	for i, v := range got {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Errorf("silu(%g)*%g = %g, want finite %g", gate[i], up[i], v, want[i])
		}
	}
	gputest.Check(t, "silu_mul extremes", 7, got, want, gputest.TolF32)
}

// TestElementwiseHuge: more than 65535 workgroups of 256, so the dispatch
// must spread over x and y.
func TestElementwiseHuge(t *testing.T) {
	ctx := gputest.Ctx(t)
	n := 65535*256 + 1001
	if gx, gy := ctx.Grid(uint32((n + 255) / 256)); gy < 2 {
		t.Fatalf("grid %dx%d for %d elements: the test no longer needs the y dimension", gx, gy, n)
	}
	const seed = 77
	rng := rand.New(rand.NewSource(seed))
	av, bv := gputest.Rand(rng, n, 2), gputest.Rand(rng, n, 2)
	a, err := ops.FromFloat32(ctx, "a", ops.F32, av, n)
	must(t, err)
	defer a.Buf.Destroy()
	b, err := ops.FromFloat32(ctx, "b", ops.F32, bv, n)
	must(t, err)
	defer b.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, n)
	must(t, err)
	defer d.Buf.Destroy()
	gputest.Poison(t, d)
	runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.Add(enc, d, a, b) })
	got, err := d.Read()
	must(t, err)
	want := make([]float64, n)
	ref.Add(want, gputest.F64(av), gputest.F64(bv))
	gputest.Check(t, "add huge", seed, got, want, gputest.TolF32)
}

// TestElementwiseAliasing: outputs written over an input view (in place),
// and inputs and output as disjoint views of one buffer.
func TestElementwiseAliasing(t *testing.T) {
	ctx := gputest.Ctx(t)
	const n = 1001
	const seed = 99
	rng := rand.New(rand.NewSource(seed))
	av, bv := gputest.Rand(rng, n, 2), gputest.Rand(rng, n, 2)
	a64, b64 := gputest.F64(av), gputest.F64(bv)
	// One buffer holding a at 1, b at n+2 and a free output slot at 2n+5.
	all := append(append(append(gputest.Rand(rng, 1, 1), av...), gputest.Rand(rng, 1, 1)...), bv...)
	all = append(all, make([]float32, n+3)...)
	setup := func(t *testing.T) (a, b, free ops.Tensor) {
		buf, err := ops.FromFloat32(ctx, "shared", ops.F32, all, len(all))
		must(t, err)
		t.Cleanup(buf.Buf.Destroy)
		return buf.View(1, n), buf.View(n+2, n), buf.View(2*n+5, n)
	}
	want := make([]float64, n)
	check := func(t *testing.T, name string, out ops.Tensor, want []float64) {
		t.Helper()
		got, err := out.Read()
		must(t, err)
		gputest.Check(t, name, seed, got, want, gputest.TolF32)
	}

	t.Run("add_into_a", func(t *testing.T) {
		a, b, _ := setup(t)
		runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.Add(enc, a, a, b) })
		ref.Add(want, a64, b64)
		check(t, "a += b", a, want)
	})
	t.Run("mul_into_b", func(t *testing.T) {
		a, b, _ := setup(t)
		runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.Mul(enc, b, a, b) })
		ref.Mul(want, a64, b64)
		check(t, "b = a*b", b, want)
	})
	t.Run("silu_mul_square_in_place", func(t *testing.T) {
		a, _, _ := setup(t)
		runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.SiluMul(enc, a, a, a) })
		ref.SiluMul(want, a64, a64)
		check(t, "a = silu(a)*a", a, want)
	})
	t.Run("scale_in_place", func(t *testing.T) {
		_, b, _ := setup(t)
		runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.Scale(enc, b, b, 3) })
		ref.Scale(want, b64, 3)
		check(t, "b *= 3", b, want)
	})
	t.Run("disjoint_views_of_one_buffer", func(t *testing.T) {
		a, b, free := setup(t)
		gputest.Poison(t, free)
		runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.Add(enc, free, a, b) })
		ref.Add(want, a64, b64)
		check(t, "free = a+b", free, want)
		// The inputs are untouched.
		check(t, "a unchanged", a, a64)
		check(t, "b unchanged", b, b64)
	})
	t.Run("chained_in_one_submission", func(t *testing.T) {
		a, b, _ := setup(t)
		runOp(t, ctx, func(enc *gpu.Encoder) error {
			if err := ops.Add(enc, a, a, b); err != nil {
				return err
			}
			return ops.Add(enc, a, a, b)
		})
		for i := range want {
			want[i] = a64[i] + 2*b64[i]
		}
		check(t, "a += b twice", a, want)
	})
	t.Run("partial_overlap_rejected", func(t *testing.T) {
		a, _, _ := setup(t)
		shifted := a.View(1, n-1)
		enc, err := ctx.NewEncoder()
		must(t, err)
		defer enc.Release()
		if err := ops.Add(enc, shifted, a.View(0, n-1), a.View(0, n-1)); err == nil {
			t.Fatal("dst overlapping an input one element over was accepted")
		}
	})
}

// TestAddRow: bias broadcast over rows, odd rows and row lengths, in place
// too. Tolerance TolF32.
func TestAddRow(t *testing.T) {
	ctx := gputest.Ctx(t)
	for i, s := range []struct{ rows, cols int }{{1, 1}, {3, 57}, {7, 1001}, {5, 896}, {2, 65537}} {
		for _, inPlace := range []bool{false, true} {
			t.Run(fmt.Sprintf("%dx%d_inplace=%v", s.rows, s.cols, inPlace), func(t *testing.T) {
				seed := int64(2000 + i)
				rng := rand.New(rand.NewSource(seed))
				xv, bv := gputest.Rand(rng, s.rows*s.cols, 2), gputest.Rand(rng, s.cols, 1)
				x := paddedF32(t, ctx, "x", rng, xv, 3, s.rows, s.cols)
				bias := paddedF32(t, ctx, "bias", rng, bv, 1, s.cols)
				d := x
				if !inPlace {
					d = paddedF32(t, ctx, "d", rng, make([]float32, len(xv)), 5, s.rows, s.cols)
					gputest.Poison(t, d)
				}
				runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.AddRow(enc, d, x, bias) })
				got, err := d.Read()
				must(t, err)
				want := make([]float64, len(xv))
				ref.AddRow(want, gputest.F64(xv), gputest.F64(bv))
				gputest.Check(t, "add_row", seed, got, want, gputest.TolF32)
			})
		}
	}
}

func TestElementwiseRejectsBadShapes(t *testing.T) {
	ctx := gputest.Ctx(t)
	mk := func(dt ops.DType, shape ...int) ops.Tensor {
		x, err := ops.New(ctx, "x", dt, shape...)
		must(t, err)
		t.Cleanup(x.Buf.Destroy)
		return x
	}
	a, b, short, half := mk(ops.F32, 4, 8), mk(ops.F32, 32), mk(ops.F32, 31), mk(ops.F16, 32)
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	for name, err := range map[string]error{
		"add length":      ops.Add(enc, a, b, short),
		"mul dst length":  ops.Mul(enc, short, a, b),
		"silu f16":        ops.SiluMul(enc, a, half, b),
		"scale f16 dst":   ops.Scale(enc, half, a, 2),
		"add_row bias":    ops.AddRow(enc, a, a, mk(ops.F32, 7)),
		"add_row f16":     ops.AddRow(enc, a, a, mk(ops.F16, 8)),
		"add_row dst":     ops.AddRow(enc, short, a, mk(ops.F32, 8)),
		"add_row aliased": ops.AddRow(enc, a, a, a.View(0, 8)),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// runOp records one op (or a few) and waits for the GPU.
func runOp(t testing.TB, ctx *gpu.Context, record func(*gpu.Encoder) error) {
	t.Helper()
	enc, err := ctx.NewEncoder()
	must(t, err)
	if err := record(enc); err != nil {
		enc.Release()
		t.Fatal(err)
	}
	must(t, enc.SubmitAndWait())
}

// TestCopyRows copies blocks between f32 and f16 tensors at odd offsets,
// odd and even strides and odd column counts, into a destination filled
// with random values, then checks the whole destination buffer: copied
// elements match (f32->f32, f16->f16 and f16->f32 exactly; f32->f16 within
// one f16 ulp, the rounding WGSL allows) and every other element, including
// an f16 half sharing a word with a copied one, is bit for bit unchanged.
func TestCopyRows(t *testing.T) {
	ctx := gputest.Ctx(t)
	type block struct{ rows, cols, srcOff, srcStride, dstOff, dstStride int }
	blocks := []block{
		{1, 1, 0, 1, 1, 1},            // one element at an odd offset
		{1, 2, 1, 2, 1, 2},            // two halves straddling a word
		{1, 57, 3, 57, 5, 57},         // odd cols, odd start
		{3, 57, 1, 64, 7, 60},         // even stride: every row starts odd
		{4, 33, 2, 40, 3, 61},         // odd stride: row starts alternate parity
		{5, 17, 0, 17, 1, 17},         // contiguous odd rows: rows share words
		{6, 16, 0, 16, 1, 16},         // contiguous even rows at an odd start
		{7, 16, 4, 16, 0, 16},         // aligned throughout
		{37, 129, 11, 130, 2, 129},    // many rows
		{8, 1024, 0, 1024, 513, 2048}, // KV-cache-like: rows into a wider cache
		{2, 65537, 1, 65537, 3, 65540},
	}
	dts := []ops.DType{ops.F32, ops.F16}
	for bi, b := range blocks {
		for _, sdt := range dts {
			for _, ddt := range dts {
				name := fmt.Sprintf("%s_to_%s/%dx%d_src%d+%d_dst%d+%d", sdt, ddt, b.rows, b.cols, b.srcOff, b.srcStride, b.dstOff, b.dstStride)
				t.Run(name, func(t *testing.T) {
					seed := int64(4000 + bi)
					rng := rand.New(rand.NewSource(seed))
					srcSpan := (b.rows-1)*b.srcStride + b.cols
					dstSpan := (b.rows-1)*b.dstStride + b.cols
					srcAll := gputest.Rand(rng, b.srcOff+srcSpan+3, 3)
					dstAll := gputest.Rand(rng, b.dstOff+dstSpan+3, 3)
					srcBuf, err := ops.FromFloat32(ctx, "src", sdt, srcAll, len(srcAll))
					must(t, err)
					defer srcBuf.Buf.Destroy()
					dstBuf, err := ops.FromFloat32(ctx, "dst", ddt, dstAll, len(dstAll))
					must(t, err)
					defer dstBuf.Buf.Destroy()
					// What the buffers hold, after rounding to their dtype.
					srcStored, err := srcBuf.Read()
					must(t, err)
					before, err := dstBuf.Read()
					must(t, err)

					src := srcBuf.View(b.srcOff, srcSpan)
					dst := dstBuf.View(b.dstOff, dstSpan)
					runOp(t, ctx, func(enc *gpu.Encoder) error {
						return ops.CopyRows(enc, dst, src, b.rows, b.cols, b.dstStride, b.srcStride)
					})
					after, err := dstBuf.Read()
					must(t, err)

					// copied[i] marks the dst elements inside the block.
					want := gputest.F64(before)
					copied := make([]bool, len(before))
					ref.CopyRows(want[b.dstOff:], gputest.F64(srcStored[b.srcOff:]), b.rows, b.cols, b.dstStride, b.srcStride)
					for r := 0; r < b.rows; r++ {
						for c := 0; c < b.cols; c++ {
							copied[b.dstOff+r*b.dstStride+c] = true
						}
					}
					bad := 0
					for i, g := range after {
						ok := float64(g) == want[i]
						if copied[i] && sdt == ops.F32 && ddt == ops.F16 {
							ok = math.Abs(float64(g)-want[i]) <= f16ULP(want[i])
						}
						if !ok {
							bad++
							if bad <= 5 {
								t.Errorf("seed %d: dst element %d (copied: %v): got %.9g, want %.9g (before the copy: %.9g)", seed, i, copied[i], g, want[i], before[i])
							}
						}
					}
					if bad > 0 {
						t.Errorf("seed %d: %d of %d dst elements wrong", seed, bad, len(after))
					}
				})
			}
		}
	}
}

// f16ULP is the spacing of f16 values at |v| (normal range and subnormals).
func f16ULP(v float64) float64 {
	_, e := math.Frexp(math.Abs(v)) // |v| = m * 2^e, m in [0.5, 1)
	return math.Ldexp(1, max(e-11, -24))
}

// TestCopyRowsSharedBuffer: src and dst as disjoint ranges of one f16
// buffer (shifting a KV cache), and overlapping ranges rejected.
func TestCopyRowsSharedBuffer(t *testing.T) {
	ctx := gputest.Ctx(t)
	const seed = 4100
	rng := rand.New(rand.NewSource(seed))
	vals := gputest.Rand(rng, 301, 3)
	buf, err := ops.FromFloat32(ctx, "kv", ops.F16, vals, len(vals))
	must(t, err)
	defer buf.Buf.Destroy()
	stored, err := buf.Read()
	must(t, err)
	// 3 rows of 41 from element 1 (stride 45) to element 160 (stride 47).
	runOp(t, ctx, func(enc *gpu.Encoder) error {
		return ops.CopyRows(enc, buf.View(160, 141), buf.View(1, 131), 3, 41, 47, 45)
	})
	got, err := buf.Read()
	must(t, err)
	want := gputest.F64(stored)
	ref.CopyRows(want[160:], gputest.F64(stored[1:]), 3, 41, 47, 45)
	for i := range got {
		if float64(got[i]) != want[i] {
			t.Fatalf("element %d: got %g, want %g", i, got[i], want[i])
		}
	}
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	if err := ops.CopyRows(enc, buf.View(40, 100), buf.View(1, 100), 1, 100, 0, 0); err == nil {
		t.Error("overlapping src and dst accepted")
	}
}

func TestCopyRowsRejectsBadInput(t *testing.T) {
	ctx := gputest.Ctx(t)
	mk := func(dt ops.DType, n int) ops.Tensor {
		x, err := ops.New(ctx, "x", dt, n)
		must(t, err)
		t.Cleanup(x.Buf.Destroy)
		return x
	}
	a, b, u := mk(ops.F32, 100), mk(ops.F16, 100), mk(ops.U32, 100)
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	for name, err := range map[string]error{
		"u32 src":        ops.CopyRows(enc, a, u, 1, 10, 0, 0),
		"u32 dst":        ops.CopyRows(enc, u, a, 1, 10, 0, 0),
		"no rows":        ops.CopyRows(enc, a, b, 0, 10, 10, 10),
		"no cols":        ops.CopyRows(enc, a, b, 2, 0, 10, 10),
		"stride < cols":  ops.CopyRows(enc, a, b, 2, 10, 9, 10),
		"dst too short":  ops.CopyRows(enc, a, b, 10, 10, 11, 10),
		"src too short":  ops.CopyRows(enc, a, b, 2, 10, 10, 95),
		"src view short": ops.CopyRows(enc, a, b.View(0, 9), 1, 10, 0, 0),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
