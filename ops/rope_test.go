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

type ropeCase struct {
	tokens, heads, headDim, nRot int
	base, freqScale              float64
	posOffset                    uint32
	positions                    []uint32 // nil: posOffset + t
}

var ropeCases = []ropeCase{
	{tokens: 1, heads: 1, headDim: 2, nRot: 2, base: 10000, posOffset: 1},
	{tokens: 3, heads: 5, headDim: 64, nRot: 64, base: 10000},
	{tokens: 7, heads: 3, headDim: 128, nRot: 128, base: 10000, posOffset: 100},
	{tokens: 5, heads: 7, headDim: 80, nRot: 32, base: 10000, posOffset: 17},         // partial rotary
	{tokens: 2, heads: 3, headDim: 57, nRot: 24, base: 10000, posOffset: 5},          // odd head size
	{tokens: 4, heads: 2, headDim: 128, nRot: 128, base: 1e6, posOffset: 32764},      // up to 32767
	{tokens: 3, heads: 1, headDim: 256, nRot: 256, base: 1e6, freqScale: 0.25},       // pairs 16..127 use the hi table
	{tokens: 2, heads: 9, headDim: 96, nRot: 96, base: 500000, posOffset: 131070},    // long context
	{tokens: 9, heads: 5, headDim: 64, nRot: 64, base: 10000, positions: []uint32{}}, // random positions, filled below
	{tokens: 6, heads: 3, headDim: 128, nRot: 64, base: 1e6, positions: []uint32{32767, 0, 1, 32767, 4096, 9}},
}

// TestRoPE compares both layouts with float64 rotations in three ways:
//
//   - against the angles the kernel is specified to use (RoPEOpts.Angle,
//     the f32 angle bit for bit), with TolF32: what remains is the GPU's
//     sin/cos after exact reduction to [-π, π] and the f32 products;
//   - against the exact angles pos*freqScale*base^(-2i/nRot), per element
//     |got-want| <= 1e-5 + 1e-4|want| + |pair| * (2^-21*theta + 2e-6): the
//     f32 angle carries up to four roundings (relative 2^-22, so 8e-3 rad at
//     theta = 32767); this is what f32 trig at large angles allows;
//   - every rotated pair keeps its Euclidean norm within 1e-6 relative.
func TestRoPE(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ci, c := range ropeCases {
		for _, mode := range []ops.RoPEMode{ops.RoPENormal, ops.RoPENeox} {
			inPlace := ci%2 == 1
			name := fmt.Sprintf("%s/%dx%dx%d_rot%d_pos%d", mode, c.tokens, c.heads, c.headDim, c.nRot, c.posOffset)
			if c.positions != nil {
				name += "_tensor"
			}
			if inPlace {
				name += "_inplace"
			}
			t.Run(name, func(t *testing.T) {
				seed := int64(3000 + 10*ci + int(mode))
				rng := rand.New(rand.NewSource(seed))
				n := c.tokens * c.heads * c.headDim
				xv := gputest.Rand(rng, n, 2)
				x := paddedF32(t, ctx, "x", rng, xv, 3, c.tokens, c.heads, c.headDim)
				d := x
				if !inPlace {
					d = paddedF32(t, ctx, "d", rng, make([]float32, n), 1, c.tokens, c.heads, c.headDim)
					gputest.Poison(t, d)
				}
				o := ops.RoPEOpts{Mode: mode, NRot: c.nRot, Base: c.base, FreqScale: c.freqScale, PosOffset: c.posOffset}
				pos := make([]uint32, c.tokens)
				for i := range pos {
					pos[i] = c.posOffset + uint32(i)
				}
				if c.positions != nil {
					copy(pos, c.positions)
					if len(c.positions) == 0 {
						for i := range pos {
							pos[i] = uint32(rng.Intn(32768))
						}
						pos[0], pos[len(pos)-1] = 32767, 0
					}
					pt, err := ops.FromUint32(ctx, "pos", pos, len(pos))
					must(t, err)
					defer pt.Buf.Destroy()
					o.Positions = &pt
				}
				runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.RoPE(enc, d, x, o) })
				got, err := d.Read()
				must(t, err)

				x64 := gputest.F64(xv)
				neox := mode == ops.RoPENeox
				want := make([]float64, n)
				ref.RoPE(want, x64, c.tokens, c.heads, c.headDim, c.nRot, neox,
					func(tok, i int) float64 { return float64(o.Angle(pos[tok], i)) })
				gputest.Check(t, "rope vs kernel angles", seed, got, want, gputest.TolF32)

				fs := c.freqScale
				if fs == 0 {
					fs = 1
				}
				ideal := make([]float64, n)
				ref.RoPE(ideal, x64, c.tokens, c.heads, c.headDim, c.nRot, neox,
					func(tok, i int) float64 { return ref.RoPEAngle(float64(pos[tok]), i, c.nRot, c.base, fs) })
				checkRoPEPairs(t, seed, got, want, ideal, x64, pos, c, neox, func(tok, i int) float64 {
					return ref.RoPEAngle(float64(pos[tok]), i, c.nRot, c.base, fs)
				})
			})
		}
	}
}

// checkRoPEPairs checks the exact-angle tolerance and norm preservation of
// every rotated pair, and that pass-through dims are copied exactly; it
// logs the worst error relative to the pair's norm against both references
// (kernel: the specified f32 angles; ideal: the exact angles).
func checkRoPEPairs(t *testing.T, seed int64, got []float32, kernel, ideal, x []float64, pos []uint32, c ropeCase, neox bool, angle func(tok, i int) float64) {
	t.Helper()
	bad := 0
	worstKernel, worstIdeal, worstNorm := 0.0, 0.0, 0.0
	for tok := 0; tok < c.tokens; tok++ {
		for h := 0; h < c.heads; h++ {
			base := (tok*c.heads + h) * c.headDim
			for e := c.nRot; e < c.headDim; e++ {
				if float64(got[base+e]) != x[base+e] {
					t.Fatalf("seed %d: token %d head %d dim %d past nRot: got %g, want the input %g", seed, tok, h, e, got[base+e], x[base+e])
				}
			}
			for i := 0; i < c.nRot/2; i++ {
				i0, i1 := base+2*i, base+2*i+1
				if neox {
					i0, i1 = base+i, base+i+c.nRot/2
				}
				in := math.Hypot(x[i0], x[i1])
				out := math.Hypot(float64(got[i0]), float64(got[i1]))
				worstNorm = max(worstNorm, math.Abs(out-in)/in)
				for _, k := range []int{i0, i1} {
					worstKernel = max(worstKernel, math.Abs(float64(got[k])-kernel[k])/in)
					worstIdeal = max(worstIdeal, math.Abs(float64(got[k])-ideal[k])/in)
				}
				if math.Abs(out-in) > 1e-6*in {
					bad++
					if bad < 5 {
						t.Errorf("seed %d: token %d (pos %d) head %d pair %d: norm %.9g, input norm %.9g", seed, tok, pos[tok], h, i, out, in)
					}
				}
				slack := in * (math.Ldexp(angle(tok, i), -21) + 2e-6)
				for _, k := range []int{i0, i1} {
					if d := math.Abs(float64(got[k]) - ideal[k]); d > 1e-5+1e-4*math.Abs(ideal[k])+slack {
						bad++
						if bad < 5 {
							t.Errorf("seed %d: token %d (pos %d) head %d pair %d: got %.9g, exact-angle rotation %.9g (|diff| %.3g > %.3g)",
								seed, tok, pos[tok], h, i, got[k], ideal[k], d, 1e-5+1e-4*math.Abs(ideal[k])+slack)
						}
					}
				}
			}
		}
	}
	t.Logf("worst |error|/|pair|: %.2g vs kernel angles, %.2g vs exact angles; worst relative norm change %.2g", worstKernel, worstIdeal, worstNorm)
	if bad > 0 {
		t.Errorf("seed %d: %d pair checks failed", seed, bad)
	}
}

// TestRoPEPositionZeroIsIdentity: every token at position 0 (offset and
// tensor paths) gives back its input bit for bit.
func TestRoPEPositionZeroIsIdentity(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, mode := range []ops.RoPEMode{ops.RoPENormal, ops.RoPENeox} {
		for _, tensor := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s_tensor=%v", mode, tensor), func(t *testing.T) {
				rng := rand.New(rand.NewSource(31))
				tokens, heads, hd := 1, 5, 72
				if tensor {
					tokens = 4
				}
				xv := gputest.Rand(rng, tokens*heads*hd, 50)
				x := paddedF32(t, ctx, "x", rng, xv, 1, tokens, heads, hd)
				d := paddedF32(t, ctx, "d", rng, make([]float32, len(xv)), 2, tokens, heads, hd)
				gputest.Poison(t, d)
				o := ops.RoPEOpts{Mode: mode, NRot: 64, Base: 10000}
				if tensor {
					pt, err := ops.FromUint32(ctx, "pos", make([]uint32, tokens), tokens)
					must(t, err)
					defer pt.Buf.Destroy()
					o.Positions = &pt
				}
				runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.RoPE(enc, d, x, o) })
				got, err := d.Read()
				must(t, err)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(xv[i]) {
						t.Fatalf("element %d at position 0: got %g (bits %#x), want %g (bits %#x)", i, got[i], math.Float32bits(got[i]), xv[i], math.Float32bits(xv[i]))
					}
				}
			})
		}
	}
}

// TestRoPEAngle checks on the host that the specified f32 angle is within
// four f32 roundings of the exact one, for all pairs and many positions.
func TestRoPEAngle(t *testing.T) {
	for _, o := range []ops.RoPEOpts{
		{NRot: 128, Base: 10000},
		{NRot: 64, Base: 1e6, FreqScale: 0.125},
		{NRot: 96, Base: 500000},
		{NRot: 512, Base: 10000},
		{NRot: 2, Base: 10000},
	} {
		fs := o.FreqScale
		if fs == 0 {
			fs = 1
		}
		for _, pos := range []uint32{0, 1, 2, 3, 1000, 4095, 32767, 100003, 1 << 20, ops.MaxRoPEPosition - 1} {
			for i := 0; i < o.NRot/2; i++ {
				got := float64(o.Angle(pos, i))
				want := ref.RoPEAngle(float64(pos), i, o.NRot, o.Base, fs)
				if math.Abs(got-want) > math.Ldexp(want, -22) {
					t.Errorf("NRot %d base %g scale %g: angle(pos %d, pair %d) = %.9g, exact %.9g", o.NRot, o.Base, fs, pos, i, got, want)
				}
			}
		}
	}
}

func TestRoPERejectsBadInput(t *testing.T) {
	ctx := gputest.Ctx(t)
	mk := func(dt ops.DType, shape ...int) ops.Tensor {
		x, err := ops.New(ctx, "x", dt, shape...)
		must(t, err)
		t.Cleanup(x.Buf.Destroy)
		return x
	}
	x := mk(ops.F32, 3, 2, 8)
	pos3, pos2, posF := mk(ops.U32, 3), mk(ops.U32, 2), mk(ops.F32, 3)
	good := ops.RoPEOpts{NRot: 8, Base: 10000}
	with := func(f func(*ops.RoPEOpts)) ops.RoPEOpts { o := good; f(&o); return o }
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	if err := ops.RoPE(enc, x, x, good); err != nil {
		t.Fatalf("valid call rejected: %v", err)
	}
	cases := map[string]struct {
		dst, x ops.Tensor
		o      ops.RoPEOpts
	}{
		"odd nRot":          {x, x, with(func(o *ops.RoPEOpts) { o.NRot = 7 })},
		"nRot > headDim":    {x, x, with(func(o *ops.RoPEOpts) { o.NRot = 10 })},
		"nRot 0":            {x, x, with(func(o *ops.RoPEOpts) { o.NRot = 0 })},
		"base 0":            {x, x, with(func(o *ops.RoPEOpts) { o.Base = 0 })},
		"base NaN":          {x, x, with(func(o *ops.RoPEOpts) { o.Base = math.NaN() })},
		"negative scale":    {x, x, with(func(o *ops.RoPEOpts) { o.FreqScale = -1 })},
		"mode":              {x, x, with(func(o *ops.RoPEOpts) { o.Mode = 9 })},
		"positions length":  {x, x, with(func(o *ops.RoPEOpts) { o.Positions = &pos2 })},
		"positions dtype":   {x, x, with(func(o *ops.RoPEOpts) { o.Positions = &posF })},
		"offset and tensor": {x, x, with(func(o *ops.RoPEOpts) { o.Positions, o.PosOffset = &pos3, 5 })},
		"position > 2^24":   {x, x, with(func(o *ops.RoPEOpts) { o.PosOffset = ops.MaxRoPEPosition - 2 })},
		"2-D x":             {x.View(0, 6, 8), x.View(0, 6, 8), good},
		"dst shape":         {mk(ops.F32, 3, 8, 2), x, good},
		"f16 dst":           {mk(ops.F16, 3, 2, 8), x, good},
		"partial overlap":   {x.View(8, 2, 2, 8), x.View(0, 2, 2, 8), good},
	}
	for name, c := range cases {
		if err := ops.RoPE(enc, c.dst, c.x, c.o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestRoPEOneArena: x (rotated in place) and the positions tensor in one
// buffer, as an arena allocator would place them.
func TestRoPEOneArena(t *testing.T) {
	ctx := gputest.Ctx(t)
	const tokens, heads, hd, seed = 5, 3, 64, 3900
	rng := rand.New(rand.NewSource(seed))
	n := tokens * heads * hd
	xv := gputest.Rand(rng, n, 2)
	arena, err := ops.New(ctx, "arena", ops.F32, n+16)
	must(t, err)
	defer arena.Buf.Destroy()
	x := arena.View(0, tokens, heads, hd)
	must(t, x.Write(xv))
	pos := []uint32{7, 32767, 0, 4000, 12}
	pt := ops.Tensor{Buf: arena.Buf, Off: n + 5, DType: ops.U32, Shape: []int{tokens}}
	must(t, pt.WriteUint32(pos))
	o := ops.RoPEOpts{Mode: ops.RoPENeox, NRot: hd, Base: 1e6, Positions: &pt}
	runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.RoPE(enc, x, x, o) })
	got, err := x.Read()
	must(t, err)
	want := make([]float64, n)
	ref.RoPE(want, gputest.F64(xv), tokens, heads, hd, hd, true,
		func(tok, i int) float64 { return float64(o.Angle(pos[tok], i)) })
	gputest.Check(t, "rope in an arena", seed, got, want, gputest.TolF32)
	after, err := pt.ReadUint32()
	must(t, err)
	for i := range pos {
		if after[i] != pos[i] {
			t.Fatalf("positions changed: %v, were %v", after, pos)
		}
	}
}
