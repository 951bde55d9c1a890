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

// expertCase is a MatVecExperts test: rows tokens routed to used of
// experts experts, matrices [experts, n, k] of dt, x padded by xPad floats
// (a multiple of 4 reads x as vec4).
type expertCase struct {
	dt                        ops.DType
	experts, n, k, rows, used int
	down                      bool
	xPad                      int
}

func (c expertCase) String() string {
	return fmt.Sprintf("%s/e%d/%dx%d/t%d/top%d/down=%v/pad%d", c.dt, c.experts, c.n, c.k, c.rows, c.used, c.down, c.xPad)
}

// runExperts multiplies the case's slots by their experts on the GPU into
// a poisoned output, and returns it with the float64 product over the same
// decoded weights and Σ|w·x| per value.
func runExperts(t *testing.T, ctx *gpu.Context, c expertCase, seed int64) (got []float32, want, mag []float64) {
	rng := rand.New(rand.NewSource(seed))
	experts, n, k, rows, used := c.experts, c.n, c.k, c.rows, c.used
	raw, wf := expertWeights(t, rng, c.dt, experts*n*k)
	w, err := ops.FromBytes(ctx, "w", c.dt, raw, experts, n, k)
	must(t, err)
	t.Cleanup(w.Buf.Destroy)
	ids, _, _, route := routeOnGPU(t, ctx, rng, gputest.Rand(rng, rows*experts, 3), rows, experts, ops.RouteOpts{K: used})
	slots := rows * used
	xPer, xRows := used, rows
	if c.down {
		xPer, xRows = 1, slots
	}
	xv := gputest.Rand(rng, xRows*k, 1)
	x := paddedF32(t, ctx, "x", rng, xv, c.xPad, xRows, k)
	var bias *ops.Tensor
	var bv []float32
	if c.down {
		bv = gputest.Rand(rng, experts*n, 1)
		b := paddedF32(t, ctx, "b", rng, bv, 2, experts, n)
		bias = &b
	}
	d := paddedF32(t, ctx, "d", rng, make([]float32, slots*n), 5, slots, n)
	gputest.Poison(t, d)
	runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.MatVecExperts(enc, d, w, x, route, bias, xPer) })
	got, err = d.Read()
	must(t, err)
	want, mag = make([]float64, slots*n), make([]float64, slots*n)
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
	return got, want, mag
}

// TestMatVecExperts routes random tokens and multiplies each slot by its
// expert for every stored type, in the gate/up form (x a token's row shared
// by its K slots) and the down form (x the slot's own row, with biases),
// into poisoned outputs; against the float64 product over the same decoded
// weights within 1e-5 relative L2 and 1e-5·Σ|w·x| per value (f32
// accumulation in a fixed order, as TestMatVecQuant). The first cases give
// an expert one or two slots; the second set a dozen or more (tiles of 8
// and a remainder), at row lengths that take 8, 16 and 32 lanes per row
// and x read as vec4; the last one two rows per lane.
func TestMatVecExperts(t *testing.T) {
	ctx := gputest.Ctx(t)
	var cases []expertCase
	for _, dt := range append(append([]ops.DType{}, quantTypes...), ops.F32, ops.F16, ops.BF16) {
		k := 256
		switch {
		case dt == ops.F32 || dt == ops.F16 || dt == ops.BF16:
			k = 57
		case dt.BlockSize() == 32:
			k = 96
		}
		for _, down := range []bool{false, true} {
			cases = append(cases, expertCase{dt: dt, experts: 6, n: 37, k: k, rows: 5, used: 2, down: down, xPad: 7})
		}
	}
	for _, c := range []expertCase{
		{dt: ops.Q4_K, n: 21, k: 1024}, // 32 pieces: 32 lanes per row
		{dt: ops.Q4_K, n: 9, k: 768},   // 24 pieces: 8 lanes
		{dt: ops.Q6_K, n: 19, k: 768},  // 12 pieces: 16 lanes
		{dt: ops.MXFP4, n: 11, k: 2880, down: true},
		{dt: ops.IQ4_XS, n: 13, k: 512, down: true},
		{dt: ops.Q8_0, n: 7, k: 1056},
		{dt: ops.F16, n: 17, k: 1001, down: true},
		{dt: ops.F32, n: 5, k: 260},
	} {
		c.experts, c.rows, c.used, c.xPad = 3, 19, 2, 4
		cases = append(cases, c)
	}
	// Over 8192 rows in all: two rows per lane.
	cases = append(cases, expertCase{dt: ops.Q8_0, experts: 3, n: 4099, k: 96, rows: 5, used: 2, down: true, xPad: 4})
	for ci, c := range cases {
		t.Run(c.String(), func(t *testing.T) {
			seed := int64(4200 + ci)
			got, want, mag := runExperts(t, ctx, c, seed)
			checkMatVec(t, "experts", seed, got, want, mag)
		})
	}
}

// expertTiling is a shape of the experts kernel (ops.SetExpertTiling).
type expertTiling struct {
	m           int
	stage, wide bool
}

// TestMatVecExpertsTiling: the tile of slots (1 to 8 at once), reading x
// staged or straight from memory and the wide shape (four rows a lane, 128
// lanes) change no bit, for each form and a spread of types, with many
// slots per expert.
func TestMatVecExpertsTiling(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ci, c := range []expertCase{
		{dt: ops.Q4_K, n: 21, k: 512, xPad: 4},
		{dt: ops.Q6_K, n: 9, k: 768, down: true, xPad: 4},
		{dt: ops.MXFP4, n: 13, k: 1088, xPad: 4},
		{dt: ops.Q5_0, n: 11, k: 96, down: true, xPad: 3},
		{dt: ops.BF16, n: 7, k: 57, xPad: 1},
		{dt: ops.Q4_0, n: 4101, k: 64, down: true, xPad: 4}, // two rows per lane for tiles of up to 4
	} {
		c.experts, c.rows, c.used = 3, 17, 2
		t.Run(c.String(), func(t *testing.T) {
			seed := int64(4600 + ci)
			var first []float32
			for _, tl := range []expertTiling{{8, true, false}, {1, true, false}, {2, true, false}, {3, true, false},
				{5, false, false}, {1, false, false}, {1, false, true}, {3, false, true}} {
				restore := ops.SetExpertTiling(tl.m, tl.stage, tl.wide)
				got, want, mag := runExperts(t, ctx, c, seed)
				restore()
				if first == nil {
					checkMatVec(t, "experts", seed, got, want, mag)
					first = got
					continue
				}
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(first[i]) {
						t.Fatalf("%+v: value %d is %v, with tiles of 8 staged %v", tl, i, got[i], first[i])
					}
				}
			}
		})
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
// few stored types, whatever its tile of slots and staging (the plain
// form is checked against float64 above).
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
				runOp(t, ctx, func(enc *gpu.Encoder) error {
					if err := ops.MatVecExperts(enc, g, wg, x, route, &bgT, used); err != nil {
						return err
					}
					if err := ops.MatVecExperts(enc, u, wu, x, route, &buT, used); err != nil {
						return err
					}
					return ops.GatedAct(enc, g, g, u, act)
				})
				want, err := g.Read()
				must(t, err)
				// The gated form with the default tile (2 slots), tiles of
				// 3 and of 1 with x read straight from memory, and the wide
				// shape.
				for _, tl := range []expertTiling{{8, true, false}, {3, true, false}, {1, false, false}, {1, false, true}} {
					restore := ops.SetExpertTiling(tl.m, tl.stage, tl.wide)
					gputest.Poison(t, d)
					runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.MatVecExpertsGated(enc, d, wj, x, route, &bjT, used, act) })
					restore()
					got, err := d.Read()
					must(t, err)
					for i := range want {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%+v: value %d: gated %v, separate %v", tl, i, got[i], want[i])
						}
					}
				}
			})
		}
	}
}

// TestMatVecExpertsSubgroups: where the device has subgroups, the experts
// kernel's subgroup reduction gives the same bits as its workgroup-memory
// tree for each of its lanes per row (8, 16 and 32: subgroups that hold a
// row's lanes, and narrower ones that leave the upper levels in workgroup
// memory), in tiles of several slots and alone.
func TestMatVecExpertsSubgroups(t *testing.T) {
	ctx := gputest.Ctx(t)
	if !ctx.Features.Subgroups {
		t.Skipf("%s (%s) has no subgroups (or not in aligned runs): no subgroup variant to test", ctx.Adapter.Name, ctx.Adapter.Impl)
	}
	t.Logf("subgroup sizes %d..%d", ctx.Features.SubgroupMinSize, ctx.Features.SubgroupMaxSize)
	for ci, c := range []expertCase{
		{dt: ops.Q4_K, n: 21, k: 1024, rows: 19, xPad: 4},   // 32 lanes per row
		{dt: ops.Q6_K, n: 19, k: 768, rows: 19, down: true}, // 16 lanes
		{dt: ops.Q4_K, n: 9, k: 768, rows: 19, xPad: 4},     // 8 lanes
		{dt: ops.F16, n: 17, k: 1001, rows: 1, down: true},  // one slot per expert
		{dt: ops.Q8_0, n: 4099, k: 96, rows: 5, down: true}, // two rows per lane
	} {
		c.experts, c.used = 3, 2
		t.Run(c.String(), func(t *testing.T) {
			seed := int64(4700 + ci)
			run := func(sg bool) ([]float32, []float64, []float64) {
				defer ops.SetMatVecSubgroups(sg)()
				return runExperts(t, ctx, c, seed)
			}
			sg, want, mag := run(true)
			plain, _, _ := run(false)
			checkBits(t, "experts: subgroups vs workgroup memory", seed, sg, plain)
			checkMatVec(t, "experts with subgroups", seed, sg, want, mag)
		})
	}
}
