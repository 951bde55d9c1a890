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

// matMulQuantCase is x [m, k] times a weight [n, k] of type dt.
type matMulQuantCase struct {
	dt      ops.DType
	m, n, k int
}

func (c matMulQuantCase) name() string { return fmt.Sprintf("%s/%dx%dx%d", c.dt, c.m, c.n, c.k) }

// matMulQuantInputs makes random blocks of the weight, their host-decoded
// values and x.
func matMulQuantInputs(t testing.TB, c matMulQuantCase, seed int64) (raw []byte, wf, xv []float32) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	raw = randomBlocks(rng, c.dt, c.n*c.k)
	return raw, hostDecode(t, c.dt, raw, c.n*c.k), gputest.Rand(rng, c.m*c.k, 1)
}

// runMatMulQuant uploads the operands, runs MatMulQuant into a poisoned dst
// and reads it back.
func runMatMulQuant(t testing.TB, ctx *gpu.Context, c matMulQuantCase, raw []byte, xv []float32) []float32 {
	t.Helper()
	w, err := ops.FromBytes(ctx, "w", c.dt, raw, c.n, c.k)
	must(t, err)
	defer w.Buf.Destroy()
	x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, c.m, c.k)
	must(t, err)
	defer x.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, c.m, c.n)
	must(t, err)
	defer d.Buf.Destroy()
	gputest.Poison(t, d)
	enc := newEncoder(t, ctx)
	must(t, ops.MatMulQuant(enc, d, x, w))
	must(t, enc.SubmitAndWait())
	got, err := d.Read()
	must(t, err)
	return got
}

// refMatMulQuant is ops/ref's MatMul over the host-decoded weight, and the
// same over |x| and |w|: sum_k |x w|, the scale of any f32 sum's rounding.
func refMatMulQuant(c matMulQuantCase, wf, xv []float32) (want, mag []float64) {
	want, mag = make([]float64, c.m*c.n), make([]float64, c.m*c.n)
	w64, x64 := gputest.F64(wf), gputest.F64(xv)
	ref.MatMul(want, x64, w64, 1, c.m, c.n, c.k, true, true)
	for i := range w64 {
		w64[i] = math.Abs(w64[i])
	}
	for i := range x64 {
		x64[i] = math.Abs(x64[i])
	}
	ref.MatMul(mag, x64, w64, 1, c.m, c.n, c.k, true, true)
	return want, mag
}

// Tolerance: the kernel decodes exactly the reference's dequantised values,
// so only f32 accumulation separates it from the float64 reference:
// relative L2 1e-5 and each |got - want| <= 1e-5 * sum_k |x w| (checkMatVec;
// random blocks with large scales cancel heavily, so a bound relative to
// |want| would not hold).
func TestMatMulQuant(t *testing.T) {
	ctx := gputest.Ctx(t)
	types := append(append([]ops.DType{}, quantTypes...), ops.BF16)
	for ti, dt := range types {
		k := 512
		if dt.BlockSize() == 32 {
			k = 96
		}
		cases := []matMulQuantCase{{dt, 1, 57, k}, {dt, 37, 71, k}, {dt, 133, 65, 2 * k}}
		if dt == ops.BF16 {
			cases = append(cases, matMulQuantCase{dt, 19, 23, 57}, matMulQuantCase{dt, 5, 9, 30})
		}
		for ci, c := range cases {
			t.Run(c.name(), func(t *testing.T) {
				seed := int64(5000 + 10*ti + ci)
				raw, wf, xv := matMulQuantInputs(t, c, seed)
				got := runMatMulQuant(t, ctx, c, raw, xv)
				want, mag := refMatMulQuant(c, wf, xv)
				checkMatVec(t, "matmul quant "+c.name(), seed, got, want, mag)
			})
		}
	}
}

// MatMulQuant gives the bits of Dequantize to f32 followed by MatMul (the
// decoders are exact and both kernels run one fma chain over k in order),
// for every type and for every tile it can choose.
func TestMatMulQuantMatchesDequantizeMatMul(t *testing.T) {
	ctx := gputest.Ctx(t)
	types := append(append([]ops.DType{}, quantTypes...), ops.BF16)
	for ti, dt := range types {
		c := matMulQuantCase{dt, 41, 75, 256}
		switch {
		case dt == ops.BF16:
			c.k = 77
		case dt.BlockSize() == 32:
			c.k = 96 // a last K slice of the deeper tiles that is partly past K
		}
		t.Run(c.name(), func(t *testing.T) {
			seed := int64(5200 + ti)
			raw, _, xv := matMulQuantInputs(t, c, seed)
			w, err := ops.FromBytes(ctx, "w", c.dt, raw, c.n, c.k)
			must(t, err)
			defer w.Buf.Destroy()
			wd, err := ops.New(ctx, "wd", ops.F32, c.n, c.k)
			must(t, err)
			defer wd.Buf.Destroy()
			x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, c.m, c.k)
			must(t, err)
			defer x.Buf.Destroy()
			tiles := ops.MatMulQuantTiles
			d, err := ops.New(ctx, "d", ops.F32, (tiles+1)*c.m, c.n)
			must(t, err)
			defer d.Buf.Destroy()
			gputest.Poison(t, d)
			enc := newEncoder(t, ctx)
			must(t, ops.Dequantize(enc, wd, w))
			must(t, ops.MatMul(enc, d.View(0, c.m, c.n), x, wd, true))
			for i := 0; i < tiles; i++ {
				restore := ops.SetMatMulQuantTile(i)
				err := ops.MatMulQuant(enc, d.View((i+1)*c.m*c.n, c.m, c.n), x, w)
				restore()
				must(t, err)
			}
			must(t, enc.SubmitAndWait())
			got, err := d.Read()
			must(t, err)
			base := got[:c.m*c.n]
			for i := 0; i < tiles; i++ {
				checkBits(t, "tile "+ops.MatMulQuantTileName(i)+" vs Dequantize+MatMul", seed, got[(i+1)*c.m*c.n:(i+2)*c.m*c.n], base)
			}
		})
	}
}

// A row's result is bit-identical whether it is computed alone, with a few
// others, or in a batch large enough for the 128x128 tile.
func TestMatMulQuantBatchInvariant(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ti, dt := range []ops.DType{ops.Q4_0, ops.Q8_0, ops.Q4_K, ops.Q6_K, ops.MXFP4, ops.BF16} {
		t.Run(dt.String(), func(t *testing.T) {
			seed := int64(5300 + ti)
			const mBig, n, k = 1300, 1500, 64 * 4
			c := matMulQuantCase{dt, mBig, n, k}
			raw, wf, xv := matMulQuantInputs(t, c, seed)
			w, err := ops.FromBytes(ctx, "w", dt, raw, n, k)
			must(t, err)
			defer w.Buf.Destroy()
			x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, mBig, k)
			must(t, err)
			defer x.Buf.Destroy()
			// Batches: all rows, rows 100..116 (17), row 700 alone.
			parts := []struct{ r0, m int }{{0, mBig}, {100, 17}, {700, 1}}
			d, err := ops.New(ctx, "d", ops.F32, mBig+17+1, n)
			must(t, err)
			defer d.Buf.Destroy()
			gputest.Poison(t, d)
			enc := newEncoder(t, ctx)
			at := 0
			for _, p := range parts {
				must(t, ops.MatMulQuant(enc, d.View(at*n, p.m, n), x.View(p.r0*k, p.m, k), w))
				at += p.m
			}
			must(t, enc.SubmitAndWait())
			got, err := d.Read()
			must(t, err)
			all := got[:mBig*n]
			checkBits(t, "17 rows vs the whole batch", seed, got[mBig*n:(mBig+17)*n], all[100*n:117*n])
			checkBits(t, "one row vs the whole batch", seed, got[(mBig+17)*n:], all[700*n:701*n])
			// The whole batch against the reference, on a sample of rows.
			rows := []int{0, 1, 127, 128, 700, mBig - 1}
			var sx []float32
			for _, r := range rows {
				sx = append(sx, xv[r*k:(r+1)*k]...)
			}
			sc := matMulQuantCase{dt, len(rows), n, k}
			want, mag := refMatMulQuant(sc, wf, sx)
			var sg []float32
			for _, r := range rows {
				sg = append(sg, all[r*n:(r+1)*n]...)
			}
			checkMatVec(t, "sampled rows", seed, sg, want, mag)
		})
	}
}

// Views: a row range of the weight (for MXFP4 starting inside a word), x
// starting at an element that is not a multiple of 4 (scalar x loads), and
// dst inside a bigger buffer, whose other elements stay untouched.
func TestMatMulQuantViews(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ti, dt := range []ops.DType{ops.Q4_0, ops.Q5_0, ops.Q3_K, ops.Q6_K, ops.IQ4_XS, ops.MXFP4, ops.BF16} {
		t.Run(dt.String(), func(t *testing.T) {
			seed := int64(5400 + ti)
			rng := rand.New(rand.NewSource(seed))
			n, k, m, r0, nv := 40, 256, 19, 7, 23
			if dt == ops.MXFP4 {
				k = 96 // 51-byte rows: the view starts at byte 357, inside a word
			}
			if dt == ops.BF16 {
				k = 45 // rows start at odd halves
			}
			raw := randomBlocks(rng, dt, n*k)
			wf := hostDecode(t, dt, raw, n*k)
			w, err := ops.FromBytes(ctx, "w", dt, raw, n, k)
			must(t, err)
			defer w.Buf.Destroy()
			xv := gputest.Rand(rng, m*k+1, 1)
			xb, err := ops.FromFloat32(ctx, "x", ops.F32, xv, m*k+1)
			must(t, err)
			defer xb.Buf.Destroy()
			db, err := ops.New(ctx, "d", ops.F32, m*nv+5)
			must(t, err)
			defer db.Buf.Destroy()
			gputest.Poison(t, db)
			enc := newEncoder(t, ctx)
			must(t, ops.MatMulQuant(enc, db.View(5, m, nv), xb.View(1, m, k), w.View(r0*k, nv, k)))
			must(t, enc.SubmitAndWait())
			got, err := db.Read()
			must(t, err)
			for j := 0; j < 5; j++ {
				if !math.IsNaN(float64(got[j])) {
					t.Errorf("dst element %d before the view was written", j)
				}
			}
			c := matMulQuantCase{dt, m, nv, k}
			want, mag := refMatMulQuant(c, wf[r0*k:(r0+nv)*k], xv[1:])
			checkMatVec(t, "matmul quant views", seed, got[5:], want, mag)
		})
	}
}

// Operands over the binding limit are split (weight rows; x and dst rows)
// into dispatches that give the bits of one.
func TestMatMulQuantSplitOverBindingLimit(t *testing.T) {
	ctx := gputest.Ctx(t)
	const limit = 64 << 10
	for i, c := range []matMulQuantCase{
		{ops.Q4_0, 150, 700, 512}, // weight 700 rows of 288 bytes: 4 windows; x and dst 2-3 row ranges
		{ops.Q6_K, 40, 301, 1024}, // weight rows of 840 bytes
		{ops.BF16, 33, 77, 999},   // odd rows of 1998 bytes
	} {
		t.Run(c.name(), func(t *testing.T) {
			seed := int64(5500 + i)
			raw, wf, xv := matMulQuantInputs(t, c, seed)
			whole := runMatMulQuant(t, ctx, c, raw, xv)
			var got []float32
			var dispatches int
			withBindingLimit(ctx, limit, func() {
				w, err := ops.FromBytes(ctx, "w", c.dt, raw, c.n, c.k)
				must(t, err)
				defer w.Buf.Destroy()
				x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, c.m, c.k)
				must(t, err)
				defer x.Buf.Destroy()
				d, err := ops.New(ctx, "d", ops.F32, c.m, c.n)
				must(t, err)
				defer d.Buf.Destroy()
				gputest.Poison(t, d)
				enc := newEncoder(t, ctx)
				must(t, ops.MatMulQuant(enc, d, x, w))
				dispatches = enc.Dispatches()
				must(t, enc.SubmitAndWait())
				got, err = d.Read()
				must(t, err)
			})
			if dispatches < 2 {
				t.Errorf("%d dispatch(es) with operands over a %d-byte binding limit", dispatches, limit)
			}
			checkBits(t, "split vs one dispatch", seed, got, whole)
			want, mag := refMatMulQuant(c, wf, xv)
			checkMatVec(t, "split matmul quant", seed, got, want, mag)
		})
	}
}

// A row of x, of dst or of the weight over the binding limit cannot be split.
func TestMatMulQuantRowOverBindingLimit(t *testing.T) {
	ctx := gputest.Ctx(t)
	const limit = 64 << 10
	x, err := ops.New(ctx, "x", ops.F32, 4, 32768) // 128 KiB rows
	must(t, err)
	defer x.Buf.Destroy()
	w, err := ops.New(ctx, "w", ops.Q8_0, 3, 32768) // 34 KiB rows
	must(t, err)
	defer w.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, 4, 3)
	must(t, err)
	defer d.Buf.Destroy()
	withBindingLimit(ctx, limit, func() {
		expectBindingTooLarge(t, ctx, func(enc *gpu.Encoder) error { return ops.MatMulQuant(enc, d, x, w) })
	})
}

func TestMatMulQuantRejectsBadShapes(t *testing.T) {
	ctx := gputest.Ctx(t)
	w, _ := ops.New(ctx, "w", ops.Q4_K, 8, 256)
	wf, _ := ops.New(ctx, "wf", ops.F32, 8, 256)
	x, _ := ops.New(ctx, "x", ops.F32, 9, 256)
	d, _ := ops.New(ctx, "d", ops.F32, 9, 8)
	defer func() {
		for _, b := range []ops.Tensor{w, wf, x, d} {
			b.Buf.Destroy()
		}
	}()
	enc := newEncoder(t, ctx)
	defer enc.Release()
	cases := map[string]error{
		"f32 weight":    ops.MatMulQuant(enc, d, x, wf),
		"x width":       ops.MatMulQuant(enc, d.View(0, 9, 8), x.View(0, 18, 128), w),
		"dst rows":      ops.MatMulQuant(enc, d.View(0, 8, 8), x, w),
		"dst cols":      ops.MatMulQuant(enc, d.View(0, 9, 4), x, w),
		"1-D weight":    ops.MatMulQuant(enc, d, x, w.View(0, 2048)),
		"3-D x":         ops.MatMulQuant(enc, d, x.View(0, 3, 3, 256), w),
		"f16 x":         ops.MatMulQuant(enc, d, ops.Tensor{Buf: x.Buf, DType: ops.F16, Shape: []int{9, 256}}, w),
		"weight blocks": ops.MatMulQuant(enc, d.View(0, 9, 16), x.View(0, 9, 128), ops.Tensor{Buf: w.Buf, DType: ops.Q4_K, Shape: []int{16, 128}}),
		"dst aliases x": ops.MatMulQuant(enc, x.View(0, 9, 8), x, w),
	}
	for name, err := range cases {
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if enc.Dispatches() != 0 {
		t.Errorf("%d dispatches recorded for bad operands", enc.Dispatches())
	}
}

// With less workgroup memory than the 128x128 tile needs (browsers offer
// 16 KiB by default), a batch that would take it runs on a smaller tile,
// with the same bits.
func TestMatMulQuantSmallWorkgroupMemory(t *testing.T) {
	ctx := gputest.Ctx(t)
	c := matMulQuantCase{ops.Q4_K, 1300, 1500, 256}
	seed := int64(5600)
	raw, _, xv := matMulQuantInputs(t, c, seed)
	bigTile := ops.MatMulQuantTileFor(ctx, c.m, c.n)
	big := runMatMulQuant(t, ctx, c, raw, xv)
	old := ctx.Limits.MaxComputeWorkgroupStorageSize
	ctx.Limits.MaxComputeWorkgroupStorageSize = 16 << 10
	defer func() { ctx.Limits.MaxComputeWorkgroupStorageSize = old }()
	smallTile := ops.MatMulQuantTileFor(ctx, c.m, c.n)
	if old >= 32<<10 && (bigTile != "128x128x32" || smallTile == bigTile) {
		t.Errorf("tiles %s with %d bytes of workgroup memory and %s with 16 KiB: want 128x128 and a smaller one", bigTile, old, smallTile)
	}
	small := runMatMulQuant(t, ctx, c, raw, xv)
	checkBits(t, "16 KiB of workgroup memory vs the device's", seed, small, big)
}
