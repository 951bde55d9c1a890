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
