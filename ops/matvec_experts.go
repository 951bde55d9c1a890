package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
)

// expertParams are the experts kernel's fields of Params in dequant.wgsl.
type expertParams struct {
	EStride, XPer uint32
	BOff, ROff    uint32
	NExp          uint32
}

// maxExpertTile is the most slots of one expert that the experts kernel
// computes at once (each weight piece decoded once for all of them).
const maxExpertTile = 8

// expertTuning overrides the experts kernel's shape in tests
// (export_test.go): the largest tile, x read straight from memory, the
// wide shape (four rows a lane, 128 lanes) on any adapter.
var expertTuning = struct {
	MaxTile       int
	NoStage, Wide bool
}{MaxTile: maxExpertTile}

// expertTPR is the lanes per weight row of the experts kernel for np pieces
// per row: of 32, 16 and 8 lanes the one that leaves fewest lanes idle over
// the row's passes (then the most lanes), so that short expert rows (K =
// 768 is 12 pieces of Q6_K) keep the lanes busy. It depends on the weight's
// type and K only, so it fixes each output's reduction order.
func expertTPR(np int) int {
	best, span := 0, 0
	for _, t := range []int{32, 16, 8} {
		if s := ceilDiv(np, t) * t; best == 0 || s < span {
			best, span = t, s
		}
	}
	return best
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

// matVecExperts is the quantised matvec's kernel (wgsl/dequant.wgsl) with
// a slot of the routing table in place of each x row: a grid of (row
// blocks, used experts), each workgroup the dense kernel's 256 lanes over
// one expert's rows, its slots M at a time.
func matVecExperts(enc *gpu.Encoder, dst, w, x, route Tensor, bias *Tensor, xPer int, pair bool, act Activation) error {
	if len(w.Shape) != 3 || (pair && w.Shape[1]%2 != 0) {
		return fmt.Errorf("ops.MatVecExperts: weight %s must be [experts, N, K] (gated: [experts, 2N, K])", w)
	}
	experts, n, k := w.Shape[0], w.Shape[1], w.Shape[2]
	pairs := 1
	if pair {
		pairs, n = 2, n/2
	}
	rowUnits, np, ok := rowLayout(w.DType, k)
	if !ok || n < 1 || k < 1 {
		return fmt.Errorf("ops.MatVecExperts: weight %s: type not supported or rows not whole blocks", w)
	}
	if xPer < 1 || x.DType != F32 || x.Len()%k != 0 || x.Len() == 0 {
		return fmt.Errorf("ops.MatVecExperts: x %s must be f32 rows of K=%d (weight %s), xPer %d >= 1", x, k, w, xPer)
	}
	xRows := x.Len() / k
	slots := xRows * xPer
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
	used := min(experts, slots)
	// For a tile of m slots, the workgroup the dense kernel takes for as
	// many rows in all (a gate row and its up row per output with Pair).
	shape := func(m int) (rpt, wg int, staged bool) {
		rpt, wg, staged = matVecQuantShape(used*n, m, ctx.Software())
		if expertTuning.Wide {
			rpt, wg, staged = 4, 128, false
		}
		if pair {
			rpt = 2 * max(1, rpt/2)
		}
		return rpt, wg, staged && !expertTuning.NoStage
	}
	// The tile: the slots an expert gets on average (one in decode, where
	// a wider tile would only cost workgroup memory and so occupancy; up
	// to 8 in prefill), fewer where the staged x would not fit workgroup
	// memory. An expert's slots beyond a tile take further tiles, a lone
	// one the body of one. No tile, shape or staging changes a value.
	m := max(1, min(expertTuning.MaxTile, ceilDiv(slots, experts)))
	key := quantKey{Kernel: "experts", T: w.DType, M: m, XVec: offs[1]%4 == 0 && k%4 == 0,
		TPR: expertTPR(np), UnrollJ: !ctx.Software(), Bias: bias != nil, fusion: fusion{Pair: pair, Act: act},
		SG: ctx.Features.Subgroups && !matVecNoSubgroups}
	key.RPT, key.WG, _ = shape(m) // x unstaged if no tile fits
	for mm := m; mm >= 1; mm-- {
		rpt, wg, staged := shape(mm)
		heads := uint64(16 + 8*mm) // head, tslot, txrow
		if !staged || stageBytes(w.DType, key.TPR, 1, mm, rpt, wg)+heads <= uint64(ctx.Limits.MaxComputeWorkgroupStorageSize) {
			key.M, key.RPT, key.WG, key.StageX = mm, rpt, wg, staged
			if staged {
				key.U = 1
			}
			break
		}
	}
	blocks := ceilDiv(n, key.WG/key.TPR*key.RPT/pairs)
	maxDim := ctx.Limits.MaxComputeWorkgroupsPerDimension
	if maxDim == 0 {
		maxDim = 65535
	}
	if uint32(blocks) > maxDim || uint32(used) > maxDim {
		return fmt.Errorf("ops.MatVecExperts: %d row blocks × %d experts exceed %d workgroups per dimension", blocks, used, maxDim)
	}
	pipe, err := quantPipeline(ctx, key)
	if err != nil {
		return err
	}
	prm := quantParams{Rows: uint32(n), K: uint32(k), NP: uint32(np), WOff: offs[0], WRow: uint32(rowUnits),
		XOff: offs[1], XStride: uint32(k), DOff: offs[2], DStride: uint32(n),
		fusionParams: fusionParams{PairOff: uint32(n)},
		expertParams: expertParams{EStride: uint32(pairs * n * rowUnits), XPer: uint32(xPer), ROff: offs[3], NExp: uint32(experts)}}
	if bias != nil {
		prm.BOff = offs[4]
	}
	return enc.Dispatch(pipe, prm, args, uint32(blocks), uint32(used), 1)
}
