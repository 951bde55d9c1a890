package ops_test

import (
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// routeOnGPU runs MoERoute over host logits [rows, experts] and reads back
// ids, weights and the routing table (outputs poisoned first).
func routeOnGPU(t *testing.T, ctx *gpu.Context, rng *rand.Rand, logits []float32, rows, experts int, o ops.RouteOpts) (ids []uint32, w []float32, route []uint32, routeT ops.Tensor) {
	t.Helper()
	l := paddedF32(t, ctx, "logits", rng, logits, 3, rows, experts)
	idT, err := ops.New(ctx, "ids", ops.U32, rows*o.K+5)
	must(t, err)
	t.Cleanup(idT.Buf.Destroy)
	idv := idT.View(5, rows, o.K)
	wT := paddedF32(t, ctx, "w", rng, make([]float32, rows*o.K), 1, rows, o.K)
	gputest.Poison(t, wT)
	rT, err := ops.New(ctx, "route", ops.U32, ops.RouteLen(experts, rows*o.K))
	must(t, err)
	t.Cleanup(rT.Buf.Destroy)
	must(t, idT.WriteUint32(fill(rows*o.K+5, 0xdeadbeef)))
	must(t, rT.WriteUint32(fill(rT.Len(), 0xdeadbeef)))
	runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.MoERoute(enc, idv, wT, rT, l, o) })
	all, err := idT.ReadUint32()
	must(t, err)
	w, err = wT.Read()
	must(t, err)
	route, err = rT.ReadUint32()
	must(t, err)
	return all[5:], w, route, rT
}

func fill(n int, v uint32) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// checkRoute: the table lists each used expert once, ascending, and every
// slot exactly once under its expert.
func checkRoute(t *testing.T, route, ids []uint32, experts int) {
	t.Helper()
	used := map[uint32]bool{}
	for _, e := range ids {
		used[e] = true
	}
	n := int(route[0])
	if n != len(used) {
		t.Fatalf("route: %d experts used, want %d", n, len(used))
	}
	seen := make([]bool, len(ids))
	for u := 0; u < n; u++ {
		e := route[1+u]
		if u > 0 && e <= route[u] {
			t.Fatalf("route: used experts not ascending: %v", route[1:1+n])
		}
		lo, hi := route[1+experts+u], route[2+experts+u]
		for _, s := range route[2+2*experts+int(lo) : 2+2*experts+int(hi)] {
			if int(s) >= len(ids) || seen[s] || ids[s] != e {
				t.Fatalf("route: slot %d listed under expert %d (ids %v)", s, e, ids)
			}
			seen[s] = true
		}
	}
	for s, ok := range seen {
		if !ok {
			t.Fatalf("route: slot %d missing", s)
		}
	}
}

// TestMoERoute compares the router with ref.Route for each gating, with and
// without renormalisation and a scale, at odd sizes: the chosen experts
// exactly (random logits of scale 3 have no near-ties), the weights within
// gputest.TolF32 (a softmax's few f32 roundings and the GPU's exp error).
func TestMoERoute(t *testing.T) {
	ctx := gputest.Ctx(t)
	cases := []struct {
		rows, experts, k int
		o                ops.RouteOpts
	}{
		{1, 8, 2, ops.RouteOpts{Gating: ops.GateSoftmax, Normalize: true}},
		// One row: the top-k workgroup writes the route table itself.
		{1, 128, 8, ops.RouteOpts{Gating: ops.GateSoftmax, Normalize: true}},
		{1, 32, 4, ops.RouteOpts{Gating: ops.GateSoftmaxTopK}},
		{1, 300, 1, ops.RouteOpts{Gating: ops.GateSigmoid}},
		{7, 8, 2, ops.RouteOpts{Gating: ops.GateSoftmax}},
		{33, 128, 8, ops.RouteOpts{Gating: ops.GateSoftmax, Normalize: true}},
		{70, 60, 4, ops.RouteOpts{Gating: ops.GateSigmoid, Normalize: true, Scale: 2.5}},
		{13, 32, 4, ops.RouteOpts{Gating: ops.GateSoftmaxTopK}},
		{5, 3, 3, ops.RouteOpts{Gating: ops.GateSoftmaxTopK}},
		{3, 300, 1, ops.RouteOpts{Gating: ops.GateSigmoid}},
	}
	for ci, c := range cases {
		c.o.K = c.k
		t.Run(fmt.Sprintf("%s/%dx%d/top%d/norm=%v", c.o.Gating, c.rows, c.experts, c.k, c.o.Normalize), func(t *testing.T) {
			seed := int64(4100 + ci)
			rng := rand.New(rand.NewSource(seed))
			logits := gputest.Rand(rng, c.rows*c.experts, 3)
			ids, w, route, _ := routeOnGPU(t, ctx, rng, logits, c.rows, c.experts, c.o)
			scale := float64(c.o.Scale)
			if scale == 0 {
				scale = 1
			}
			want := make([]float64, 0, c.rows*c.k)
			for r := 0; r < c.rows; r++ {
				wi, ww := ref.Route(gputest.F64(logits[r*c.experts:(r+1)*c.experts]), c.k, int(c.o.Gating), c.o.Normalize, scale)
				for j := range wi {
					if int(ids[r*c.k+j]) != wi[j] {
						t.Fatalf("row %d pick %d: expert %d, want %d", r, j, ids[r*c.k+j], wi[j])
					}
				}
				want = append(want, ww...)
			}
			gputest.Check(t, "weights", seed, w, want, gputest.TolF32)
			checkRoute(t, route, ids, c.experts)
		})
	}
}

// expertWeights returns stacked random expert matrices [e, n, k] of dt as
// stored bytes and their decoded values.
func expertWeights(t *testing.T, rng *rand.Rand, dt ops.DType, count int) ([]byte, []float32) {
	t.Helper()
	if dt == ops.F32 {
		v := gputest.Rand(rng, count, 1)
		return ops.Encode(ops.F32, v), v
	}
	raw := randomBlocks(rng, dt, count)
	return raw, hostDecode(t, dt, raw, count)
}

// TestMatVecExperts routes random tokens and multiplies each slot by its
// expert for every stored type, in the gate/up form (x a token's row shared
// by its K slots) and the down form (x the slot's own row), with and
// without biases, into poisoned outputs; against the float64 product over
// the same decoded weights within 1e-5 relative L2 and 1e-5·Σ|w·x| per
// value (f32 accumulation in a fixed order, as TestMatVecQuant).
func TestMatVecExperts(t *testing.T) {
	ctx := gputest.Ctx(t)
	types := append(append([]ops.DType{}, quantTypes...), ops.F32, ops.F16, ops.BF16)
	for ti, dt := range types {
		k := 256
		switch {
		case dt == ops.F32 || dt == ops.F16 || dt == ops.BF16:
			k = 57
		case dt.BlockSize() == 32:
			k = 96
		}
		for _, down := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/k%d/down=%v", dt, k, down), func(t *testing.T) {
				seed := int64(4200 + 10*ti)
				if down {
					seed++
				}
				rng := rand.New(rand.NewSource(seed))
				experts, n, rows, used := 6, 37, 5, 2
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
				runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.MatVecExperts(enc, d, w, x, route, bias, xPer) })
				got, err := d.Read()
				must(t, err)
				want := make([]float64, slots*n)
				mag := make([]float64, slots*n)
				for s := 0; s < slots; s++ {
					e := int(ids[s])
					xr := xv[(s/xPer)*k : (s/xPer+1)*k]
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
				checkMatVec(t, "experts", seed, got, want, mag)
			})
		}
	}
}

// TestMatVecExpertsBatchInvariant: a token's expert outputs are bit for bit
// the same computed alone and in a batch of 9 tokens that share its experts.
func TestMatVecExpertsBatchInvariant(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ti, dt := range []ops.DType{ops.Q4_K, ops.MXFP4, ops.F32} {
		t.Run(dt.String(), func(t *testing.T) {
			seed := int64(4300 + ti)
			rng := rand.New(rand.NewSource(seed))
			experts, n, k, used, rows := 4, 33, 256, 2, 9
			raw, _ := expertWeights(t, rng, dt, experts*n*k)
			w, err := ops.FromBytes(ctx, "w", dt, raw, experts, n, k)
			must(t, err)
			defer w.Buf.Destroy()
			logits := gputest.Rand(rng, rows*experts, 3)
			xv := gputest.Rand(rng, rows*k, 1)
			run := func(lg, xs []float32, rows int) []float32 {
				_, _, _, route := routeOnGPU(t, ctx, rng, lg, rows, experts, ops.RouteOpts{K: used})
				x := paddedF32(t, ctx, "x", rng, xs, 0, rows, k)
				d := paddedF32(t, ctx, "d", rng, make([]float32, rows*used*n), 0, rows*used, n)
				runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.MatVecExperts(enc, d, w, x, route, nil, used) })
				got, err := d.Read()
				must(t, err)
				return got
			}
			batch := run(logits, xv, rows)
			for r := 0; r < rows; r += 4 {
				alone := run(logits[r*experts:(r+1)*experts], xv[r*k:(r+1)*k], 1)
				for i, v := range alone {
					if math.Float32bits(v) != math.Float32bits(batch[r*used*n+i]) {
						t.Fatalf("token %d value %d: alone %v, in the batch %v", r, i, v, batch[r*used*n+i])
					}
				}
			}
		})
	}
}

// TestMoECombine: x += Σ_j w_j·y_j, with a shared expert plain and gated by
// a sigmoid, at odd sizes, against float64 within gputest.TolF32.
func TestMoECombine(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ci, c := range []struct {
		n, dim, k     int
		shared, gated bool
	}{{1, 64, 2, false, false}, {5, 67, 3, false, false}, {7, 33, 2, true, false}, {9, 130, 8, true, true}} {
		t.Run(fmt.Sprintf("%dx%d/k%d/shared=%v/gated=%v", c.n, c.dim, c.k, c.shared, c.gated), func(t *testing.T) {
			seed := int64(4400 + ci)
			rng := rand.New(rand.NewSource(seed))
			xv, yv, wv := gputest.Rand(rng, c.n*c.dim, 1), gputest.Rand(rng, c.n*c.k*c.dim, 1), gputest.Rand(rng, c.n*c.k, 1)
			x := paddedF32(t, ctx, "x", rng, xv, 3, c.n, c.dim)
			y := paddedF32(t, ctx, "y", rng, yv, 1, c.n*c.k, c.dim)
			w := paddedF32(t, ctx, "w", rng, wv, 2, c.n, c.k)
			var sh, gate *ops.Tensor
			var sv, gv []float32
			if c.shared {
				sv = gputest.Rand(rng, c.n*c.dim, 1)
				s := paddedF32(t, ctx, "sh", rng, sv, 5, c.n, c.dim)
				sh = &s
			}
			if c.gated {
				gv = gputest.Rand(rng, c.n, 4)
				g := paddedF32(t, ctx, "g", rng, gv, 1, c.n)
				gate = &g
			}
			runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.MoECombine(enc, x, y, w, sh, gate) })
			got, err := x.Read()
			must(t, err)
			want := make([]float64, c.n*c.dim)
			for tk := 0; tk < c.n; tk++ {
				for d := 0; d < c.dim; d++ {
					acc := 0.0
					for j := 0; j < c.k; j++ {
						acc += float64(wv[tk*c.k+j]) * float64(yv[(tk*c.k+j)*c.dim+d])
					}
					if c.shared {
						s := float64(sv[tk*c.dim+d])
						if c.gated {
							s *= ref.Sigmoid(float64(gv[tk]))
						}
						acc += s
					}
					want[tk*c.dim+d] = float64(xv[tk*c.dim+d]) + acc
				}
			}
			gputest.Check(t, "combine", seed, got, want, gputest.TolF32)
		})
	}
}

// TestMoERouteRefusesBadShapes: wrong sizes, too many experts per token.
func TestMoERouteRefusesBadShapes(t *testing.T) {
	ctx := gputest.Ctx(t)
	rng := rand.New(rand.NewSource(1))
	l := paddedF32(t, ctx, "l", rng, gputest.Rand(rng, 16, 1), 0, 2, 8)
	ids, _ := ops.New(ctx, "ids", ops.U32, 4)
	w := paddedF32(t, ctx, "w", rng, make([]float32, 4), 0, 2, 2)
	r, _ := ops.New(ctx, "r", ops.U32, ops.RouteLen(8, 4))
	defer ids.Buf.Destroy()
	defer r.Buf.Destroy()
	enc := newEncoder(t, ctx)
	defer enc.Release()
	for _, c := range []struct {
		o    ops.RouteOpts
		want string
	}{{ops.RouteOpts{K: 9}, "experts per token"}, {ops.RouteOpts{K: 3}, "ids"}, {ops.RouteOpts{K: 2, Gating: 7}, "gating"}} {
		err := ops.MoERoute(enc, ids, w, r, l, c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("K %d: error %v, want one naming %q", c.o.K, err, c.want)
		}
	}
}

// TestMatVecExpertsGated: the gated form (gate and up rows of each expert
// in one matrix, biases, the activation in the epilogue) gives bit for bit
// what two MatVecExperts and a GatedAct give, for each activation and a
// few stored types (the plain form is checked against float64 above).
func TestMatVecExpertsGated(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ti, dt := range []ops.DType{ops.Q4_K, ops.MXFP4, ops.Q8_0, ops.F32, ops.BF16} {
		for ai, act := range allActs {
			t.Run(fmt.Sprintf("%s/%s", dt, act), func(t *testing.T) {
				seed := int64(4500 + 10*ti + ai)
				rng := rand.New(rand.NewSource(seed))
				experts, n, rows, used := 5, 19, 4, 2
				k := 256
				if dt == ops.F32 || dt == ops.BF16 {
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
					if err := ops.MatVecExperts(enc, g, wg, x, route, &bgT, used); err != nil {
						return err
					}
					if err := ops.MatVecExperts(enc, u, wu, x, route, &buT, used); err != nil {
						return err
					}
					if err := ops.GatedAct(enc, g, g, u, act); err != nil {
						return err
					}
					return ops.MatVecExpertsGated(enc, d, wj, x, route, &bjT, used, act)
				})
				want, err := g.Read()
				must(t, err)
				got, err := d.Read()
				must(t, err)
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("value %d: gated %v, separate %v", i, got[i], want[i])
					}
				}
			})
		}
	}
}
