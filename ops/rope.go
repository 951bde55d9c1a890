package ops

import (
	"fmt"
	"math"
	"sync"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

// RoPEMode says which dimensions of a head form the rotated pairs.
type RoPEMode uint8

const (
	// RoPENormal pairs adjacent dims (2i, 2i+1): llama-family GGUF.
	RoPENormal RoPEMode = iota
	// RoPENeox pairs the halves (i, i+nRot/2): qwen2/qwen3, gpt-neox.
	RoPENeox
)

func (m RoPEMode) String() string {
	switch m {
	case RoPENormal:
		return "normal"
	case RoPENeox:
		return "neox"
	}
	return fmt.Sprintf("ropemode(%d)", m)
}

// RoPEOpts configures RoPE. Pair i of a token at position pos turns by
//
//	theta_i = pos * FreqScale * Base^(-2i/NRot)
//
// computed in f32 exactly as Angle describes, so the host can reproduce the
// GPU's angle bit for bit. FreqFactors and YaRN (ExtFactor != 0) change the
// frequency of each pair as ggml_rope_ext does:
//
//	theta_i = pos * Base^(-2i/NRot) / FreqFactors[i] * g_i
//	g_i     = FreqScale*(1 - r_i) + r_i,  r_i = ExtFactor * ramp(i)  (YaRN)
//	g_i     = FreqScale                                             (otherwise)
//
// and both cos and sin are multiplied by the magnitude scale
// AttnFactor * (1 + 0.1 ln(1/FreqScale) when YaRN is on) (ggml's mscale).
// The zero values of these fields are ggml's values with YaRN off
// (ext_factor 0, attn_factor 1, no freq_factors), and then the angles are
// the same bits as without them.
type RoPEOpts struct {
	Mode RoPEMode
	// NRot is how many leading dims of each head are rotated: even,
	// 2..headDim, at most MaxRoPENRot. The rest are copied unchanged.
	NRot int
	// Base is the frequency base (llama 10000, qwen2 1e6); > 0.
	Base float64
	// FreqScale is 1 / the linear scaling factor (llama.cpp's freq_scale);
	// 0 means 1 (no scaling).
	FreqScale float64
	// PosOffset is the position of token 0 when Positions is nil: token t
	// is at PosOffset+t. Must be 0 when Positions is set.
	PosOffset uint32
	// Positions, when set, is a u32 tensor [nTokens] giving each token's
	// position (continuous batching mixes sequences in one dispatch).
	// Positions must stay below MaxRoPEPosition (checked on the host for
	// PosOffset, not for a tensor).
	Positions *Tensor

	// FreqFactors, when set, is an f32 tensor [NRot/2] (at least): pair i's
	// frequency is divided by FreqFactors[i] (ggml_rope_ext's c /
	// freq_factors argument). Llama 3.1+ GGUFs carry it as
	// rope_freqs.weight (llama3 rope scaling); Phi-3 LongRoPE as
	// rope_factors_short/long.weight. Factors must be positive (not
	// checked: they are read on the GPU). It must not share dst's buffer.
	FreqFactors *Tensor
	// ExtFactor is YaRN's extrapolation mix (ggml's ext_factor; llama.cpp
	// sets 1 for rope.scaling.type yarn): 0 turns YaRN off, else r_i =
	// ExtFactor * ramp(i) with ramp(i) = 1 - clamp((i - lo)/max(0.001,
	// hi - lo), 0, 1) between the correction dims (lo, hi) of
	// ggml_rope_yarn_corr_dims(NRot, OrigCtx, Base, BetaFast, BetaSlow).
	// Finite, >= 0.
	ExtFactor float64
	// AttnFactor scales cos and sin (ggml's attn_factor, llama.cpp's
	// yarn_attn_factor / LongRoPE's attention factor); 0 means 1.
	AttnFactor float64
	// BetaFast and BetaSlow are YaRN's correction betas (ggml's beta_fast,
	// beta_slow); 0 means llama.cpp's defaults 32 and 1. Only with YaRN.
	BetaFast, BetaSlow float64
	// OrigCtx is the training context YaRN extends (ggml's n_ctx_orig,
	// llama.cpp's rope.scaling.original_context_length); > 0 with YaRN.
	OrigCtx int
}

// yarn reports whether YaRN's ramp is on.
func (o RoPEOpts) yarn() bool { return o.ExtFactor != 0 }

// ropeScaling is what the shader needs beyond the tables: ggml's mscale
// and YaRN's ramp (corrLo, invSpan = 1/max(0.001, hi-lo), ext factor and
// freq scale), each f32 as the shader reads it.
type ropeScaling struct {
	MScale, ExtFactor, FreqScale, CorrLo, InvSpan float32
}

// scaling computes ropeScaling as ggml does in f32 (rope_yarn,
// ggml_rope_yarn_corr_dims), except that the ramp's division by the span
// is a multiplication by its reciprocal, rounded once here.
func (o RoPEOpts) scaling() ropeScaling {
	sc := ropeScaling{MScale: 1, FreqScale: float32(o.freqScale())}
	if o.AttnFactor != 0 {
		sc.MScale = float32(o.AttnFactor)
	}
	if !o.yarn() {
		return sc
	}
	lo, hi := YaRNCorrDims(o.NRot, o.OrigCtx, o.Base, o.betaFast(), o.betaSlow())
	sc.ExtFactor, sc.CorrLo = float32(o.ExtFactor), lo
	sc.InvSpan = float32(1 / float64(max(0.001, hi-lo)))
	sc.MScale = float32(sc.MScale * float32(1+0.1*float32(math.Log(float64(1/sc.FreqScale)))))
	return sc
}

func (o RoPEOpts) betaFast() float64 {
	if o.BetaFast == 0 {
		return 32
	}
	return o.BetaFast
}

func (o RoPEOpts) betaSlow() float64 {
	if o.BetaSlow == 0 {
		return 1
	}
	return o.BetaSlow
}

// YaRNCorrDims is ggml_rope_yarn_corr_dims in f32: the pair range [lo, hi]
// over which YaRN ramps from extrapolation to interpolation,
//
//	corr(beta) = nRot * ln(origCtx / (beta * 2π)) / (2 ln base)
//	lo = max(0, floor(corr(betaFast))), hi = min(nRot-1, ceil(corr(betaSlow)))
func YaRNCorrDims(nRot, origCtx int, base, betaFast, betaSlow float64) (lo, hi float32) {
	logf := func(x float32) float32 { return float32(math.Log(float64(x))) }
	corr := func(beta float32) float32 {
		return float32(nRot) * logf(float32(origCtx)/(beta*2*float32(math.Pi))) / (2 * logf(float32(base)))
	}
	lo = max(0, float32(math.Floor(float64(corr(float32(betaFast))))))
	hi = min(float32(nRot-1), float32(math.Ceil(float64(corr(float32(betaSlow))))))
	return lo, hi
}

// validate checks the options against a head of headDim dims.
func (o RoPEOpts) validate(headDim int) error {
	if o.Mode != RoPENormal && o.Mode != RoPENeox {
		return fmt.Errorf("unknown mode %s", o.Mode)
	}
	if o.NRot < 2 || o.NRot%2 != 0 || o.NRot > headDim || o.NRot > MaxRoPENRot {
		return fmt.Errorf("NRot %d must be even, at least 2 and at most headDim %d (and %d)", o.NRot, headDim, MaxRoPENRot)
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !(o.Base > 0) || !finite(o.Base):
		return fmt.Errorf("frequency base %g must be positive and finite", o.Base)
	case !(o.FreqScale >= 0) || !finite(o.FreqScale):
		return fmt.Errorf("FreqScale %g must be finite and >= 0 (0 means 1)", o.FreqScale)
	case !(o.ExtFactor >= 0) || !finite(o.ExtFactor):
		return fmt.Errorf("ExtFactor %g must be finite and >= 0 (0: YaRN off)", o.ExtFactor)
	case !(o.AttnFactor >= 0) || !finite(o.AttnFactor):
		return fmt.Errorf("AttnFactor %g must be finite and >= 0 (0 means 1)", o.AttnFactor)
	case !(o.BetaFast >= 0) || !finite(o.BetaFast) || !(o.BetaSlow >= 0) || !finite(o.BetaSlow):
		return fmt.Errorf("BetaFast %g and BetaSlow %g must be finite and >= 0 (0: the defaults)", o.BetaFast, o.BetaSlow)
	case o.yarn() && o.OrigCtx <= 0:
		return fmt.Errorf("YaRN (ExtFactor %g) needs OrigCtx > 0, got %d", o.ExtFactor, o.OrigCtx)
	case o.OrigCtx < 0:
		return fmt.Errorf("OrigCtx %d is negative", o.OrigCtx)
	}
	if o.FreqFactors != nil {
		if f := *o.FreqFactors; f.DType != F32 || f.Len() < o.NRot/2 {
			return fmt.Errorf("FreqFactors %s must be f32 with at least NRot/2 = %d elements", f, o.NRot/2)
		}
	}
	return nil
}

// MaxRoPENRot bounds NRot: the angle tables cover pairs 0..255.
const MaxRoPENRot = 512

// MaxRoPEPosition bounds positions: f32 holds every integer below 2^24.
const MaxRoPEPosition = 1 << 24

func (o RoPEOpts) freqScale() float64 {
	if o.FreqScale == 0 {
		return 1
	}
	return o.FreqScale
}

// ropeTables are the f32 factors of the inverse frequencies: pair i uses
// lo[i%16] * hi[i/16], where lo[j] = Base^(-2j/NRot) and hi[j] =
// FreqScale * Base^(-32j/NRot), each rounded once from float64. Two
// correctly rounded factors and one product keep the frequency within 1.5
// f32 ulp, where llama.cpp's running product theta *= theta_scale
// accumulates one rounding per pair. They are cached: 32 math.Pow calls cost more than
// recording the dispatch.
//
// With YaRN the tables leave FreqScale out (it enters per pair through
// g_i, see RoPEOpts).
func (o RoPEOpts) ropeTables() (lo, hi [16]float32) {
	fs := o.freqScale()
	if o.yarn() {
		fs = 1
	}
	k := ropeTableKey{o.Base, fs, o.NRot}
	if t, ok := ropeTableCache.Load(k); ok {
		t := t.(*[2][16]float32)
		return t[0], t[1]
	}
	for j := range 16 {
		lo[j] = float32(math.Pow(o.Base, -2*float64(j)/float64(o.NRot)))
		hi[j] = float32(fs * math.Pow(o.Base, -32*float64(j)/float64(o.NRot)))
	}
	ropeTableCache.Store(k, &[2][16]float32{lo, hi})
	return lo, hi
}

type ropeTableKey struct {
	base, freqScale float64
	nRot            int
}

// ropeTableCache maps ropeTableKey to *[2][16]float32; a model has one or
// two entries.
var ropeTableCache sync.Map

// Angle is the rotation, in radians, that the shader applies to pair
// 0 <= pair < NRot/2 at position pos: float32(pos) * (lo * hi) in f32 (see
// ropeTables), identical bit for bit to the GPU's value because IEEE
// multiplication is correctly rounded everywhere. It is within four f32
// roundings (relative 2^-22) of the exact pos*FreqScale*Base^(-2*pair/NRot).
//
// With YaRN the shader then multiplies the frequency by g_i, computed in
// f32 as Angle does; a compiler may contract g_i's multiply-add into an
// FMA, so Angle is then within one more rounding (relative 2^-23) of the
// GPU's angle rather than equal. Angle ignores FreqFactors: see
// AngleWithFactor.
func (o RoPEOpts) Angle(pos uint32, pair int) float32 {
	return o.AngleWithFactor(pos, pair, 1)
}

// AngleWithFactor is Angle with pair's frequency divided by factor (its
// FreqFactors entry) in f32, as the shader does. WGSL allows its division
// 2.5 ulp of error, so on devices that do not round it correctly (lavapipe
// does) the GPU's angle is within relative 2^-21 of this one.
func (o RoPEOpts) AngleWithFactor(pos uint32, pair int, factor float32) float32 {
	lo, hi := o.ropeTables()
	v := float32(lo[pair%16] * hi[pair/16])
	if o.yarn() {
		sc := o.scaling()
		y := (float32(pair) - sc.CorrLo) * sc.InvSpan
		r := (1 - min(1, max(0, y))) * sc.ExtFactor
		v = float32(v * float32(float32(sc.FreqScale*float32(1-r))+r))
	}
	if factor != 1 {
		v = float32(v / factor)
	}
	return float32(float32(pos) * v)
}

// MScale is the factor the shader multiplies cos and sin by (1 unless
// AttnFactor or YaRN is set), in f32 as the shader reads it.
func (o RoPEOpts) MScale() float32 { return o.scaling().MScale }

// twoPiParts splits 2π into three 8-bit parts and a remainder, so that for
// k < 2^16 (angles below about 411774 rad) each k*part is exact in f32 and
// the shader's Cody-Waite reduction of an angle to [-π, π] loses nothing;
// the GPU's sin and cos are only specified inside that range.
func twoPiParts() [4]float32 {
	trunc8 := func(x float64) float64 {
		q := math.Ldexp(1, int(math.Floor(math.Log2(x)))-7)
		return math.Trunc(x/q) * q
	}
	rest := 2 * math.Pi
	var out [4]float32
	for i := range 3 {
		part := trunc8(rest)
		out[i] = float32(part)
		rest -= part
	}
	out[3] = float32(rest)
	return out
}

var ropeTwoPi = twoPiParts()

type ropeKey struct {
	Mode      RoPEMode
	Positions bool // per-token positions tensor bound
	Factors   bool // FreqFactors tensor bound
	YaRN      bool // YaRN's per-pair ramp
	AliasX    bool // x shares dst's buffer (bound read_write)
	AliasPos  bool // positions share dst's buffer (bound read_write)
	// InDX / InDPos: x / positions lie in dst's binding window (in place,
	// or disjoint views of one buffer): not bound, read through dst's
	// binding (Dawn rejects overlapping writable bindings).
	InDX, InDPos bool
	WG           int
}

func (k ropeKey) String() string {
	s := fmt.Sprintf("rope_%s_wg%d", k.Mode, k.WG)
	if k.Positions {
		s += "_pos"
	}
	if k.InDX {
		s += "_indx"
	} else if k.AliasX {
		s += "_aliasx"
	}
	if k.InDPos {
		s += "_indpos"
	} else if k.AliasPos {
		s += "_aliaspos"
	}
	return s + ropeVariant(k.Factors, k.YaRN)
}

// ropeVariant names the scaling variants in pipeline labels.
func ropeVariant(factors, yarn bool) string {
	s := ""
	if factors {
		s += "_ff"
	}
	if yarn {
		s += "_yarn"
	}
	return s
}

// ropeParams mirrors the shader's Params (vec4 members at 16-byte offsets).
type ropeParams struct {
	Rows, NHeads, HeadDim, NRot  uint32
	HalfRot, PerRow, Total, XOff uint32
	DOff, PosOff, PosBase        uint32
	Inv2Pi                       float32
	ropeScaleParams
	TwoPi  [4]float32
	Lo, Hi [16]float32
}

// ropeScaleParams mirror the scaling fields shared by both RoPE shaders'
// Params (two vec4 rows).
type ropeScaleParams struct {
	MScale    float32
	FFOff     uint32
	ExtFactor float32
	FreqScale float32
	CorrLo    float32
	InvSpan   float32
	_         [2]uint32
}

func (o RoPEOpts) scaleParams(ffOff uint32) ropeScaleParams {
	sc := o.scaling()
	return ropeScaleParams{MScale: sc.MScale, FFOff: ffOff, ExtFactor: sc.ExtFactor, FreqScale: sc.FreqScale,
		CorrLo: sc.CorrLo, InvSpan: sc.InvSpan}
}

// RoPE applies rotary position embeddings to x [nTokens, nHeads, headDim]
// (f32) into dst (same shape, f32; dst may be x itself for in place). Each
// thread rotates one pair (or copies one dim past NRot), so a token's
// result depends on nothing else in the batch.
func RoPE(enc *gpu.Encoder, dst, x Tensor, o RoPEOpts) error {
	if x.DType != F32 || dst.DType != F32 {
		return fmt.Errorf("ops.RoPE: x %s and dst %s must be f32", x, dst)
	}
	if len(x.Shape) != 3 || x.Len() == 0 {
		return fmt.Errorf("ops.RoPE: x %s must be [nTokens, nHeads, headDim]", x)
	}
	if !sameShape(dst.Shape, x.Shape) {
		return fmt.Errorf("ops.RoPE: dst %s does not match x %s", dst, x)
	}
	nTokens, nHeads, headDim := x.Shape[0], x.Shape[1], x.Shape[2]
	if err := o.validate(headDim); err != nil {
		return fmt.Errorf("ops.RoPE: %w", err)
	}
	half := o.NRot / 2
	perRow := half + headDim - o.NRot
	rows := nTokens * nHeads
	if uint64(rows)*uint64(perRow) >= 1<<32 {
		return fmt.Errorf("ops.RoPE: x %s is too large for one dispatch", x)
	}
	key := ropeKey{Mode: o.Mode, WG: 256, YaRN: o.yarn()}
	var err error
	if key.AliasX, err = aliasOf("RoPE", dst, x, true); err != nil {
		return err
	}
	var xOff, posOff uint32
	if key.AliasX {
		key.InDX, xOff = inWindowOf(dst, x)
	}
	var ts []Tensor
	if !key.InDX {
		ts = append(ts, x)
	}
	ts = append(ts, dst)
	if o.Positions != nil {
		pt := *o.Positions
		if pt.DType != U32 || pt.Len() != nTokens {
			return fmt.Errorf("ops.RoPE: positions %s must be u32 with %d elements (one per token of x %s)", pt, nTokens, x)
		}
		if o.PosOffset != 0 {
			return fmt.Errorf("ops.RoPE: PosOffset %d given with a positions tensor; put the offset into the positions", o.PosOffset)
		}
		if key.AliasPos, err = aliasOf("RoPE", dst, pt, false); err != nil {
			return err
		}
		key.Positions = true
		if key.AliasPos {
			key.InDPos, posOff = windowOf(dst, pt)
		}
		if !key.InDPos {
			ts = append(ts, pt)
		}
	} else if uint64(o.PosOffset)+uint64(nTokens) > MaxRoPEPosition {
		return fmt.Errorf("ops.RoPE: positions %d..%d exceed %d, the last exact in f32", o.PosOffset, uint64(o.PosOffset)+uint64(nTokens)-1, MaxRoPEPosition)
	}
	if o.FreqFactors != nil {
		if o.FreqFactors.Buf == dst.Buf {
			return fmt.Errorf("ops.RoPE: FreqFactors %s must not share dst's buffer", *o.FreqFactors)
		}
		key.Factors = true
		ts = append(ts, *o.FreqFactors)
	}
	args, offs, err := binds("RoPE", ts...)
	if err != nil {
		return err
	}
	// Offsets of the bound tensors, in ts order; one read through dst's
	// binding has its offset in that window.
	next := 0
	take := func() uint32 { next++; return offs[next-1] }
	if !key.InDX {
		xOff = take()
	}
	dOff := take()
	if key.Positions && !key.InDPos {
		posOff = take()
	}
	lo, hi := o.ropeTables()
	p := ropeParams{
		Rows: uint32(rows), NHeads: uint32(nHeads), HeadDim: uint32(headDim), NRot: uint32(o.NRot),
		HalfRot: uint32(half), PerRow: uint32(perRow), Total: uint32(rows * perRow), XOff: xOff,
		DOff: dOff, PosBase: o.PosOffset,
		Inv2Pi: float32(1 / (2 * math.Pi)), TwoPi: ropeTwoPi, Lo: lo, Hi: hi,
	}
	if key.Positions {
		p.PosOff = posOff
	}
	if key.Factors {
		p.ropeScaleParams = o.scaleParams(offs[len(offs)-1])
	} else {
		p.ropeScaleParams = o.scaleParams(0)
	}
	pipe, err := enc.Context().Pipeline(key, func() (gpu.PipelineSpec, error) {
		var storage []gpu.Access
		if !key.InDX {
			storage = append(storage, access(key.AliasX))
		}
		storage = append(storage, gpu.ReadWrite)
		bindD := len(storage)
		if key.Positions && !key.InDPos {
			storage = append(storage, access(key.AliasPos))
		}
		src, err := wgsl.Render("rope.wgsl", map[string]any{
			"Mode": key.Mode.String(), "WG": key.WG, "Positions": key.Positions,
			"AliasX": key.AliasX, "AliasPos": key.AliasPos, "InDX": key.InDX, "InDPos": key.InDPos,
			"Factors": key.Factors, "YaRN": key.YaRN, "BindD": bindD, "BindPos": bindD + 1, "BindFF": len(storage) + 1,
		})
		if key.Factors {
			storage = append(storage, gpu.ReadOnly)
		}
		return gpu.PipelineSpec{Source: src, Storage: storage}, err
	})
	if err != nil {
		return err
	}
	gx, gy := enc.Context().Grid(uint32(ceilDiv(rows*perRow, key.WG)))
	return enc.Dispatch(pipe, p, args, gx, gy, 1)
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
