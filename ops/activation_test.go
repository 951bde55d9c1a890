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

// actRef is the float64 reference of each gated activation.
var actRef = map[ops.Activation]func(g, u float64) float64{
	ops.ActSiLU:      func(g, u float64) float64 { return ref.Silu(g) * u },
	ops.ActGELU:      func(g, u float64) float64 { return ref.GeluTanh(g) * u },
	ops.ActSwiGLUOAI: ref.SwiGLUOAI,
}

var allActs = []ops.Activation{ops.ActSiLU, ops.ActGELU, ops.ActSwiGLUOAI}

// TestGatedAct runs each activation at sizes 1, 57 and 1001 with inputs of
// scale 9 (past SwiGLUOAI's clamp at 7), odd element offsets and a poisoned
// output, in place on gate as well. Tolerance: TolF32 (a few f32 roundings
// and the GPU's exp error, a few ulp, per element).
func TestGatedAct(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ai, act := range allActs {
		for si, n := range []int{1, 57, 1001} {
			for _, inPlace := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%d/inplace=%v", act, n, inPlace), func(t *testing.T) {
					seed := int64(3100 + 10*ai + si)
					rng := rand.New(rand.NewSource(seed))
					gv, uv := gputest.Rand(rng, n, 9), gputest.Rand(rng, n, 9)
					g := paddedF32(t, ctx, "g", rng, gv, 3, n)
					u := paddedF32(t, ctx, "u", rng, uv, 5, n)
					d := g
					if !inPlace {
						d = paddedF32(t, ctx, "d", rng, make([]float32, n), 1, n)
						gputest.Poison(t, d)
					}
					runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.GatedAct(enc, d, g, u, act) })
					got, err := d.Read()
					must(t, err)
					want := make([]float64, n)
					for i := range want {
						want[i] = actRef[act](float64(gv[i]), float64(uv[i]))
					}
					gputest.Check(t, act.String(), seed, got, want, gputest.TolF32)
				})
			}
		}
	}
}

// TestGatedActSiLUIsSiluMul: ActSiLU is SiluMul bit for bit.
func TestGatedActSiLUIsSiluMul(t *testing.T) {
	ctx := gputest.Ctx(t)
	rng := rand.New(rand.NewSource(31))
	n := 1001
	g := paddedF32(t, ctx, "g", rng, gputest.Rand(rng, n, 5), 1, n)
	u := paddedF32(t, ctx, "u", rng, gputest.Rand(rng, n, 5), 2, n)
	d1 := paddedF32(t, ctx, "d1", rng, make([]float32, n), 0, n)
	d2 := paddedF32(t, ctx, "d2", rng, make([]float32, n), 0, n)
	runOp(t, ctx, func(enc *gpu.Encoder) error {
		if err := ops.SiluMul(enc, d1, g, u); err != nil {
			return err
		}
		return ops.GatedAct(enc, d2, g, u, ops.ActSiLU)
	})
	a, err := d1.Read()
	must(t, err)
	b, err := d2.Read()
	must(t, err)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("element %d: SiluMul %v, GatedAct(ActSiLU) %v", i, a[i], b[i])
		}
	}
}

// extremeInputs are where exp, tanh or x³ overflow in f32.
var extremeInputs = []float32{-3e38, 3e38, -1e20, 1e20, -1e4, 1e4, -100, 100, -89, 89, -20, 20, -10, 10,
	-7.5, 7.5, -1, 1, -0.26, 0.26, -0.24, 0.24, -1e-3, 1e-3, -1e-30, 1e-30, 0}

// TestActivationExtremes: every activation and SoftCap is finite and
// within TolF32 (relative to the exact value, plus 1e-5 absolute) at inputs
// where a naive exp/tanh/x³ overflows.
func TestActivationExtremes(t *testing.T) {
	ctx := gputest.Ctx(t)
	n := len(extremeInputs)
	up := make([]float32, n)
	for i := range up {
		up[i] = float32(0.5 + 0.1*float64(i%7))
	}
	g, err := ops.FromFloat32(ctx, "g", ops.F32, extremeInputs, n)
	must(t, err)
	defer g.Buf.Destroy()
	u, err := ops.FromFloat32(ctx, "u", ops.F32, up, n)
	must(t, err)
	defer u.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, n)
	must(t, err)
	defer d.Buf.Destroy()
	check := func(name string, want []float64) {
		t.Helper()
		got, err := d.Read()
		must(t, err)
		for i, v := range got {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Errorf("%s(%g) = %g, want finite %g", name, extremeInputs[i], v, want[i])
			}
		}
		if err := gputest.Compare(got, want, gputest.Tol{RelL2: 1e-5, Atol: 1e-5, Rtol: 1e-5}); err != nil {
			t.Errorf("%s extremes: %v", name, err)
		}
	}
	for _, act := range allActs {
		if act == ops.ActSiLU {
			continue // TestSiluMulExtremes
		}
		gputest.Poison(t, d)
		runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.GatedAct(enc, d, g, u, act) })
		want := make([]float64, n)
		for i := range want {
			want[i] = actRef[act](float64(extremeInputs[i]), float64(up[i]))
		}
		check(act.String(), want)
	}
	for _, c := range []float32{30, 50, 1} {
		gputest.Poison(t, d)
		runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.SoftCap(enc, d, g, c) })
		want := make([]float64, n)
		ref.SoftCap(want, gputest.F64(extremeInputs), float64(c))
		check(fmt.Sprintf("softcap%g", c), want)
	}
}

// TestSoftCap: sizes 1, 57, 1001 and 65537, logits of scale 60 against caps
// 30 (gemma2's final cap) and 50 (its attention cap), odd offsets, a
// poisoned output and in place. Tolerance: relative 1e-5 elementwise plus
// 1e-5 absolute (the scale by 1/cap, tanh_stable's few ulp, the scale by
// cap).
func TestSoftCap(t *testing.T) {
	ctx := gputest.Ctx(t)
	tol := gputest.Tol{RelL2: 1e-5, Atol: 1e-5, Rtol: 1e-5}
	for si, n := range []int{1, 57, 1001, 65537} {
		for _, c := range []float32{30, 50} {
			for _, inPlace := range []bool{false, true} {
				t.Run(fmt.Sprintf("%d/cap%g/inplace=%v", n, c, inPlace), func(t *testing.T) {
					seed := int64(3200 + si)
					rng := rand.New(rand.NewSource(seed))
					xv := gputest.Rand(rng, n, 60)
					x := paddedF32(t, ctx, "x", rng, xv, 3, n)
					d := x
					if !inPlace {
						d = paddedF32(t, ctx, "d", rng, make([]float32, n), 2, n)
						gputest.Poison(t, d)
					}
					runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.SoftCap(enc, d, x, c) })
					got, err := d.Read()
					must(t, err)
					want := make([]float64, n)
					ref.SoftCap(want, gputest.F64(xv), float64(c))
					gputest.Check(t, "softcap", seed, got, want, tol)
				})
			}
		}
	}
}

func TestActivationRejectsBadInput(t *testing.T) {
	ctx := gputest.Ctx(t)
	mk := func(n int) ops.Tensor {
		x, err := ops.New(ctx, "x", ops.F32, n)
		must(t, err)
		t.Cleanup(x.Buf.Destroy)
		return x
	}
	a, b := mk(8), mk(7)
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	for name, err := range map[string]error{
		"unknown act":   ops.GatedAct(enc, a, a, a, ops.Activation(9)),
		"act lengths":   ops.GatedAct(enc, a, a, b, ops.ActGELU),
		"softcap zero":  ops.SoftCap(enc, a, a, 0),
		"softcap inf":   ops.SoftCap(enc, a, a, float32(math.Inf(1))),
		"softcap nan":   ops.SoftCap(enc, a, a, float32(math.NaN())),
		"softcap len":   ops.SoftCap(enc, a, b, 30),
		"act with pair": ops.MatVecFused(enc, mk(16), mk(8).View(0, 1, 8), ops.MatVecOpts{Act: ops.ActGELU}, mk(16).View(0, 1, 16)),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
