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

// ropeScaledCase is a RoPE with freq factors and/or YaRN, shaped like the
// model that uses it.
type ropeScaledCase struct {
	name                   string
	tokens, heads, hd, rot int
	base                   float64
	factors                bool // random factors in [1, 8], llama3-like
	o                      ops.RoPEOpts
}

var ropeScaledCases = []ropeScaledCase{
	{name: "llama3_factors", tokens: 5, heads: 3, hd: 128, rot: 128, base: 500000, factors: true},
	{name: "longrope_factors_attn", tokens: 4, heads: 5, hd: 96, rot: 96, base: 10000, factors: true,
		o: ops.RoPEOpts{AttnFactor: 1.1902380714238083}},
	{name: "yarn_default_betas", tokens: 6, heads: 3, hd: 128, rot: 128, base: 1e6,
		o: ops.RoPEOpts{FreqScale: 0.25, ExtFactor: 1, OrigCtx: 4096}},
	{name: "yarn_partial_betas_attn_factors", tokens: 3, heads: 7, hd: 80, rot: 64, base: 10000, factors: true,
		o: ops.RoPEOpts{FreqScale: 0.125, ExtFactor: 0.5, AttnFactor: 0.9, BetaFast: 16, BetaSlow: 2, OrigCtx: 2048}},
	{name: "yarn_odd_pairs", tokens: 2, heads: 2, hd: 58, rot: 42, base: 10000,
		o: ops.RoPEOpts{FreqScale: 0.5, ExtFactor: 1, OrigCtx: 1024}},
}

// TestRoPEScaled checks FreqFactors, YaRN and AttnFactor in ops.RoPE
// against ggml's rope_yarn computed in float64 (ref.YaRN), at positions up
// to 20000 (past YaRN's OrigCtx) including 0, in both layouts, through a
// positions tensor, with a poisoned output. Tolerance per rotated element:
//
//	|got - want| <= 1e-5 + 1e-4|want| + mscale·|pair|·(2^-20·theta + 2e-6)
//
// theta·2^-20 covers the f32 angle: the tables' roundings (Angle's 2^-22),
// YaRN's f32 ramp mix and the factor division (WGSL allows 2.5 ulp); 2e-6
// is f32 sin/cos after reduction. Against the host's AngleWithFactor (the
// kernel's f32 angle) the slack is 2^-21·theta. The rotated pair's norm is
// mscale times the input's within 1e-6; position 0 gives x·mscale bit for
// bit and dims past NRot are copied.
func TestRoPEScaled(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ci, c := range ropeScaledCases {
		for _, mode := range []ops.RoPEMode{ops.RoPENormal, ops.RoPENeox} {
			t.Run(fmt.Sprintf("%s/%s", c.name, mode), func(t *testing.T) {
				seed := int64(5100 + 10*ci + int(mode))
				rng := rand.New(rand.NewSource(seed))
				n := c.tokens * c.heads * c.hd
				xv := gputest.Rand(rng, n, 2)
				x := paddedF32(t, ctx, "x", rng, xv, 3, c.tokens, c.heads, c.hd)
				d := paddedF32(t, ctx, "d", rng, make([]float32, n), 1, c.tokens, c.heads, c.hd)
				gputest.Poison(t, d)
				pos := make([]uint32, c.tokens)
				for i := range pos {
					pos[i] = uint32(rng.Intn(20000))
				}
				pos[0] = 0
				pt, err := ops.FromUint32(ctx, "pos", pos, len(pos))
				must(t, err)
				defer pt.Buf.Destroy()
				o := c.o
				o.Mode, o.NRot, o.Base, o.Positions = mode, c.rot, c.base, &pt
				ff := make([]float32, c.rot/2)
				for i := range ff {
					ff[i] = 1
				}
				if c.factors {
					for i := range ff {
						ff[i] = float32(1 + 7*rng.Float64())
					}
					ft := paddedF32(t, ctx, "ff", rng, ff, 2, len(ff))
					o.FreqFactors = &ft
				}
				runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.RoPE(enc, d, x, o) })
				got, err := d.Read()
				must(t, err)
				checkScaledRoPE(t, seed, got, xv, pos, ff, c, o)
			})
		}
	}
}

// yarnRef is the float64 ggml model of o.
func yarnRef(o ops.RoPEOpts) ref.YaRN {
	y := ref.YaRN{FreqScale: o.FreqScale, ExtFactor: o.ExtFactor, AttnFactor: o.AttnFactor,
		BetaFast: o.BetaFast, BetaSlow: o.BetaSlow, OrigCtx: o.OrigCtx}
	if y.FreqScale == 0 {
		y.FreqScale = 1
	}
	if y.AttnFactor == 0 {
		y.AttnFactor = 1
	}
	if y.BetaFast == 0 {
		y.BetaFast = 32
	}
	if y.BetaSlow == 0 {
		y.BetaSlow = 1
	}
	return y
}

func checkScaledRoPE(t *testing.T, seed int64, got, xv []float32, pos []uint32, ff []float32, c ropeScaledCase, o ops.RoPEOpts) {
	t.Helper()
	y := yarnRef(o)
	ms := y.MScale()
	if d := math.Abs(float64(o.MScale()) - ms); d > 1e-6*ms {
		t.Fatalf("MScale %v, ggml's %v", o.MScale(), ms)
	}
	neox := o.Mode == ops.RoPENeox
	x64 := gputest.F64(xv)
	ideal := make([]float64, len(xv))
	idealAngle := func(tok, i int) float64 { return y.Angle(float64(pos[tok]), i, c.rot, c.base, float64(ff[i])) }
	ref.RoPEScaled(ideal, x64, c.tokens, c.heads, c.hd, c.rot, neox, idealAngle, ms)
	kernel := make([]float64, len(xv))
	ref.RoPEScaled(kernel, x64, c.tokens, c.heads, c.hd, c.rot, neox,
		func(tok, i int) float64 { return float64(o.AngleWithFactor(pos[tok], i, ff[i])) }, float64(o.MScale()))
	bad := 0
	fail := func(format string, a ...any) {
		bad++
		if bad < 6 {
			t.Errorf("seed %d: "+format, append([]any{seed}, a...)...)
		}
	}
	worstIdeal, worstKernel := 0.0, 0.0
	for tok := 0; tok < c.tokens; tok++ {
		for h := 0; h < c.heads; h++ {
			base := (tok*c.heads + h) * c.hd
			for e := c.rot; e < c.hd; e++ {
				if got[base+e] != xv[base+e] {
					fail("token %d head %d dim %d past NRot: %v, want the input %v", tok, h, e, got[base+e], xv[base+e])
				}
			}
			for i := 0; i < c.rot/2; i++ {
				i0, i1 := base+2*i, base+2*i+1
				if neox {
					i0, i1 = base+i, base+i+c.rot/2
				}
				in := math.Hypot(x64[i0], x64[i1])
				out := math.Hypot(float64(got[i0]), float64(got[i1]))
				if math.Abs(out-ms*in) > 1e-6*ms*in {
					fail("token %d pair %d: norm %.9g, want mscale·%.9g = %.9g", tok, i, out, in, ms*in)
				}
				theta := math.Abs(idealAngle(tok, i))
				for _, k := range []int{i0, i1} {
					if pos[tok] == 0 && got[k] != float32(xv[k]*o.MScale()) {
						fail("token %d at position 0, element %d: %v, want x·mscale %v", tok, k-base, got[k], float32(xv[k]*o.MScale()))
					}
					dI, dK := math.Abs(float64(got[k])-ideal[k]), math.Abs(float64(got[k])-kernel[k])
					worstIdeal, worstKernel = max(worstIdeal, dI/(ms*in)), max(worstKernel, dK/(ms*in))
					if lim := 1e-5 + 1e-4*math.Abs(ideal[k]) + ms*in*(math.Ldexp(theta, -20)+2e-6); dI > lim {
						fail("token %d (pos %d) head %d pair %d: got %.9g, ggml float64 %.9g (|diff| %.3g > %.3g)", tok, pos[tok], h, i, got[k], ideal[k], dI, lim)
					}
					if lim := 1e-5 + 1e-4*math.Abs(kernel[k]) + ms*in*(math.Ldexp(theta, -21)+2e-6); dK > lim {
						fail("token %d (pos %d) head %d pair %d: got %.9g, at the host's f32 angle %.9g (|diff| %.3g > %.3g)", tok, pos[tok], h, i, got[k], kernel[k], dK, lim)
					}
				}
			}
		}
	}
	t.Logf("worst |error|/|pair|: %.2g vs ggml's float64 angles, %.2g vs the host's f32 angles", worstIdeal, worstKernel)
	if bad > 0 {
		t.Errorf("seed %d: %d checks failed", seed, bad)
	}
}

// TestRoPEStoreScaled: RoPEStore with FreqFactors and YaRN rotates q in
// place and writes k into an f32 pool bit for bit as ops.RoPE rotates
// them (the same rotate_pair), so the scaled RoPE tests cover it.
func TestRoPEStoreScaled(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ci, c := range ropeScaledCases {
		for _, mode := range []ops.RoPEMode{ops.RoPENormal, ops.RoPENeox} {
			t.Run(fmt.Sprintf("%s/%s", c.name, mode), func(t *testing.T) {
				if c.hd%2 != 0 {
					t.Skip("RoPEStore needs an even head size")
				}
				seed := int64(5300 + 10*ci + int(mode))
				rng := rand.New(rand.NewSource(seed))
				nTok, kvh := c.tokens, 1+c.heads/2
				qn, kn := nTok*c.heads*c.hd, nTok*kvh*c.hd
				all := gputest.Rand(rng, qn+2*kn, 1)
				buf, err := ops.FromFloat32(ctx, "qkv", ops.F32, all, len(all))
				must(t, err)
				defer buf.Buf.Destroy()
				q, k, v := buf.View(0, nTok, c.heads, c.hd), buf.View(qn, nTok, kvh, c.hd), buf.View(qn+kn, nTok, kvh, c.hd)
				row := kvh * c.hd
				kp, err := ops.New(ctx, "kpool", ops.F32, nTok, row)
				must(t, err)
				defer kp.Buf.Destroy()
				vp, err := ops.New(ctx, "vpool", ops.F32, nTok, row)
				must(t, err)
				defer vp.Buf.Destroy()
				slots := make([]uint32, nTok)
				for i := range slots {
					slots[i] = uint32(nTok - 1 - i)
				}
				st, err := ops.FromUint32(ctx, "slots", slots, nTok)
				must(t, err)
				defer st.Buf.Destroy()
				o := c.o
				o.Mode, o.NRot, o.Base, o.PosOffset = mode, c.rot, c.base, 19000
				if c.factors {
					ff := make([]float32, c.rot/2)
					for i := range ff {
						ff[i] = float32(1 + 7*rng.Float64())
					}
					ft := paddedF32(t, ctx, "ff", rng, ff, 1, len(ff))
					o.FreqFactors = &ft
				}
				qRef, err := ops.FromFloat32(ctx, "qref", ops.F32, all[:qn], nTok, c.heads, c.hd)
				must(t, err)
				defer qRef.Buf.Destroy()
				kRef, err := ops.FromFloat32(ctx, "kref", ops.F32, all[qn:qn+kn], nTok, kvh, c.hd)
				must(t, err)
				defer kRef.Buf.Destroy()
				runOp(t, ctx, func(enc *gpu.Encoder) error {
					if err := ops.RoPEStore(enc, q, k, v, kp, vp, st, o); err != nil {
						return err
					}
					if err := ops.RoPE(enc, qRef, qRef, o); err != nil {
						return err
					}
					return ops.RoPE(enc, kRef, kRef, o)
				})
				gotQ, _ := q.Read()
				wantQ, _ := qRef.Read()
				gotK, _ := kp.Read()
				wantK, _ := kRef.Read()
				for i := range gotQ {
					if math.Float32bits(gotQ[i]) != math.Float32bits(wantQ[i]) {
						t.Fatalf("q[%d] = %v, ops.RoPE gives %v", i, gotQ[i], wantQ[i])
					}
				}
				for tok, s := range slots {
					for i := 0; i < row; i++ {
						if g, w := gotK[int(s)*row+i], wantK[tok*row+i]; math.Float32bits(g) != math.Float32bits(w) {
							t.Fatalf("k of token %d element %d = %v, ops.RoPE gives %v", tok, i, g, w)
						}
					}
				}
			})
		}
	}
}

// TestYaRNCorrDims: the f32 correction dims equal ggml's formula in
// float64 for the shapes YaRN models use.
func TestYaRNCorrDims(t *testing.T) {
	for _, c := range []struct {
		rot, ctx         int
		base, fast, slow float64
		wantLo, wantHi   float32
	}{
		{128, 4096, 10000, 32, 1, 20, 46},
		{128, 32768, 1e6, 32, 1, 0, 0},
		{64, 2048, 10000, 16, 2, 0, 0},
		{96, 4096, 500000, 32, 1, 0, 0},
	} {
		lo, hi := ops.YaRNCorrDims(c.rot, c.ctx, c.base, c.fast, c.slow)
		rlo, rhi := ref.YaRN{OrigCtx: c.ctx, BetaFast: c.fast, BetaSlow: c.slow}.CorrDims(c.rot, c.base)
		if float64(lo) != rlo || float64(hi) != rhi {
			t.Errorf("nRot %d ctx %d base %g betas %g/%g: (%v, %v), float64 formula (%v, %v)", c.rot, c.ctx, c.base, c.fast, c.slow, lo, hi, rlo, rhi)
		}
		if c.wantHi != 0 && (lo != c.wantLo || hi != c.wantHi) {
			t.Errorf("nRot %d ctx %d base %g: (%v, %v), want (%v, %v) by hand", c.rot, c.ctx, c.base, lo, hi, c.wantLo, c.wantHi)
		}
	}
}

func TestRoPEScaledRejectsBadOptions(t *testing.T) {
	ctx := gputest.Ctx(t)
	x, err := ops.New(ctx, "x", ops.F32, 2, 2, 64)
	must(t, err)
	defer x.Buf.Destroy()
	short, err := ops.New(ctx, "ff", ops.F32, 31)
	must(t, err)
	defer short.Buf.Destroy()
	inX := x.View(0, 32)
	enc := newEncoder(t, ctx)
	defer enc.Release()
	base := ops.RoPEOpts{NRot: 64, Base: 10000}
	with := func(f func(*ops.RoPEOpts)) ops.RoPEOpts { o := base; f(&o); return o }
	for name, o := range map[string]ops.RoPEOpts{
		"yarn without OrigCtx": with(func(o *ops.RoPEOpts) { o.ExtFactor = 1 }),
		"negative ExtFactor":   with(func(o *ops.RoPEOpts) { o.ExtFactor, o.OrigCtx = -1, 4096 }),
		"NaN AttnFactor":       with(func(o *ops.RoPEOpts) { o.AttnFactor = math.NaN() }),
		"Inf BetaFast":         with(func(o *ops.RoPEOpts) { o.BetaFast = math.Inf(1) }),
		"short factors":        with(func(o *ops.RoPEOpts) { o.FreqFactors = &short }),
		"factors in dst":       with(func(o *ops.RoPEOpts) { o.FreqFactors = &inX }),
	} {
		if err := ops.RoPE(enc, x, x, o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
