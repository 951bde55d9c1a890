package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
)

// MatMulExperts is MatVecExperts for prefill batches, as a grouped matmul:
// for the slots of a routing table (MoERoute over rows·K slots), slot s
// routed to expert e gets dst[s] = w[e] · x[s/xPer] (+ bias[e] when bias is
// not nil), for stacked expert matrices w [E, N, K] block-quantised or bf16
// (the types MatMulQuant takes), x [slots/xPer, K] f32, bias [E, N] f32 and
// dst [slots, N] f32. A workgroup takes a tile of one expert's slots and a
// tile of N, gathering the slots' x rows, so each expert's weights are read
// once per batch for all its slots (per tile of them), and only the experts
// the table names are read. Each output is one fma chain over k in order
// (then the bias), as in MatMulQuant: a slot's value does not depend on the
// other slots, and equals MatMulQuant of its x row by its expert's matrix.
// The whole of w, x and dst must each fit one storage binding.
func MatMulExperts(enc *gpu.Encoder, dst, w, x, route Tensor, bias *Tensor, xPer int) error {
	return matMulExperts(enc, dst, w, x, route, bias, xPer, false, 0)
}

// MatMulExpertsGated is MatMulExperts for a gated FFN's first half in one
// dispatch, as MatVecExpertsGated: w [E, 2N, K] holds each expert's N gate
// rows then its N up rows (bias [E, 2N] likewise), and dst[s] = act(gate +
// bias, up + bias) [N]: the bits of two MatMulExperts and a GatedAct.
func MatMulExpertsGated(enc *gpu.Encoder, dst, w, x, route Tensor, bias *Tensor, xPer int, act Activation) error {
	if !act.valid() {
		return fmt.Errorf("ops.MatMulExpertsGated: unknown activation %s", act)
	}
	return matMulExperts(enc, dst, w, x, route, bias, xPer, true, act)
}

func matMulExperts(enc *gpu.Encoder, dst, w, x, route Tensor, bias *Tensor, xPer int, pair bool, act Activation) error {
	if len(w.Shape) != 3 || (pair && w.Shape[1]%2 != 0) {
		return fmt.Errorf("ops.MatMulExperts: weight %s must be [experts, N, K] (gated: [experts, 2N, K])", w)
	}
	experts, n, k := w.Shape[0], w.Shape[1], w.Shape[2]
	pairs := 1
	if pair {
		pairs, n = 2, n/2
	}
	bs, bb, _, ok := quantLayout(w.DType)
	if !ok || n <= 0 || k <= 0 || k%w.DType.BlockSize() != 0 {
		return fmt.Errorf("ops.MatMulExperts: weight %s: not block-quantised or bf16, or rows not whole blocks", w)
	}
	if xPer < 1 || x.DType != F32 || x.Len()%k != 0 || x.Len() == 0 {
		return fmt.Errorf("ops.MatMulExperts: x %s must be f32 rows of K=%d (weight %s), xPer %d >= 1", x, k, w, xPer)
	}
	slots := x.Len() / k * xPer
	if dst.DType != F32 || dst.Len() != slots*n {
		return fmt.Errorf("ops.MatMulExperts: dst %s must be f32 [%d, %d]", dst, slots, n)
	}
	if route.DType != U32 || route.Len() != RouteLen(experts, slots) {
		return fmt.Errorf("ops.MatMulExperts: route %s must be u32 of %d (%d experts, %d slots)", route, RouteLen(experts, slots), experts, slots)
	}
	if bias != nil && (bias.DType != F32 || bias.Len() != experts*pairs*n) {
		return fmt.Errorf("ops.MatMulExperts: bias %s must be f32 [%d, %d]", bias, experts, pairs*n)
	}
	ts := []Tensor{w, x, dst, route}
	if bias != nil {
		ts = append(ts, *bias)
	}
	for i := range ts {
		if ts[i].Buf == dst.Buf && i != 2 {
			return fmt.Errorf("ops.MatMulExperts: dst %s must not share a buffer with its inputs", dst)
		}
	}
	ctx := enc.Context()
	for _, t := range ts[:3] {
		if !matFits(ctx, t) {
			return fmt.Errorf("ops.MatMulExperts: %s of %d bytes: %w", t, t.Bytes(), gpu.ErrBindingTooLarge)
		}
	}
	args, offs, err := binds("MatMulExperts", ts...)
	if err != nil {
		return err
	}
	rowUnits := k / bs * bb
	if w.DType == BF16 {
		rowUnits = k
	}
	// The tile as for the average expert's share of the slots; the grid has
	// room for one expert taking them all (the others' extra workgroups
	// return at once).
	used := min(experts, slots)
	tile := matMulQuantPick(ctx, ceilDiv(slots, used), n, used, expertsHeadBytes)
	if pair { // tile columns: gate and up rows
		tile = pickTile(ctx, matMulPairTiles, ceilDiv(slots, used), pairs*n, used, matMulQuantForce, expertsHeadBytes)
	}
	if tile.wg() == 0 {
		return fmt.Errorf("ops.MatMulExperts: no tile fits %d bytes of workgroup memory", ctx.Limits.MaxComputeWorkgroupStorageSize)
	}
	gx, gy := ceilDiv(slots, tile.bm()), ceilDiv(pairs*n, tile.bn())
	if maxDim := int(ctx.MaxWorkgroupsPerDim()); gx > maxDim || gy > maxDim || used > maxDim {
		return fmt.Errorf("ops.MatMulExperts: %d slots × %d rows × %d experts exceed %d workgroups per dimension", slots, n, used, maxDim)
	}
	key := matMulQuantKey{T: w.DType, matMulQuantTile: tile, VA: offs[1]%4 == 0 && k%4 == 0, Experts: true, Bias: bias != nil, Pair: pair, Act: act}
	pipe, err := matMulQuantPipeline(ctx, key)
	if err != nil {
		return err
	}
	prm := matMulQuantParams{
		M: uint32(slots), N: uint32(n), K: uint32(k),
		XOff: offs[1], XRS: uint32(k),
		WOff: offs[0], WRow: uint32(rowUnits),
		DOff: offs[2], DRS: uint32(n),
		EStride: uint32(pairs * n * rowUnits), XPer: uint32(xPer), ROff: offs[3], NExp: uint32(experts),
	}
	if bias != nil {
		prm.BOff = offs[4]
	}
	return enc.Dispatch(pipe, prm, args, uint32(gx), uint32(gy), uint32(used))
}
