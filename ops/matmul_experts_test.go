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

// TestMatMulExperts routes random tokens and multiplies each slot by its
// expert for every type MatMulQuant takes, in the gate/up form (x a token's
// row shared by its K slots) and the down form (x the slot's own row, with a
// bias), into poisoned outputs, with enough slots per expert for several
// slot tiles. Against the float64 product over the same decoded weights
// within 1e-5 relative L2 and 1e-5·Σ|w·x| per value (as TestMatVecExperts);
// and without a bias, bit for bit MatMulQuant of the slot's x row by its
// expert's matrix (the same fma chain), whatever the other slots.
func TestMatMulExperts(t *testing.T) {
	ctx := gputest.Ctx(t)
	types := append(append([]ops.DType{}, quantTypes...), ops.BF16)
	for ti, dt := range types {
		k := 256
		switch {
		case dt == ops.BF16:
			k = 57
		case dt.BlockSize() == 32:
			k = 96
		}
		for _, down := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/k%d/down=%v", dt, k, down), func(t *testing.T) {
				seed := int64(5700 + 10*ti)
				if down {
					seed++
				}
				rng := rand.New(rand.NewSource(seed))
				experts, n, rows, used := 6, 37, 75, 2
				raw, wf := expertWeights(t, rng, dt, experts*n*k)
				w, err := ops.FromBytes(ctx, "w", dt, raw, experts, n, k)
				must(t, err)
				defer w.Buf.Destroy()
				ids, _, _, route := routeOnGPU(t, ctx, rng, gputest.Rand(rng, rows*experts, 3), rows, experts, ops.RouteOpts{K: used})
				slots := rows * used
				xPer, xRows := used, rows
				if down {
					xPer, xRows = 1, slots
				}
				xv := gputest.Rand(rng, xRows*k, 1)
				x := paddedF32(t, ctx, "x", rng, xv, 7, xRows, k)
				var bias *ops.Tensor
				var bv []float32
				if down {
					bv = gputest.Rand(rng, experts*n, 1)
					b := paddedF32(t, ctx, "b", rng, bv, 2, experts, n)
					bias = &b
				}
				d := paddedF32(t, ctx, "d", rng, make([]float32, slots*n), 5, slots, n)
				gputest.Poison(t, d)
				// Each expert's matrix times every x row, densely, for the bits.
				dense, err := ops.New(ctx, "dense", ops.F32, experts*xRows, n)
				must(t, err)
				defer dense.Buf.Destroy()
				runOp(t, ctx, func(enc *gpu.Encoder) error {
					if err := ops.MatMulExperts(enc, d, w, x, route, bias, xPer); err != nil {
						return err
					}
					for e := 0; e < experts; e++ {
						if err := ops.MatMulQuant(enc, dense.View(e*xRows*n, xRows, n), x, w.View(e*n*k, n, k)); err != nil {
							return err
						}
					}
					return nil
				})
				got, err := d.Read()
				must(t, err)
				dv, err := dense.Read()
				must(t, err)
				want := make([]float64, slots*n)
				mag := make([]float64, slots*n)
				var alone []float32
				for s := 0; s < slots; s++ {
					e := int(ids[s])
					xr := xv[(s/xPer)*k : (s/xPer+1)*k]
					alone = append(alone, dv[(e*xRows+s/xPer)*n:(e*xRows+s/xPer+1)*n]...)
					for r := 0; r < n; r++ {
						wr := wf[(e*n+r)*k : (e*n+r+1)*k]
						sum, a := 0.0, 0.0
						for i := range wr {
							p := float64(wr[i]) * float64(xr[i])
							sum += p
							a += math.Abs(p)
						}
						if bias != nil {
							sum += float64(bv[e*n+r])
							a += math.Abs(float64(bv[e*n+r]))
						}
						want[s*n+r], mag[s*n+r] = sum, a
					}
				}
				checkMatVec(t, "matmul experts", seed, got, want, mag)
				if bias == nil {
					checkBits(t, "matmul experts vs MatMulQuant of each slot", seed, got, alone)
				}
			})
		}
	}
}

func TestMatMulExpertsRejectsBadShapes(t *testing.T) {
	ctx := gputest.Ctx(t)
	w, _ := ops.New(ctx, "w", ops.Q4_0, 4, 8, 64)
	wf, _ := ops.New(ctx, "wf", ops.F32, 4, 8, 64)
	x, _ := ops.New(ctx, "x", ops.F32, 3, 64)
	r, _ := ops.New(ctx, "r", ops.U32, ops.RouteLen(4, 6))
	d, _ := ops.New(ctx, "d", ops.F32, 6, 8)
	b, _ := ops.New(ctx, "b", ops.F32, 4, 7)
	defer func() {
		for _, t := range []ops.Tensor{w, wf, x, r, d, b} {
			t.Buf.Destroy()
		}
	}()
	enc := newEncoder(t, ctx)
	defer enc.Release()
	cases := map[string]error{
		"f32 weight":  ops.MatMulExperts(enc, d, wf, x, r, nil, 2),
		"2-D weight":  ops.MatMulExperts(enc, d, w.View(0, 32, 64), x, r, nil, 2),
		"xPer 0":      ops.MatMulExperts(enc, d, w, x, r, nil, 0),
		"dst size":    ops.MatMulExperts(enc, d.View(0, 5, 8), w, x, r, nil, 2),
		"route size":  ops.MatMulExperts(enc, d, w, x, r.View(0, 10), nil, 2),
		"bias shape":  ops.MatMulExperts(enc, d, w, x, r, &b, 2),
		"dst aliases": ops.MatMulExperts(enc, x.View(0, 6, 8), w, x, r, nil, 2),
	}
	for name, err := range cases {
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// TestMatMulExpertsGated: the gated form (gate and up rows of each expert in
// one matrix, biases, the activation in the epilogue) gives bit for bit what
// two MatMulExperts and a GatedAct give, for each activation and a few
// stored types (the plain form is checked against float64 above), and on
// each of its tiles for Q4_K.
func TestMatMulExpertsGated(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ti, dt := range []ops.DType{ops.Q4_K, ops.MXFP4, ops.Q8_0, ops.BF16} {
		for ai, act := range allActs {
			t.Run(fmt.Sprintf("%s/%s", dt, act), func(t *testing.T) {
				seed := int64(5800 + 10*ti + ai)
				rng := rand.New(rand.NewSource(seed))
				experts, n, rows, used := 5, 37, 45, 2
				k := 256
				if dt == ops.BF16 {
					k = 57
				}
				gRaw, _ := expertWeights(t, rng, dt, experts*n*k)
				uRaw, _ := expertWeights(t, rng, dt, experts*n*k)
				per := len(gRaw) / experts
				var joined []byte
				for e := 0; e < experts; e++ {
					joined = append(append(joined, gRaw[e*per:(e+1)*per]...), uRaw[e*per:(e+1)*per]...)
				}
				up := func(label string, raw []byte, shape ...int) ops.Tensor {
					w, err := ops.FromBytes(ctx, label, dt, raw, shape...)
					must(t, err)
					t.Cleanup(w.Buf.Destroy)
					return w
				}
				wg, wu, wj := up("g", gRaw, experts, n, k), up("u", uRaw, experts, n, k), up("gu", joined, experts, 2*n, k)
				bg, bu := gputest.Rand(rng, experts*n, 1), gputest.Rand(rng, experts*n, 1)
				var bj []float32
				for e := 0; e < experts; e++ {
					bj = append(append(bj, bg[e*n:(e+1)*n]...), bu[e*n:(e+1)*n]...)
				}
				bgT, buT := paddedF32(t, ctx, "bg", rng, bg, 1, experts, n), paddedF32(t, ctx, "bu", rng, bu, 1, experts, n)
				bjT := paddedF32(t, ctx, "bj", rng, bj, 3, experts, 2*n)
				_, _, _, route := routeOnGPU(t, ctx, rng, gputest.Rand(rng, rows*experts, 3), rows, experts, ops.RouteOpts{K: used})
				x := paddedF32(t, ctx, "x", rng, gputest.Rand(rng, rows*k, 1), 0, rows, k)
				slots := rows * used
				g := paddedF32(t, ctx, "gate", rng, make([]float32, slots*n), 0, slots, n)
				u := paddedF32(t, ctx, "up", rng, make([]float32, slots*n), 0, slots, n)
				d := paddedF32(t, ctx, "d", rng, make([]float32, slots*n), 2, slots, n)
				gputest.Poison(t, d)
				runOp(t, ctx, func(enc *gpu.Encoder) error {
					if err := ops.MatMulExperts(enc, g, wg, x, route, &bgT, used); err != nil {
						return err
					}
					if err := ops.MatMulExperts(enc, u, wu, x, route, &buT, used); err != nil {
						return err
					}
					if err := ops.GatedAct(enc, g, g, u, act); err != nil {
						return err
					}
					return ops.MatMulExpertsGated(enc, d, wj, x, route, &bjT, used, act)
				})
				want, err := g.Read()
				must(t, err)
				got, err := d.Read()
				must(t, err)
				checkBits(t, "gated vs separate", seed, got, want)
				if dt != ops.Q4_K {
					return
				}
				for tile := 0; tile < ops.MatMulPairTiles; tile++ { // every tile of the gated form
					gputest.Poison(t, d)
					restore := ops.SetMatMulQuantTile(tile)
					runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.MatMulExpertsGated(enc, d, wj, x, route, &bjT, used, act) })
					restore()
					got, err := d.Read()
					must(t, err)
					checkBits(t, fmt.Sprintf("gated tile %d vs separate", tile), seed, got, want)
				}
			})
		}
	}
}
