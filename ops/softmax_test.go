package ops_test

import (
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
)

// canary is the value of elements an op must not touch (between rows).
func canary(i int) float32 { return 1000 + float32(i%977) }

var nanBits = math.Float32frombits(0x7fc00000)

// stridedOutput fills a [rows × stride] region: the used columns poisoned
// with NaN, the padding with canaries.
func stridedOutput(rows, cols, stride int) []float32 {
	out := make([]float32, (rows-1)*stride+cols)
	for i := range out {
		if i%stride < cols {
			out[i] = nanBits
		} else {
			out[i] = canary(i)
		}
	}
	return out
}

// checkPadding fails when a padding element lost its canary.
func checkPadding(t *testing.T, name string, got []float32, cols, stride int) {
	t.Helper()
	for i, v := range got {
		if i%stride >= cols && math.Float32bits(v) != math.Float32bits(canary(i)) {
			t.Fatalf("%s: padding element %d (row %d, column %d) changed to %v", name, i, i/stride, i%stride, v)
		}
	}
}

// gather picks the used columns of a strided region.
func gather(v []float32, rows, cols, stride int) []float32 {
	out := make([]float32, 0, rows*cols)
	for r := 0; r < rows; r++ {
		out = append(out, v[r*stride:r*stride+cols]...)
	}
	return out
}

func TestSoftmax(t *testing.T) {
	ctx := gputest.Ctx(t)
	cases := []struct {
		rows, cols, xStride, dStride int
		scale                        float64 // input range; large values test the max subtraction
		maskFrac                     float64 // fraction of entries set to -inf
	}{
		{1, 1, 1, 1, 3, 0},
		{1, 8, 8, 8, 3, 0},
		{3, 57, 64, 61, 3, 0},        // both strides > cols, different
		{5, 1001, 1003, 1010, 4, 0},  // odd, multi-pass per thread
		{4, 256, 256, 256, 3, 0},     // exactly the small workgroup
		{7, 257, 300, 257, 3, 0},     // just past it
		{2, 4096, 4100, 4096, 3, 0},  // a long context row
		{64, 17, 20, 32, 3, 0},       // many short rows
		{3, 1001, 1001, 1001, 80, 0}, // exp would overflow without max subtraction
		{6, 130, 133, 130, 3, 0.4},   // random -inf entries
	}
	for n, c := range cases {
		t.Run(fmt.Sprintf("%dx%d_xs%d_ds%d_s%g_m%g", c.rows, c.cols, c.xStride, c.dStride, c.scale, c.maskFrac), func(t *testing.T) {
			seed := int64(200 + n)
			rng := rand.New(rand.NewSource(seed))
			xv := make([]float32, (c.rows-1)*c.xStride+c.cols)
			copy(xv, gputest.Rand(rng, len(xv), c.scale))
			for i := range xv {
				if i%c.xStride < c.cols && rng.Float64() < c.maskFrac {
					xv[i] = float32(math.Inf(-1))
				}
			}
			x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, len(xv))
			must(t, err)
			defer x.Buf.Destroy()
			dv := stridedOutput(c.rows, c.cols, c.dStride)
			d, err := ops.FromFloat32(ctx, "d", ops.F32, dv, len(dv))
			must(t, err)
			defer d.Buf.Destroy()

			enc, err := ctx.NewEncoder()
			must(t, err)
			must(t, ops.Softmax(enc, d, x, ops.SoftmaxLayout{Rows: c.rows, Cols: c.cols, XStride: c.xStride, DstStride: c.dStride}))
			must(t, enc.SubmitAndWait())
			got, err := d.Read()
			must(t, err)
			checkPadding(t, "softmax dst", got, c.cols, c.dStride)

			want := make([]float64, c.rows*c.cols)
			ref.Softmax(want, gputest.F64(xv), c.rows, c.cols, c.cols, c.xStride)
			gputest.Check(t, "softmax", seed, gather(got, c.rows, c.cols, c.dStride), want, gputest.TolF32)
		})
	}
}

// Rows of -inf with one finite entry are exactly one-hot; rows of only
// -inf are exactly zero (never NaN).
func TestSoftmaxMaskedRowsExact(t *testing.T) {
	ctx := gputest.Ctx(t)
	const rows, cols = 6, 1001
	rng := rand.New(rand.NewSource(7))
	xv := make([]float32, rows*cols)
	hot := []int{0, 1000, 500, -1, 257, -1} // -1: the whole row is masked
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			xv[r*cols+c] = float32(math.Inf(-1))
		}
		if hot[r] >= 0 {
			xv[r*cols+hot[r]] = float32(rng.Float64()*100 - 50)
		}
	}
	x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, rows, cols)
	must(t, err)
	defer x.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, rows, cols)
	must(t, err)
	defer d.Buf.Destroy()
	gputest.Poison(t, d)
	enc, err := ctx.NewEncoder()
	must(t, err)
	must(t, ops.Softmax(enc, d, x, ops.SoftmaxLayout{Rows: rows, Cols: cols}))
	must(t, enc.SubmitAndWait())
	got, err := d.Read()
	must(t, err)
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			want := float32(0)
			if c == hot[r] {
				want = 1
			}
			if g := got[r*cols+c]; math.Float32bits(g) != math.Float32bits(want) {
				t.Fatalf("row %d (hot %d) column %d: got %v, want exactly %v", r, hot[r], c, g, want)
			}
		}
	}
}

// In place on a strided score block: dst is x (same view, same stride).
func TestSoftmaxInPlace(t *testing.T) {
	ctx := gputest.Ctx(t)
	const rows, cols, stride = 9, 77, 80
	rng := rand.New(rand.NewSource(11))
	xv := stridedOutput(rows, cols, stride)
	vals := gputest.Rand(rng, rows*cols, 5)
	for r := 0; r < rows; r++ {
		copy(xv[r*stride:r*stride+cols], vals[r*cols:(r+1)*cols])
	}
	x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, len(xv))
	must(t, err)
	defer x.Buf.Destroy()
	enc, err := ctx.NewEncoder()
	must(t, err)
	must(t, ops.Softmax(enc, x, x, ops.SoftmaxLayout{Rows: rows, Cols: cols, XStride: stride, DstStride: stride}))
	must(t, enc.SubmitAndWait())
	got, err := x.Read()
	must(t, err)
	checkPadding(t, "in-place softmax", got, cols, stride)
	want := make([]float64, rows*cols)
	ref.Softmax(want, gputest.F64(vals), rows, cols, cols, cols)
	gputest.Check(t, "softmax in place", 11, gather(got, rows, cols, stride), want, gputest.TolF32)
}

func TestSoftmaxRejectsBadLayouts(t *testing.T) {
	ctx := gputest.Ctx(t)
	x, err := ops.New(ctx, "x", ops.F32, 4, 16)
	must(t, err)
	defer x.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, 4, 16)
	must(t, err)
	defer d.Buf.Destroy()
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	bad := []struct {
		name string
		dst  ops.Tensor
		l    ops.SoftmaxLayout
	}{
		{"stride below cols", d, ops.SoftmaxLayout{Rows: 4, Cols: 16, XStride: 8}},
		{"rows past the end", d, ops.SoftmaxLayout{Rows: 5, Cols: 16}},
		{"zero cols", d, ops.SoftmaxLayout{Rows: 4}},
		{"partial overlap in place", x.View(3, 61), ops.SoftmaxLayout{Rows: 3, Cols: 16}},
	}
	for _, b := range bad {
		if err := ops.Softmax(enc, b.dst, x, b.l); err == nil {
			t.Errorf("%s: accepted", b.name)
		}
	}
}

func TestCausalMask(t *testing.T) {
	ctx := gputest.Ctx(t)
	cases := []struct {
		name    string
		l       ops.ScoreLayout
		qOffset int
	}{
		{"square", ops.ScoreLayout{Heads: 1, Queries: 57, Keys: 57}, 0},
		{"heads_rowstride", ops.ScoreLayout{Heads: 3, Queries: 5, Keys: 1001, RowStride: 1003, HeadStride: 5*1003 + 7}, 996},
		{"query_major", ops.ScoreLayout{Heads: 4, Queries: 7, Keys: 30, RowStride: 4 * 33, HeadStride: 33}, 23},
		{"past_one_chunk", ops.ScoreLayout{Heads: 2, Queries: 3, Keys: 2500}, 1030},
		{"offset_beyond_keys", ops.ScoreLayout{Heads: 1, Queries: 2, Keys: 9}, 20}, // nothing masked
	}
	for n, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seed := int64(300 + n)
			rng := rand.New(rand.NewSource(seed))
			l := c.l
			if l.RowStride == 0 {
				l.RowStride = l.Keys
			}
			if l.HeadStride == 0 {
				l.HeadStride = l.Queries * l.RowStride
			}
			span := (l.Heads-1)*l.HeadStride + (l.Queries-1)*l.RowStride + l.Keys
			sv := gputest.Rand(rng, span, 4) // padding included: all must survive except masked entries
			s, err := ops.FromFloat32(ctx, "scores", ops.F32, sv, span)
			must(t, err)
			defer s.Buf.Destroy()
			enc, err := ctx.NewEncoder()
			must(t, err)
			must(t, ops.CausalMask(enc, s, c.l, c.qOffset))
			must(t, enc.SubmitAndWait())
			got, err := s.Read()
			must(t, err)
			want := gputest.F64(sv)
			ref.CausalMask(want, l.Heads, l.Queries, l.Keys, l.RowStride, l.HeadStride, c.qOffset)
			for i := range got {
				if float64(got[i]) != want[i] {
					t.Fatalf("element %d: got %v, want %v (seed %d)", i, got[i], want[i], seed)
				}
			}
		})
	}
}

// A block of 3 queries at the end of a 32768-key sequence: the mask is
// computed in the kernel, so the host allocates nothing near nq·nk·8 bytes.
func TestCausalMaskLongKeysNoHostMask(t *testing.T) {
	ctx := gputest.Ctx(t)
	const nq, nk, qOffset = 3, 32768, 32765
	rng := rand.New(rand.NewSource(17))
	sv := gputest.Rand(rng, nq*nk, 2)
	s, err := ops.FromFloat32(ctx, "scores", ops.F32, sv, nq, nk)
	must(t, err)
	defer s.Buf.Destroy()
	l := ops.ScoreLayout{Heads: 1, Queries: nq, Keys: nk}

	enc, err := ctx.NewEncoder()
	must(t, err)
	// The encoder's first dispatch allocates its uniform staging block;
	// record one small mask first so only the op itself is measured.
	must(t, ops.CausalMask(enc, s, ops.ScoreLayout{Heads: 1, Queries: 1, Keys: 1}, 0))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	must(t, ops.CausalMask(enc, s, l, qOffset))
	runtime.ReadMemStats(&after)
	must(t, enc.SubmitAndWait())
	allocated := after.TotalAlloc - before.TotalAlloc
	if limit := uint64(nq * nk * 8 / 100); allocated > limit {
		t.Errorf("CausalMask allocated %d bytes on the host, more than %d (1%% of an nq×nk mask)", allocated, limit)
	}
	t.Logf("host bytes allocated by CausalMask(%d×%d): %d (an nq×nk float64 mask: %d)", nq, nk, allocated, nq*nk*8)

	got, err := s.Read()
	must(t, err)
	want := gputest.F64(sv)
	ref.CausalMask(want, 1, nq, nk, nk, nq*nk, qOffset)
	for i := range got {
		if float64(got[i]) != want[i] {
			t.Fatalf("element %d (query %d, key %d): got %v, want %v", i, i/nk, i%nk, got[i], want[i])
		}
	}
}

// Mask, softmax and weighted sum chained on a strided score block give the
// attention reference: the unfused path end to end.
func TestMaskSoftmaxWeightedSumChain(t *testing.T) {
	ctx := gputest.Ctx(t)
	const heads, kvHeads, nq, nk, hd, qOffset = 4, 2, 5, 37, 16, 32
	const rowStride = nk + 3
	rng := rand.New(rand.NewSource(23))
	l := ops.ScoreLayout{Heads: heads, Queries: nq, Keys: nk, RowStride: rowStride}
	span := heads * nq * rowStride
	sv := gputest.Rand(rng, span, 3)
	vv := gputest.Rand(rng, nk*kvHeads*hd, 1)
	s, err := ops.FromFloat32(ctx, "scores", ops.F32, sv, span)
	must(t, err)
	defer s.Buf.Destroy()
	v, err := ops.FromFloat32(ctx, "v", ops.F32, vv, nk, kvHeads, hd)
	must(t, err)
	defer v.Buf.Destroy()
	out, err := ops.New(ctx, "out", ops.F32, nq, heads, hd)
	must(t, err)
	defer out.Buf.Destroy()
	gputest.Poison(t, out)

	enc, err := ctx.NewEncoder()
	must(t, err)
	must(t, ops.CausalMask(enc, s, l, qOffset))
	must(t, ops.Softmax(enc, s, s, ops.SoftmaxLayout{Rows: heads * nq, Cols: nk, XStride: rowStride, DstStride: rowStride}))
	must(t, ops.WeightedSum(enc, out, s, l, v, ops.TokenLayout{Tokens: nk, Heads: kvHeads, HeadDim: hd}))
	must(t, enc.SubmitAndWait())
	got, err := out.Read()
	must(t, err)

	probs := gputest.F64(sv)
	ref.CausalMask(probs, heads, nq, nk, rowStride, nq*rowStride, qOffset)
	ref.Softmax(probs, probs, heads*nq, nk, rowStride, rowStride)
	want := make([]float64, nq*heads*hd)
	ref.WeightedSum(want, probs, gputest.F64(vv), heads, kvHeads, nq, nk, hd, rowStride, nq*rowStride, kvHeads*hd)
	gputest.Check(t, "mask+softmax+wsum", 23, got, want, gputest.TolF32)
}
