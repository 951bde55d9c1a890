package ops

import (
	"fmt"
	"math"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

type ropeStoreKey struct {
	Mode      RoPEMode
	Pool      DType
	Positions bool
	Factors   bool // FreqFactors tensor bound
	YaRN      bool // YaRN's per-pair ramp
	WG        int
}

func (k ropeStoreKey) String() string {
	s := fmt.Sprintf("rope_store_%s_%s_wg%d", k.Mode, k.Pool, k.WG)
	if k.Positions {
		s += "_pos"
	}
	return s + ropeVariant(k.Factors, k.YaRN)
}

// ropeStoreParams mirrors the shader's Params (vec4 members at 16-byte offsets).
type ropeStoreParams struct {
	N, Heads, KVHeads, HeadDim      uint32
	NRot, HalfRot, PerRow, QOff     uint32
	KOff, VOff, KPOff, VPOff        uint32
	PoolRows, SOff, PosOff, PosBase uint32
	Inv2Pi                          float32
	ScOff                           uint32 // q8_0 pools: word of the scale plane
	_                               [2]uint32
	ropeScaleParams
	TwoPi  [4]float32
	Lo, Hi [16]float32
}

// RoPEStore is one step's RoPE and KV-cache write in one dispatch: q [n,
// heads, headDim] is rotated in place, k [n, kvHeads, headDim] is rotated
// into kPool and v [n, kvHeads, headDim] copied into vPool, token t's rows
// going to pool row slots[t] (a row index past the pool, e.g. ScatterSkip,
// writes nothing). q, k and v are f32 views of one buffer (as the fused QKV
// matvec writes them); the pools are f32, f16 or q8_0 [rows,
// kvHeads·headDim] (q8_0: whole pools, see kv_pool.go, rows of whole
// blocks). The rotations are RoPE's, bit for bit; f16 pools round as
// ScatterRows does; a q8_0 pool gets each row's blocks quantised as ggml's
// quantize_row_q8_0_ref does (one thread a block). This replaces RoPE(q), RoPE(k) and ScatterRows of k and v.
func RoPEStore(enc *gpu.Encoder, q, k, v, kPool, vPool, slots Tensor, o RoPEOpts) error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("ops.RoPEStore: q %s, k %s, v %s, pools %s %s: %s", q, k, v, kPool, vPool, fmt.Sprintf(format, a...))
	}
	if len(q.Shape) != 3 || len(k.Shape) != 3 || len(v.Shape) != 3 {
		return fail("q, k and v must be [n, heads, headDim]")
	}
	n, heads, hd := q.Shape[0], q.Shape[1], q.Shape[2]
	kvh := k.Shape[1]
	switch {
	case q.DType != F32 || k.DType != F32 || v.DType != F32:
		return fail("q, k and v must be f32")
	case q.Buf != k.Buf || q.Buf != v.Buf:
		return fail("q, k and v must share one buffer")
	case k.Shape[0] != n || v.Shape[0] != n || k.Shape[2] != hd || !sameShape(k.Shape, v.Shape):
		return fail("shapes disagree")
	case hd%2 != 0:
		return fail("head size %d must be even", hd)
	case kPool.DType != vPool.DType || !IsKVPoolType(kPool.DType):
		return fail("pools must both be f32, f16 or q8_0")
	case kPool.DType == Q8_0 && (kvh*hd)%Q8_0.BlockSize() != 0:
		return fail("q8_0 pool rows of %d×%d values are not whole blocks of %d", kvh, hd, Q8_0.BlockSize())
	case len(kPool.Shape) != 2 || kPool.Shape[1] != kvh*hd || !sameShape(kPool.Shape, vPool.Shape):
		return fail("pools must be [rows, %d]", kvh*hd)
	case kPool.Buf == q.Buf || vPool.Buf == q.Buf:
		return fail("the pools must not share the q/k/v buffer")
	case slots.DType != U32 || slots.Len() != n:
		return fail("slots %s must be u32 with %d elements", slots, n)
	case kPool.DType == F16 && (kPool.Off%2 != 0 || vPool.Off%2 != 0):
		return fail("f16 pools must start at an even element")
	}
	if err := o.validate(hd); err != nil {
		return fail("%v", err)
	}
	var scOff uint32
	if kPool.DType == Q8_0 {
		for _, pool := range []Tensor{kPool, vPool} {
			var err error
			if scOff, err = kvQ8ScaleWord(pool); err != nil {
				return fail("%v", err)
			}
		}
	}
	// One binding spans q, k and v.
	lo := min(q.Off, k.Off, v.Off)
	hi := max(q.Off+q.Len(), k.Off+k.Len(), v.Off+v.Len())
	ts := []Tensor{{Buf: q.Buf, Off: lo, DType: F32, Shape: []int{hi - lo}}, kPool, vPool, slots}
	key := ropeStoreKey{Mode: o.Mode, Pool: kPool.DType, WG: 256, YaRN: o.yarn()}
	if o.Positions != nil {
		pt := *o.Positions
		if pt.DType != U32 || pt.Len() != n {
			return fail("positions %s must be u32 with %d elements", pt, n)
		}
		if o.PosOffset != 0 {
			return fail("PosOffset %d given with a positions tensor", o.PosOffset)
		}
		key.Positions = true
		ts = append(ts, pt)
	} else if uint64(o.PosOffset)+uint64(n) > MaxRoPEPosition {
		return fail("positions %d..%d exceed %d, the last exact in f32", o.PosOffset, uint64(o.PosOffset)+uint64(n)-1, MaxRoPEPosition)
	}
	if o.FreqFactors != nil {
		if f := o.FreqFactors.Buf; f == q.Buf || f == kPool.Buf || f == vPool.Buf {
			return fail("FreqFactors %s must not share the q/k/v or pool buffers", *o.FreqFactors)
		}
		key.Factors = true
		ts = append(ts, *o.FreqFactors)
	}
	perRow := hd / 2
	if uint64(n)*uint64(heads+2*kvh)*uint64(perRow) >= 1<<32 {
		return fail("too large for one dispatch")
	}
	args, offs, err := binds("RoPEStore", ts...)
	if err != nil {
		return err
	}
	base := offs[0]
	lt, ht := o.ropeTables()
	p := ropeStoreParams{
		N: uint32(n), Heads: uint32(heads), KVHeads: uint32(kvh), HeadDim: uint32(hd),
		NRot: uint32(o.NRot), HalfRot: uint32(o.NRot / 2), PerRow: uint32(perRow),
		QOff: base + uint32(q.Off-lo), KOff: base + uint32(k.Off-lo), VOff: base + uint32(v.Off-lo),
		KPOff: offs[1], VPOff: offs[2], PoolRows: uint32(kPool.Shape[0]), SOff: offs[3], PosBase: o.PosOffset,
		Inv2Pi: float32(1 / (2 * math.Pi)), ScOff: scOff, TwoPi: ropeTwoPi, Lo: lt, Hi: ht,
	}
	if key.Positions {
		p.PosOff = offs[4]
	}
	if key.Factors {
		p.ropeScaleParams = o.scaleParams(offs[len(offs)-1])
	} else {
		p.ropeScaleParams = o.scaleParams(0)
	}
	ctx := enc.Context()
	pipe, err := ctx.Pipeline(key, func() (gpu.PipelineSpec, error) {
		storage := []gpu.Access{gpu.ReadWrite, gpu.ReadWrite, gpu.ReadWrite, gpu.ReadOnly}
		if key.Positions {
			storage = append(storage, gpu.ReadOnly)
		}
		src, err := wgsl.Render("rope_store.wgsl", map[string]any{
			"Mode": key.Mode.String(), "Pool": key.Pool.String(), "WG": key.WG, "Positions": key.Positions,
			"Factors": key.Factors, "YaRN": key.YaRN, "BindFF": len(storage) + 1,
		})
		if key.Factors {
			storage = append(storage, gpu.ReadOnly)
		}
		return gpu.PipelineSpec{Source: src, Storage: storage}, err
	})
	if err != nil {
		return err
	}
	gx, gy := ctx.Grid(uint32(ceilDiv(n*(heads+2*kvh)*perRow, key.WG)))
	return enc.Dispatch(pipe, p, args, gx, gy, 1)
}
