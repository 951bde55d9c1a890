package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

// expertKey specialises the experts kernel of wgsl/dequant.wgsl.
type expertKey struct {
	T    DType
	WG   int
	Bias bool
	Pair bool
	Act  Activation
}

func (k expertKey) String() string {
	s := fmt.Sprintf("experts_%s_wg%d", k.T, k.WG)
	if k.Bias {
		s += "_bias"
	}
	if k.Pair {
		s += "_pair_" + k.Act.String()
	}
	return s
}

// expertParams are the experts kernel's fields of Params in dequant.wgsl.
type expertParams struct {
	EStride, XPer uint32
	BOff, ROff    uint32
	NExp          uint32
}

// matVecExpertsWG is the lanes per weight row: it fixes each output's
// reduction order.
const matVecExpertsWG = 64

// expertLayout is how the experts kernel walks a weight type: elements per
// (pseudo-)block, its size in W units (bytes for block types, halves for
// f16/bf16, words for f32), pieces per block, and the W units of a row.
func expertLayout(dt DType, k int) (bs, bb, ppb, rowUnits, np int, ok bool) {
	switch dt {
	case F32:
		return 4, 4, 1, k, ceilDiv(k, 4), true
	case F16, BF16:
		return 8, 8, 1, k, ceilDiv(k, 8), true
	}
	bs, bb, ppb, ok = quantLayout(dt)
	if !ok || k%bs != 0 {
		return 0, 0, 0, 0, 0, false
	}
	return bs, bb, ppb, k / bs * bb, k / bs * ppb, true
}

// MatVecExperts multiplies each slot's row by its expert's matrix: for the
// slots of a routing table (MoERoute over rows·K slots), slot s routed to
// expert e gets dst[s] = w[e] · x[s/xPer] (+ bias[e] when bias is not nil),
// for stacked expert matrices w [E, N, K] in any stored type (F32, F16,
// BF16, the block-quantised types as in GGUF), x [slots/xPer, K] f32 (the
// token rows for gate and up with xPer = K experts per token; the slots'
// own rows for down with xPer = 1), bias [E, N] f32 and dst [slots, N] f32.
// Only the experts the table names are read, each weight row once per call
// whatever the number of its slots; each slot's value is reduced in a fixed
// order that depends on nothing else in the batch. The whole of w must fit
// one storage binding.
func MatVecExperts(enc *gpu.Encoder, dst, w, x, route Tensor, bias *Tensor, xPer int) error {
	return matVecExperts(enc, dst, w, x, route, bias, xPer, false, 0)
}

// MatVecExpertsGated is MatVecExperts for a gated FFN's first half in one
// dispatch: w [E, 2N, K] holds each expert's N gate rows then its N up rows
// (bias [E, 2N] likewise), and dst[s] = act(gate + bias, up + bias) [N]:
// the same values as two MatVecExperts and a GatedAct, with x read once.
func MatVecExpertsGated(enc *gpu.Encoder, dst, w, x, route Tensor, bias *Tensor, xPer int, act Activation) error {
	if !act.valid() {
		return fmt.Errorf("ops.MatVecExpertsGated: unknown activation %s", act)
	}
	return matVecExperts(enc, dst, w, x, route, bias, xPer, true, act)
}

func matVecExperts(enc *gpu.Encoder, dst, w, x, route Tensor, bias *Tensor, xPer int, pair bool, act Activation) error {
	if len(w.Shape) != 3 || (pair && w.Shape[1]%2 != 0) {
		return fmt.Errorf("ops.MatVecExperts: weight %s must be [experts, N, K] (gated: [experts, 2N, K])", w)
	}
	experts, n, k := w.Shape[0], w.Shape[1], w.Shape[2]
	pairs := 1
	if pair {
		pairs, n = 2, n/2
	}
	bs, bb, ppb, rowUnits, np, ok := expertLayout(w.DType, k)
	if !ok {
		return fmt.Errorf("ops.MatVecExperts: weight %s: type not supported or rows not whole blocks", w)
	}
	if xPer < 1 || x.DType != F32 || x.Len()%k != 0 {
		return fmt.Errorf("ops.MatVecExperts: x %s must be f32 rows of K=%d (weight %s), xPer %d >= 1", x, k, w, xPer)
	}
	slots := x.Len() / k * xPer
	if dst.DType != F32 || dst.Len() != slots*n {
		return fmt.Errorf("ops.MatVecExperts: dst %s must be f32 [%d, %d]", dst, slots, n)
	}
	if route.DType != U32 || route.Len() != RouteLen(experts, slots) {
		return fmt.Errorf("ops.MatVecExperts: route %s must be u32 of %d (%d experts, %d slots)", route, RouteLen(experts, slots), experts, slots)
	}
	if bias != nil && (bias.DType != F32 || bias.Len() != experts*pairs*n) {
		return fmt.Errorf("ops.MatVecExperts: bias %s must be f32 [%d, %d]", bias, experts, pairs*n)
	}
	ctx := enc.Context()
	if w.Bytes() > ctx.MaxBinding() {
		return fmt.Errorf("ops.MatVecExperts: weight %s of %d bytes: %w", w, w.Bytes(), gpu.ErrBindingTooLarge)
	}
	ts := []Tensor{w, x, dst, route}
	if bias != nil {
		ts = append(ts, *bias)
	}
	for i := range ts {
		if ts[i].Buf == dst.Buf && i != 2 {
			return fmt.Errorf("ops.MatVecExperts: dst %s must not share a buffer with its inputs", dst)
		}
	}
	args, offs, err := binds("MatVecExperts", ts...)
	if err != nil {
		return err
	}
	maxDim := ctx.Limits.MaxComputeWorkgroupsPerDimension
	if maxDim == 0 {
		maxDim = 65535
	}
	used := min(experts, slots)
	if uint32(n) > maxDim || uint32(used) > maxDim {
		return fmt.Errorf("ops.MatVecExperts: %d rows × %d experts exceed %d workgroups per dimension", n, used, maxDim)
	}
	key := expertKey{T: w.DType, WG: matVecExpertsWG, Bias: bias != nil, Pair: pair, Act: act}
	pipe, err := ctx.Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("dequant.wgsl", map[string]any{"Kernel": "experts", "T": key.T.String(),
			"WG": key.WG, "Bias": key.Bias, "Pair": key.Pair, "Act": key.Act.String(), "BS": bs, "BB": bb, "PPB": ppb})
		storage := []gpu.Access{gpu.ReadOnly, gpu.ReadOnly, gpu.ReadWrite, gpu.ReadOnly}
		if key.Bias {
			storage = append(storage, gpu.ReadOnly)
		}
		return gpu.PipelineSpec{Source: src, Storage: storage}, err
	})
	if err != nil {
		return err
	}
	prm := quantParams{Rows: uint32(n), K: uint32(k), NP: uint32(np), WOff: offs[0], WRow: uint32(rowUnits),
		XOff: offs[1], XStride: uint32(k), DOff: offs[2], DStride: uint32(n),
		expertParams: expertParams{EStride: uint32(pairs * n * rowUnits), XPer: uint32(xPer), ROff: offs[3], NExp: uint32(experts)}}
	if bias != nil {
		prm.BOff = offs[4]
	}
	return enc.Dispatch(pipe, prm, args, uint32(n), uint32(used), 1)
}
