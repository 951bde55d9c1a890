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
// GPU's angle bit for bit.
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
func (o RoPEOpts) ropeTables() (lo, hi [16]float32) {
	k := ropeTableKey{o.Base, o.freqScale(), o.NRot}
	if t, ok := ropeTableCache.Load(k); ok {
		t := t.(*[2][16]float32)
		return t[0], t[1]
	}
	for j := range 16 {
		lo[j] = float32(math.Pow(o.Base, -2*float64(j)/float64(o.NRot)))
		hi[j] = float32(o.freqScale() * math.Pow(o.Base, -32*float64(j)/float64(o.NRot)))
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
func (o RoPEOpts) Angle(pos uint32, pair int) float32 {
	lo, hi := o.ropeTables()
	v := float32(lo[pair%16] * hi[pair/16])
	return float32(float32(pos) * v)
}

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
	AliasX    bool // x shares dst's buffer (bound read_write)
	AliasPos  bool // positions share dst's buffer (bound read_write)
	WG        int
}

func (k ropeKey) String() string {
	s := fmt.Sprintf("rope_%s_wg%d", k.Mode, k.WG)
	if k.Positions {
		s += "_pos"
	}
	if k.AliasX {
		s += "_aliasx"
	}
	if k.AliasPos {
		s += "_aliaspos"
	}
	return s
}

// ropeParams mirrors the shader's Params (vec4 members at 16-byte offsets).
type ropeParams struct {
	Rows, NHeads, HeadDim, NRot  uint32
	HalfRot, PerRow, Total, XOff uint32
	DOff, PosOff, PosBase        uint32
	Inv2Pi                       float32
	TwoPi                        [4]float32
	Lo, Hi                       [16]float32
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
	if o.Mode != RoPENormal && o.Mode != RoPENeox {
		return fmt.Errorf("ops.RoPE: unknown mode %s", o.Mode)
	}
	if o.NRot < 2 || o.NRot%2 != 0 || o.NRot > headDim || o.NRot > MaxRoPENRot {
		return fmt.Errorf("ops.RoPE: NRot %d must be even, at least 2 and at most headDim %d (and %d)", o.NRot, headDim, MaxRoPENRot)
	}
	if !(o.Base > 0) || math.IsInf(o.Base, 0) {
		return fmt.Errorf("ops.RoPE: frequency base %g must be positive and finite", o.Base)
	}
	if !(o.FreqScale >= 0) || math.IsInf(o.FreqScale, 0) {
		return fmt.Errorf("ops.RoPE: FreqScale %g must be finite and >= 0 (0 means 1)", o.FreqScale)
	}
	half := o.NRot / 2
	perRow := half + headDim - o.NRot
	rows := nTokens * nHeads
	if uint64(rows)*uint64(perRow) >= 1<<32 {
		return fmt.Errorf("ops.RoPE: x %s is too large for one dispatch", x)
	}
	key := ropeKey{Mode: o.Mode, WG: 256}
	var err error
	if key.AliasX, err = aliasOf("RoPE", dst, x, true); err != nil {
		return err
	}
	ts := []Tensor{x, dst}
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
		ts = append(ts, pt)
	} else if uint64(o.PosOffset)+uint64(nTokens) > MaxRoPEPosition {
		return fmt.Errorf("ops.RoPE: positions %d..%d exceed %d, the last exact in f32", o.PosOffset, uint64(o.PosOffset)+uint64(nTokens)-1, MaxRoPEPosition)
	}
	args, offs, err := binds("RoPE", ts...)
	if err != nil {
		return err
	}
	lo, hi := o.ropeTables()
	p := ropeParams{
		Rows: uint32(rows), NHeads: uint32(nHeads), HeadDim: uint32(headDim), NRot: uint32(o.NRot),
		HalfRot: uint32(half), PerRow: uint32(perRow), Total: uint32(rows * perRow), XOff: offs[0],
		DOff: offs[1], PosBase: o.PosOffset,
		Inv2Pi: float32(1 / (2 * math.Pi)), TwoPi: ropeTwoPi, Lo: lo, Hi: hi,
	}
	if key.Positions {
		p.PosOff = offs[2]
	}
	pipe, err := enc.Context().Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("rope.wgsl", map[string]any{
			"Mode": key.Mode.String(), "WG": key.WG, "Positions": key.Positions,
			"AliasX": key.AliasX, "AliasPos": key.AliasPos,
		})
		storage := []gpu.Access{access(key.AliasX), gpu.ReadWrite}
		if key.Positions {
			storage = append(storage, access(key.AliasPos))
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
