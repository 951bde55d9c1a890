package ops_test

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// cpuArgmax is the reference: the first index of the largest value, or
// ops.ArgmaxNone when the row holds a NaN or +Inf or only -Inf.
func cpuArgmax(row []float32) uint32 {
	best := 0
	for i, v := range row {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 1) {
			return ops.ArgmaxNone
		}
		if v > row[best] {
			best = i
		}
	}
	if math.IsInf(float64(row[best]), -1) {
		return ops.ArgmaxNone
	}
	return uint32(best)
}

// TestArgmax: vocabularies from 1 to qwen2's 151936, random rows, rows
// whose maximum appears several times (lowest index wins), rows of -inf
// with one finite entry, rows of only -inf (ArgmaxNone), rows with a NaN
// or +Inf at the start, the end or anywhere (ArgmaxNone: no token to pick;
// the GPU's argmax used to return an index for them), and the maximum at
// the very first and last column. Exact match with the CPU.
func TestArgmax(t *testing.T) {
	ctx := gputest.Ctx(t)
	negInf := float32(math.Inf(-1))
	for ci, cols := range []int{1, 2, 57, 255, 257, 1025, 4096, 32000, 151936} {
		t.Run(fmt.Sprint(cols), func(t *testing.T) {
			seed := int64(6000 + ci)
			rng := rand.New(rand.NewSource(seed))
			var rows [][]float32
			add := func(r []float32) { rows = append(rows, r) }
			add(gputest.Rand(rng, cols, 10))
			add(gputest.Rand(rng, cols, 1e-3))
			// Ties: the maximum at several random places, then at the ends.
			r := gputest.Rand(rng, cols, 5)
			for k := 0; k < 4; k++ {
				r[rng.Intn(cols)] = 7
			}
			add(r)
			r = gputest.Rand(rng, cols, 5)
			r[cols-1], r[0] = 9, 9
			add(r)
			// All ties: every element equal.
			r = make([]float32, cols)
			for i := range r {
				r[i] = -2.5
			}
			add(r)
			// -inf everywhere but one entry, the last; then only -inf.
			r = make([]float32, cols)
			for i := range r {
				r[i] = negInf
			}
			r[cols-1] = -1e30
			add(r)
			r = make([]float32, cols)
			for i := range r {
				r[i] = negInf
			}
			add(r)
			// A NaN or +Inf anywhere, first, last; NaN with the maximum elsewhere.
			nan, posInf := float32(math.NaN()), float32(math.Inf(1))
			for _, bad := range []float32{nan, posInf} {
				for _, at := range []int{rng.Intn(cols), 0, cols - 1} {
					r = gputest.Rand(rng, cols, 5)
					r[at] = bad
					add(r)
				}
			}
			r = gputest.Rand(rng, cols, 5)
			r[0], r[cols-1] = 100, nan
			add(r)
			// Maximum in the last column only.
			r = gputest.Rand(rng, cols, 5)
			r[cols-1] = 6
			add(r)

			flat := make([]float32, 0, len(rows)*cols)
			want := make([]uint32, len(rows))
			for i, r := range rows {
				flat = append(flat, r...)
				want[i] = cpuArgmax(r)
			}
			x := paddedF32(t, ctx, "logits", rng, flat, 5, len(rows), cols)
			dbuf, err := ops.New(ctx, "d", ops.U32, len(rows)+3)
			must(t, err)
			defer dbuf.Buf.Destroy()
			d := dbuf.View(1, len(rows))
			gputest.Poison(t, d) // NaN bits: 0x7fc00000, never a valid index here
			runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.Argmax(enc, d, x) })
			got, err := d.ReadUint32()
			must(t, err)
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("seed %d: row %d: got %d, want %d", seed, i, got[i], want[i])
				}
			}
		})
	}
}

// TestArgmaxBatchInvariant: a row's result is the same alone and among
// 64 other rows.
func TestArgmaxBatchInvariant(t *testing.T) {
	ctx := gputest.Ctx(t)
	const cols, rows = 32000, 65
	rng := rand.New(rand.NewSource(61))
	flat := gputest.Rand(rng, rows*cols, 3)
	flat[10*cols+1234], flat[10*cols+31999] = 4, 4
	x, err := ops.FromFloat32(ctx, "x", ops.F32, flat, rows, cols)
	must(t, err)
	defer x.Buf.Destroy()
	all, err := ops.New(ctx, "all", ops.U32, rows)
	must(t, err)
	defer all.Buf.Destroy()
	one, err := ops.New(ctx, "one", ops.U32, 1)
	must(t, err)
	defer one.Buf.Destroy()
	runOp(t, ctx, func(enc *gpu.Encoder) error {
		if err := ops.Argmax(enc, all, x); err != nil {
			return err
		}
		return ops.Argmax(enc, one, x.View(10*cols, 1, cols))
	})
	a, err := all.ReadUint32()
	must(t, err)
	o, err := one.ReadUint32()
	must(t, err)
	if a[10] != o[0] || o[0] != 1234 {
		t.Errorf("row 10: %d in the batch, %d alone, want 1234", a[10], o[0])
	}
	for i := range a {
		if want := cpuArgmax(flat[i*cols : (i+1)*cols]); a[i] != want {
			t.Errorf("row %d: got %d, want %d", i, a[i], want)
		}
	}
}

func TestArgmaxRejectsBadInput(t *testing.T) {
	ctx := gputest.Ctx(t)
	mk := func(dt ops.DType, shape ...int) ops.Tensor {
		x, err := ops.New(ctx, "x", dt, shape...)
		must(t, err)
		t.Cleanup(x.Buf.Destroy)
		return x
	}
	x, d := mk(ops.F32, 3, 10), mk(ops.U32, 3)
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	must(t, ops.Argmax(enc, d, x))
	for name, err := range map[string]error{
		"f16 x":    ops.Argmax(enc, d, mk(ops.F16, 3, 10)),
		"f32 dst":  ops.Argmax(enc, mk(ops.F32, 3), x),
		"dst rows": ops.Argmax(enc, mk(ops.U32, 2), x),
		"dst in x": ops.Argmax(enc, ops.Tensor{Buf: x.Buf, Off: 27, DType: ops.U32, Shape: []int{3}}, x.View(0, 2, 10)),
		"empty x":  ops.Argmax(enc, d, ops.Tensor{Buf: x.Buf, DType: ops.F32}),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
