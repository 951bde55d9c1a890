package ops_test

import (
	"math"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/half"
)

// TestScatterRows scatters random rows to random distinct dst rows (some
// skipped by an out-of-range index) over a dst filled with NaN: every
// scattered row must equal its source (exactly, except f32 to f16, which
// must round to one of the two neighbouring halves), every other row must
// keep its NaN bits.
func TestScatterRows(t *testing.T) {
	ctx := gputest.Ctx(t)
	cases := []struct {
		name           string
		n, cols, dRows int
		src, dst       ops.DType
		srcOff, dstOff int // view offsets in elements
		skipEvery      int // every k-th row gets ScatterSkip (0: none)
		outOfRangeIdx  bool
	}{
		{"one_row_f32", 1, 4, 1, ops.F32, ops.F32, 0, 0, 0, false},
		{"f32_to_f16_kv_rows", 8, 2 * 128, 64, ops.F32, ops.F16, 0, 0, 0, false},
		{"f32_to_f32_odd", 57, 33, 1001, ops.F32, ops.F32, 3, 5, 7, true},
		{"f32_to_f16_offsets", 57, 6, 300, ops.F32, ops.F16, 1, 2, 5, true},
		{"f16_to_f16_odd_src", 19, 1024, 40, ops.F16, ops.F16, 1, 0, 4, false},
		{"f16_to_f32", 23, 10, 30, ops.F16, ops.F32, 0, 1, 0, true},
		{"many_rows", 1001, 64, 4096, ops.F32, ops.F16, 0, 0, 13, false},
	}
	for n, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seed := int64(1300 + n)
			rng := rand.New(rand.NewSource(seed))
			sv := gputest.Rand(rng, c.srcOff+c.n*c.cols, 2)
			srcBuf, err := ops.FromFloat32(ctx, "src", c.src, sv, len(sv))
			must(t, err)
			defer srcBuf.Buf.Destroy()
			src := srcBuf.View(c.srcOff, c.n, c.cols)
			dstBuf, err := ops.New(ctx, "dst", c.dst, c.dstOff+c.dRows*c.cols+1)
			must(t, err)
			defer dstBuf.Buf.Destroy()
			gputest.Poison(t, dstBuf)
			dst := dstBuf.View(c.dstOff, c.dRows, c.cols)

			perm := rng.Perm(c.dRows)
			idx := make([]uint32, c.n)
			for i := range idx {
				switch {
				case c.skipEvery > 0 && i%c.skipEvery == 1:
					idx[i] = ops.ScatterSkip
				case c.outOfRangeIdx && i%11 == 2:
					idx[i] = uint32(c.dRows) // one past the end: skipped too
				default:
					idx[i] = uint32(perm[i%c.dRows])
				}
			}
			index, err := ops.FromUint32(ctx, "index", idx, c.n)
			must(t, err)
			defer index.Buf.Destroy()

			enc, err := ctx.NewEncoder()
			must(t, err)
			must(t, ops.ScatterRows(enc, dst, src, index))
			must(t, enc.SubmitAndWait())
			got, err := dstBuf.Read()
			must(t, err)
			stored, err := srcBuf.Read() // the source as stored (f16-rounded for f16)
			must(t, err)

			want := make([]int, c.dRows) // dst row -> source row + 1 (0: untouched)
			for i, r := range idx {
				if r < uint32(c.dRows) {
					want[r] = i + 1
				}
			}
			for i, g := range got {
				r, col := (i-c.dstOff)/c.cols, (i-c.dstOff)%c.cols
				if i < c.dstOff || r >= c.dRows || want[r] == 0 {
					if !math.IsNaN(float64(g)) {
						t.Fatalf("element %d (outside the scattered rows) is %v, want its NaN kept", i, g)
					}
					continue
				}
				x := stored[c.srcOff+(want[r]-1)*c.cols+col]
				if c.src == ops.F32 && c.dst == ops.F16 {
					if !isF16Neighbour(g, x) {
						t.Fatalf("dst row %d col %d: %v is not an f16 neighbour of %v", r, col, g, x)
					}
				} else if math.Float32bits(g) != math.Float32bits(x) {
					t.Fatalf("dst row %d col %d (source row %d): %v, want %v", r, col, want[r]-1, g, x)
				}
			}
		})
	}
}

// isF16Neighbour reports whether g is x rounded to f16 up or down.
func isF16Neighbour(g, x float32) bool {
	h := half.FromFloat32(x)
	for _, c := range []uint16{h - 1, h, h + 1} {
		v := half.ToFloat32(c)
		if v == g && math.Abs(float64(v-x)) < math.Abs(float64(x))/512+1e-7 {
			return true
		}
	}
	return false
}

func TestScatterRowsRejectsBadShapes(t *testing.T) {
	ctx := gputest.Ctx(t)
	mk := func(dt ops.DType, shape ...int) ops.Tensor {
		x, err := ops.New(ctx, "x", dt, shape...)
		must(t, err)
		t.Cleanup(x.Buf.Destroy)
		return x
	}
	dst := mk(ops.F32, 10, 8)
	src := mk(ops.F32, 3, 8)
	idx := mk(ops.U32, 3)
	dh := mk(ops.F16, 10, 8)
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	bad := []struct {
		name            string
		dst, src, index ops.Tensor
	}{
		{"cols differ", dst, mk(ops.F32, 3, 7), idx},
		{"index count", dst, src, mk(ops.U32, 4)},
		{"f32 index", dst, src, mk(ops.F32, 3)},
		{"u32 dst", mk(ops.U32, 10, 8), src, idx},
		{"3-D dst", mk(ops.F32, 10, 2, 4), src, idx},
		{"f16 dst with odd rows", mk(ops.F16, 10, 7), mk(ops.F32, 3, 7), idx},
		{"f16 dst at an odd offset", dh.View(1, 9, 8), src, idx},
		{"dst aliases src", dst, dst.View(0, 3, 8), idx},
	}
	for _, b := range bad {
		if err := ops.ScatterRows(enc, b.dst, b.src, b.index); err == nil {
			t.Errorf("%s: accepted", b.name)
		} else {
			t.Logf("%s: %v", b.name, err)
		}
	}
}
