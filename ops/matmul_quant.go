package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

// matMulQuantTile is the output tile of one workgroup of MatMulQuant: TY x
// TX threads, each computing TM x TN outputs (multiples of 4: vec4 reads of
// the staged slices), K walked in slices of BK (a multiple of 32).
type matMulQuantTile struct{ TY, TX, TM, TN, BK int }

func (t matMulQuantTile) bm() int { return t.TY * t.TM }
func (t matMulQuantTile) bn() int { return t.TX * t.TN }
func (t matMulQuantTile) wg() int { return t.TY * t.TX }

// storage is the workgroup memory of the tile: BK-deep f32 slices of x and W.
func (t matMulQuantTile) storage() int { return 4 * t.BK * (t.bm() + t.bn()) }

func (t matMulQuantTile) String() string { return fmt.Sprintf("%dx%dx%d", t.bm(), t.bn(), t.BK) }

// matMulQuantTiles, largest first: 128x128 for prefill, down to 16x32 for
// decode batches of 9..16 rows over narrow weights. 32x64 takes 64-deep K
// slices (few workgroups, each waiting on one slice's loads at a time, so
// each slice should carry more bytes); deeper slices on the smaller tiles
// would hold too many loads in flight per thread (16x32x128 kept 8 blocks
// and 16 vec4 in registers, and lavapipe failed on it). 32x64x32 is the
// fallback for devices with the WebGPU default of 16 KiB of workgroup
// memory. Every tile gives the same bits (each output is one fma chain over
// k in order).
var matMulQuantTiles = []matMulQuantTile{
	{TY: 16, TX: 16, TM: 8, TN: 8, BK: 32}, // 128x128, 256 threads, 32 KiB
	{TY: 16, TX: 16, TM: 4, TN: 4, BK: 32}, // 64x64, 256 threads, 16 KiB
	{TY: 8, TX: 16, TM: 4, TN: 4, BK: 64},  // 32x64, 128 threads, 24 KiB
	{TY: 4, TX: 16, TM: 4, TN: 4, BK: 32},  // 16x64, 64 threads, 10 KiB
	{TY: 4, TX: 8, TM: 4, TN: 4, BK: 32},   // 16x32, 32 threads, 6 KiB
	{TY: 8, TX: 16, TM: 4, TN: 4, BK: 32},  // 32x64, 128 threads, 12 KiB
}

// matMulQuantMinWorkgroups is how many workgroups a tile must give to be
// chosen over a smaller one: about one per SM of a large GPU (H100: 132).
const matMulQuantMinWorkgroups = 120

// matMulQuantForce, when not negative, is the index in matMulQuantTiles that
// every call uses where it fits the device (tests and benchmarks of each tile).
var matMulQuantForce = -1

// matMulQuantPick is the largest tile no taller than m needs (rounded up to
// a power of two, at least 16) that fits the device and still gives
// matMulQuantMinWorkgroups workgroups for z outputs of [m, n], else the one
// that gives the most (the first such: the deeper K slice). The choice
// never changes results.
func matMulQuantPick(ctx *gpu.Context, m, n, z, extra int) matMulQuantTile {
	return pickTile(ctx, matMulQuantTiles, m, n, z, matMulQuantForce, extra)
}

// expertsHeadBytes is the experts kernels' workgroup memory beside the
// tiles (the routing head, a vec4<u32>), which a tile must leave room for.
const expertsHeadBytes = 16

// matMulPairTiles are the tiles of MatMulExpertsGated: TN = 8, so that a
// thread's two column groups are an output's gate and up.
var matMulPairTiles = []matMulQuantTile{
	{TY: 16, TX: 16, TM: 8, TN: 8, BK: 32}, // 128x128 (64 outputs wide), 256 threads, 32 KiB
	{TY: 16, TX: 16, TM: 4, TN: 8, BK: 32}, // 64x128, 256 threads, 24 KiB
	{TY: 8, TX: 8, TM: 4, TN: 8, BK: 32},   // 32x64, 64 threads, 12 KiB
}

// pickTile is matMulQuantPick over a list of tiles, n counting tile columns;
// force (when not negative) picks tiles[force] where it fits; extra is the
// kernel's workgroup memory beyond the tiles.
func pickTile(ctx *gpu.Context, tiles []matMulQuantTile, m, n, z, force, extra int) matMulQuantTile {
	fits := func(t matMulQuantTile) bool {
		return t.storage()+extra <= int(ctx.Limits.MaxComputeWorkgroupStorageSize) &&
			t.wg() <= int(ctx.Limits.MaxComputeInvocationsPerWorkgroup)
	}
	if force >= 0 && force < len(tiles) && fits(tiles[force]) {
		return tiles[force]
	}
	// The tallest tile worth its idle rows: m rounded up to a power of two,
	// at least 16 and at least the shortest tile that fits.
	tall := 16
	for tall < m && tall < 1<<20 {
		tall *= 2
	}
	shortest := 0
	for _, t := range tiles {
		if fits(t) && (shortest == 0 || t.bm() < shortest) {
			shortest = t.bm()
		}
	}
	tall = max(tall, shortest)
	var best matMulQuantTile
	bestWGs := 0
	for _, t := range tiles {
		if !fits(t) || t.bm() > tall {
			continue
		}
		wgs := ceilDiv(m, t.bm()) * ceilDiv(n, t.bn()) * z
		if wgs >= matMulQuantMinWorkgroups {
			return t
		}
		if wgs > bestWGs {
			best, bestWGs = t, wgs
		}
	}
	return best
}

// matMulQuantKey specialises wgsl/matmul_quant.wgsl: the weight type, the
// tile, whether x takes the 16-byte load path, and the experts form
// (MatMulExperts) with or without a bias.
type matMulQuantKey struct {
	T DType
	matMulQuantTile
	VA            bool
	Experts, Bias bool
	Pair          bool // gate and up rows, act in the epilogue (MatMulExpertsGated)
	Act           Activation
}

func (k matMulQuantKey) String() string {
	load := "xscalar"
	if k.VA {
		load = "xvec4"
	}
	op := "matmul_quant"
	if k.Experts {
		op = "matmul_experts"
		if k.Bias {
			op += "_bias"
		}
		if k.Pair {
			op += "_pair_" + k.Act.String()
		}
	}
	return fmt.Sprintf("%s_%s_%s_t%dx%d_%s", op, k.T, k.matMulQuantTile, k.TY, k.TX, load)
}

// matMulQuantParams mirrors Params in wgsl/matmul_quant.wgsl.
type matMulQuantParams struct {
	M, N, K    uint32
	XOff, XRS  uint32
	WOff, WRow uint32
	DOff, DRS  uint32
	// experts (MatMulExperts)
	EStride, XPer uint32
	ROff, NExp    uint32
	BOff          uint32
}

// MatMulQuant computes dst[m, n] = sum_k x[m, k] w[n, k] for a weight w
// [N, K] stored block-quantised (the types MatVecQuant takes) or bf16, read
// in place, x [M, K] f32 and dst [M, N] f32: the prefill projection without
// a dequantised copy of the weight. Each output is one fma chain over k in
// order, so a row's result depends on neither M nor its batch-mates, and the
// bits are those of Dequantize to f32 followed by MatMul. Operands larger
// than one storage binding are split (rows of w, rows of x and dst) into
// dispatches that give the same bits; a single row over the limit is an
// error wrapping gpu.ErrBindingTooLarge.
func MatMulQuant(enc *gpu.Encoder, dst, x, w Tensor) error {
	shapes := func() string { return fmt.Sprintf("x %s, w %s, dst %s", x, w, dst) }
	bs, bb, _, ok := quantLayout(w.DType)
	switch {
	case !ok:
		return fmt.Errorf("ops.MatMulQuant: weight is not block-quantised or bf16: %s", shapes())
	case len(w.Shape) != 2 || len(x.Shape) != 2 || len(dst.Shape) != 2:
		return fmt.Errorf("ops.MatMulQuant: want x [M, K], w [N, K], dst [M, N]: %s", shapes())
	}
	n, k := w.Shape[0], w.Shape[1]
	m := x.Shape[0]
	switch {
	case n <= 0 || k <= 0 || m <= 0:
		return fmt.Errorf("ops.MatMulQuant: empty operand: %s", shapes())
	case k%w.DType.BlockSize() != 0:
		return fmt.Errorf("ops.MatMulQuant: weight rows must be whole %s blocks: %s", w.DType, shapes())
	case x.Shape[1] != k:
		return fmt.Errorf("ops.MatMulQuant: K differs: %s", shapes())
	case dst.Shape[0] != m || dst.Shape[1] != n:
		return fmt.Errorf("ops.MatMulQuant: dst shape is not [M, N]: %s", shapes())
	case x.DType != F32 || dst.DType != F32:
		return fmt.Errorf("ops.MatMulQuant: x and dst must be f32: %s", shapes())
	case dst.Buf == x.Buf || dst.Buf == w.Buf:
		return fmt.Errorf("ops.MatMulQuant: dst must not share a buffer with its inputs: %s", shapes())
	}
	rowUnits := k / bs * bb // W units (bytes; bf16: halves) per weight row
	rowBytes := uint64(rowUnits)
	if w.DType == BF16 {
		rowUnits, rowBytes = k, uint64(2*k)
	}
	ctx := enc.Context()
	tile := matMulQuantPick(ctx, m, n, 1, 0)
	if tile.wg() == 0 {
		return fmt.Errorf("ops.MatMulQuant: no tile fits %d bytes of workgroup memory: %s",
			ctx.Limits.MaxComputeWorkgroupStorageSize, shapes())
	}
	maxDim := int(ctx.MaxWorkgroupsPerDim())
	nRows, err := rowsPerBinding(ctx, w, rowBytes, n)
	if err != nil {
		return fmt.Errorf("ops.MatMulQuant: weight: %s: %w", shapes(), err)
	}
	nRows = min(nRows, maxDim*tile.bn())
	mRowsX, err := matRowsPerBinding(ctx, x, uint64(4*k), m)
	if err != nil {
		return fmt.Errorf("ops.MatMulQuant: x: %s: %w", shapes(), err)
	}
	mRowsD, err := matRowsPerBinding(ctx, dst, uint64(4*n), m)
	if err != nil {
		return fmt.Errorf("ops.MatMulQuant: dst: %s: %w", shapes(), err)
	}
	mRows := matChunk(min(mRowsX, mRowsD, maxDim*tile.bm()), m)
	for m0 := 0; m0 < m; m0 += mRows {
		mc := min(mRows, m-m0)
		xv, dv := x.View(m0*k, mc, k), dst.View(m0*n, mc, n)
		for n0 := 0; n0 < n; n0 += nRows {
			nc := min(nRows, n-n0)
			if err := matMulQuantDispatch(enc, tile, xv, w.View(n0*k, nc, k), dv, n0, rowUnits); err != nil {
				return fmt.Errorf("ops.MatMulQuant: %s: %w", shapes(), err)
			}
		}
	}
	return nil
}

// matMulQuantDispatch records one dispatch: x [mc, K] and w [nc, K] whole,
// into columns n0 .. n0+nc of d's rows.
func matMulQuantDispatch(enc *gpu.Encoder, tile matMulQuantTile, x, w, d Tensor, n0, rowUnits int) error {
	ctx := enc.Context()
	args, offs, err := binds("MatMulQuant", w, x, d)
	if err != nil {
		return err
	}
	m, nc, k, n := x.Shape[0], w.Shape[0], x.Shape[1], d.Shape[1]
	key := matMulQuantKey{T: w.DType, matMulQuantTile: tile, VA: offs[1]%4 == 0 && k%4 == 0}
	pipe, err := matMulQuantPipeline(ctx, key)
	if err != nil {
		return err
	}
	return enc.Dispatch(pipe, matMulQuantParams{
		M: uint32(m), N: uint32(nc), K: uint32(k),
		XOff: offs[1], XRS: uint32(k),
		WOff: offs[0], WRow: uint32(rowUnits),
		DOff: offs[2] + uint32(n0), DRS: uint32(n),
	}, args, uint32(ceilDiv(m, tile.bm())), uint32(ceilDiv(nc, tile.bn())), 1)
}

func matMulQuantPipeline(ctx *gpu.Context, key matMulQuantKey) (*gpu.Pipeline, error) {
	return ctx.Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("matmul_quant.wgsl", matMulQuantTemplate(key))
		storage := []gpu.Access{gpu.ReadOnly, gpu.ReadOnly, gpu.ReadWrite}
		if key.Experts {
			storage = append(storage, gpu.ReadOnly)
		}
		if key.Bias {
			storage = append(storage, gpu.ReadOnly)
		}
		return gpu.PipelineSpec{Source: src, Storage: storage}, err
	})
}

func matMulQuantTemplate(k matMulQuantKey) map[string]any {
	bs, bb, ppb, _ := quantLayout(k.T)
	rows := make([]matMulRow, k.TM)
	for r := range rows {
		rows[r] = matMulRow{R: r, V: r / 4, I: r % 4, C: "xyzw"[r%4 : r%4+1]}
	}
	// bf16 tasks: group I of 16 values is group J of piece S.
	type halfGroup struct{ I, S, J, K int }
	halves := make([]halfGroup, 4)
	for i := range halves {
		halves[i] = halfGroup{I: i, S: i / 2, J: i % 2, K: 4 * i}
	}
	wg, bm, bn := k.wg(), k.bm(), k.bn()
	mEnd, wBase := "p.m", "p.w_off"
	if k.Experts {
		mEnd, wBase = "mend", "wbase"
	}
	return map[string]any{
		"T": k.T.String(), "BS": bs, "BB": bb, "PPB": ppb, "VA": k.VA, "Experts": k.Experts, "Bias": k.Bias, "Pair": k.Pair, "Act": k.Act.String(),
		"MEnd": mEnd, "WBase": wBase,
		"WG": wg, "TX": k.TX, "TY": k.TY, "TM": k.TM, "TN": k.TN, "BM": bm, "BN": bn,
		"BK": k.BK, "AsSize": k.BK * bm / 4, "BsSize": k.BK * bn / 4,
		"SA": matSeq(ceilDiv(bm*k.BK/4, wg)), "SB": matSeq(ceilDiv(bn*k.BK/16, wg)),
		"AV": matSeq(k.TM / 4), "BV": matSeq(k.TN / 4), "Rows": rows, "Seq4": matSeq(4), "Halves": halves,
		"Comps": []matMulComp{{0, "x"}, {1, "y"}, {2, "z"}, {3, "w"}},
	}
}
