package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
)

// MatVecOpts fuse the work around a decode projection into the matvec
// itself, so that a transformer block decodes in a handful of dispatches:
// each dispatch costs a few µs of GPU and CPU time whatever its size, which
// for small models is most of a token's time.
type MatVecOpts struct {
	// Accumulate adds the product to dst instead of storing it (the residual
	// add after the attention output and FFN down projections).
	Accumulate bool
	// Pair: w is [2N, K], the gate rows then the up rows of a gated FFN;
	// dst [M, N] gets Act(gate_n·x_m, up_n·x_m), silu(g)·u by default.
	Pair bool
	// Act is the Pair's activation (ActSiLU, the zero value: llama, qwen;
	// ActGELU: gemma2/3's GeGLU; ActSwiGLUOAI: gpt-oss), the same WGSL as
	// GatedAct so the fused decode and unfused prefill paths agree. Only
	// with Pair.
	Act Activation
	// Norm, when set, RMS-normalises each row of x and scales it by Norm
	// (f32 [K]) before the product: dst = w·(x / rms(x) * Norm), with
	// rms(x) = sqrt(mean(x²) + Eps).
	Norm *Tensor
	Eps  float32
	// Bias (f32, one per output row: for several destinations their rows in
	// order, a fused QKV's joined biases) is added to each output after the
	// product (before Accumulate's add). Not with Pair.
	Bias *Tensor
}

// MatVecFused is MatVec (f32/f16 weights) or MatVecQuant (block-quantised
// and bf16 weights) with the fusions of o. With several dst tensors the
// weight's rows are split among them in order (a fused QKV weight: dst[i]
// is [M, N_i] and the N_i add up to w's rows); they must share one buffer.
// Each output's reduction order is the unfused kernel's, so a row's result
// still does not depend on M.
func MatVecFused(enc *gpu.Encoder, w, x Tensor, o MatVecOpts, dst ...Tensor) error {
	if w.DType.Quantized() || w.DType == BF16 {
		return matVecQuant(enc, w, x, o, dst)
	}
	return matVec(enc, w, x, o, dst)
}

// fusion selects the fused variants of the matvec shaders.
type fusion struct {
	Acc, Pair, Segs, Norm, Bias bool
	Act                         Activation // Pair's activation
}

func (f fusion) String() string {
	s := ""
	for _, v := range []struct {
		on   bool
		name string
	}{{f.Acc, "_acc"}, {f.Pair, "_pair"}, {f.Segs, "_segs"}, {f.Norm, "_norm"}, {f.Bias, "_bias"}} {
		if v.on {
			s += v.name
		}
	}
	if f.Act != ActSiLU {
		s += "_" + f.Act.String()
	}
	return s
}

// fusionParams mirror the fusion fields at the end of both shaders' Params.
type fusionParams struct {
	PairOff     uint32
	Seg1, Seg2  uint32
	DOff1, DRs1 uint32
	DOff2, DRs2 uint32
	GOff        uint32
	Eps         float32
	FBOff       uint32 // Bias: the bias of output row 0
}

// fusedPlan is a validated fused matvec: its variant, output rows, the
// destination binding and where each segment starts in it.
type fusedPlan struct {
	fusion
	rows    int // output rows (gate rows for Pair)
	d, g, b gpu.Arg
	dOff    uint32 // segment 0, at x row 0
	dStride uint32
	normOff uint32
	fp      fusionParams
}

// segmentedParams are the offsets for the group of x rows starting at m0.
type segmentedParams struct {
	DOff, DStride uint32
	fusionParams
}

func (p *fusedPlan) params(m0 int) segmentedParams {
	fp := p.fp
	fp.DOff1 += uint32(m0) * fp.DRs1
	fp.DOff2 += uint32(m0) * fp.DRs2
	return segmentedParams{DOff: p.dOff + uint32(m0)*p.dStride, DStride: p.dStride, fusionParams: fp}
}

func (p *fusedPlan) storage() []gpu.Access {
	s := []gpu.Access{gpu.ReadOnly, gpu.ReadOnly, gpu.ReadWrite}
	if p.Norm {
		s = append(s, gpu.ReadOnly)
	}
	if p.Bias {
		s = append(s, gpu.ReadOnly)
	}
	return s
}

func (p *fusedPlan) args(w, x gpu.Arg) []gpu.Arg {
	a := []gpu.Arg{w, x, p.d}
	if p.Norm {
		a = append(a, p.g)
	}
	if p.Bias {
		a = append(a, p.b)
	}
	return a
}

// plan checks the destinations and fusions of a matvec of w [N, K] by m
// rows of x and binds dst (and the norm weight).
func (o MatVecOpts) plan(op string, w Tensor, m int, dsts []Tensor) (*fusedPlan, error) {
	fail := func(format string, a ...any) (*fusedPlan, error) {
		return nil, fmt.Errorf("ops.%s: weight %s: %s", op, w, fmt.Sprintf(format, a...))
	}
	if len(dsts) < 1 || len(dsts) > 3 {
		return fail("%d destinations; 1 to 3 are supported", len(dsts))
	}
	n, k := w.Shape[0], w.Shape[1]
	p := &fusedPlan{fusion: fusion{Acc: o.Accumulate, Pair: o.Pair, Segs: len(dsts) > 1, Norm: o.Norm != nil, Bias: o.Bias != nil, Act: o.Act}}
	total := 0
	for i, d := range dsts {
		if d.DType != F32 || len(d.Shape) != 2 || d.Shape[0] != m {
			return fail("dst %d %s must be f32 [%d, N]", i, d, m)
		}
		if d.Buf != dsts[0].Buf {
			return fail("the destinations must share one buffer")
		}
		total += d.Shape[1]
	}
	switch {
	case !o.Act.valid():
		return fail("unknown activation %s", o.Act)
	case o.Act != ActSiLU && !p.Pair:
		return fail("activation %s needs Pair", o.Act)
	case p.Pair && p.Segs:
		return fail("Pair takes one destination")
	case p.Pair && (n%2 != 0 || dsts[0].Shape[1] != n/2):
		return fail("Pair needs [2N, K] weights and dst [M, N]; dst is %s", dsts[0])
	case !p.Pair && total != n:
		return fail("destinations of %d columns for %d weight rows", total, n)
	case p.Pair && p.Bias:
		return fail("Bias does not go with Pair")
	}
	p.rows = total
	// One binding spans every destination.
	lo, hi := dsts[0].Off, dsts[0].Off+dsts[0].Len()
	for _, d := range dsts[1:] {
		lo, hi = min(lo, d.Off), max(hi, d.Off+d.Len())
	}
	args, offs, err := binds(op, Tensor{Buf: dsts[0].Buf, Off: lo, DType: F32, Shape: []int{hi - lo}})
	if err != nil {
		return nil, err
	}
	p.d = args[0]
	base := func(i int) uint32 { return offs[0] + uint32(dsts[i].Off-lo) }
	p.dOff, p.dStride = base(0), uint32(dsts[0].Shape[1])
	if p.Pair {
		p.fp.PairOff = uint32(n / 2)
	}
	if p.Segs {
		p.fp.Seg1, p.fp.Seg2 = uint32(total), uint32(total)
		p.fp.Seg1 = uint32(dsts[0].Shape[1])
		p.fp.DOff1, p.fp.DRs1 = base(1), uint32(dsts[1].Shape[1])
		if len(dsts) == 3 {
			p.fp.Seg2 = p.fp.Seg1 + uint32(dsts[1].Shape[1])
			p.fp.DOff2, p.fp.DRs2 = base(2), uint32(dsts[2].Shape[1])
		}
	}
	if o.Norm != nil {
		g := *o.Norm
		if g.DType != F32 || g.Len() != k {
			return fail("norm weight %s must be f32 [%d]", g, k)
		}
		if g.Buf == dsts[0].Buf {
			return fail("the norm weight must not share the destination's buffer")
		}
		ga, goff, err := binds(op, g.View(0, k))
		if err != nil {
			return nil, err
		}
		p.g, p.normOff = ga[0], goff[0]
		p.fp.GOff, p.fp.Eps = goff[0], o.Eps
		if !(o.Eps > 0) {
			return fail("norm epsilon %g must be positive", o.Eps)
		}
	}
	if o.Bias != nil {
		b := *o.Bias
		if b.DType != F32 || b.Len() != total {
			return fail("bias %s must be f32 [%d]", b, total)
		}
		if b.Buf == dsts[0].Buf {
			return fail("the bias must not share the destination's buffer")
		}
		ba, boff, err := binds(op, b.View(0, total))
		if err != nil {
			return nil, err
		}
		p.b, p.fp.FBOff = ba[0], boff[0]
	}
	return p, nil
}
