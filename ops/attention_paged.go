package ops

import (
	"fmt"
	"math"

	"github.com/wgllm/wgllm/runtime/gpu"
)

// PagedOptions are the per-call settings of AttentionPaged. What varies
// per sequence (its length, the position of its first query, its block
// table row) is in the seqInfo tensor, not here.
type PagedOptions struct {
	// Causal masks key j for query i of a sequence when j > qOffset+i.
	Causal bool
	// MaxKVLen bounds the kvLen of every sequence; it only sizes the
	// split-K grid (and so the work for short batches). 0 means the block
	// table's capacity, maxBlocksPerSeq × blockSize. A sequence longer
	// than the bound is still computed correctly, but its chunking then
	// depends on the bound, which gives up batch invariance.
	MaxKVLen int
	// Scale multiplies q·k; 0 means 1/sqrt(headDim).
	Scale float32
	// Variant forces a kernel; the zero value picks one from nq and the
	// group size, as Attention does (never from the batch).
	Variant AttentionVariant
	// MaxWorkgroupStorage caps the workgroup memory (bytes), as in
	// AttentionOptions.
	MaxWorkgroupStorage int

	// SoftCap, when > 0, caps every score after Scale and before the mask
	// and softmax: s = SoftCap·tanh(s/SoftCap). Gemma 2's
	// attn_logit_softcapping (50); llama.cpp's build_attn_mha
	// (hparams.attn_soft_cap), which scales Q by the query pre-attention
	// scale first and passes kq_scale 1: pass that scale as Scale. 0 is
	// off.
	SoftCap float32
	// Window, when > 0, is sliding-window attention: a query at absolute
	// position p sees key j only when p-j < Window (llama.cpp
	// LLAMA_SWA_TYPE_STANDARD, masked if p1-p0 >= n_swa; the local layers
	// of Gemma 2/3, sliding_window). Also without Causal, with query i at
	// qOffset+i. The decode kernel cuts only the keys from the first
	// query's window start into chunks, and both kernels skip the key
	// tiles before a row tile's window. 0 is off.
	Window int
	// Sinks, when set, is f32 [heads]: gpt-oss's attention sinks. Head h's
	// softmax denominator gains exp(Sinks[h] - max), with max taken over
	// the scaled scores and the sink; the sink adds no value
	// (ggml_soft_max_add_sinks, ggml_flash_attn_ext_add_sinks). A row that
	// sees no key still gets zeros. It must not share out's buffer.
	Sinks *Tensor
}

func (o PagedOptions) mods() attnMods { return attnMods{o.SoftCap, o.Window, o.Sinks} }

// SeqInfoFields is the number of u32 per sequence in AttentionPaged's
// seqInfo tensor: kvLen, qOffset, block table row.
const SeqInfoFields = 3

// AttentionPaged is Attention over a paged KV cache (vLLM-style): the keys
// and values of all sequences live in fixed-size blocks of one shared pool,
// and each sequence reads its own through a row of a block table. Several
// sequences of different lengths are computed in one dispatch (plus the
// split-K merge), which is what a continuous-batching decode step needs.
//
//	q, out:       f32 [nSeq, nq, heads, headDim]
//	kPool, vPool: f32, f16 or q8_0 [nBlocks, blockSize, kvHeads, headDim]
//	              (q8_0: whole pools as kv_pool.go lays them out, read and
//	              dequantised in registers)
//	blockTable:   u32 [tableRows, maxBlocksPerSeq]
//	seqInfo:      u32 [nSeq, 3] = (kvLen, qOffset, table row) per sequence
//
// Sequence s has kvLen keys; key j lies in block blockTable[row][j /
// blockSize] at slot j % blockSize. With Causal its query i sits at
// absolute position qOffset+i and sees keys [0, qOffset+i]; for nq new
// tokens appended to a sequence of kvLen tokens (them included) qOffset is
// kvLen-nq. Queries past what a sequence needs (padding, when sequences
// have fewer than nq new tokens) are computed like the others and should
// be ignored; a query that sees no key (kvLen 0) gets zeros.
//
// seqInfo and blockTable are read on the GPU, so they are not validated
// here: a kvLen beyond the table row's capacity is clamped to it, and row
// and block ids beyond the table or the pool are clamped into them (wrong
// results, never a read outside the buffers). Table entries at or past
// ceil(kvLen / blockSize) are never read.
//
// Each sequence's reduction order depends only on its own kvLen and
// qOffset (not on the batch, nor on where its blocks lie), so its output is
// bit-identical whether it is computed alone or with others, and equal to
// Attention over the same keys stored contiguously.
//
// kvHeads must divide heads; headDim must be a multiple of 4, at most 256.
// out may not share a buffer with any input. The split-K variant uses the
// per-context scratch buffer of Attention (see ReleaseAttentionScratch).
func AttentionPaged(enc *gpu.Encoder, out, q, kPool, vPool, blockTable, seqInfo Tensor, opt PagedOptions) error {
	d, err := checkPaged(out, q, kPool, vPool, blockTable, seqInfo, &opt)
	if err != nil {
		return err
	}
	ctx := enc.Context()
	smem := int(ctx.Limits.MaxComputeWorkgroupStorageSize)
	if opt.MaxWorkgroupStorage > 0 && opt.MaxWorkgroupStorage < smem {
		smem = opt.MaxWorkgroupStorage
	}
	mods := opt.mods()
	ts := []Tensor{q, kPool, vPool, out, blockTable, seqInfo}
	if mods.Sinks != nil {
		ts = append(ts, *mods.Sinks)
	}
	args, offs, err := binds("AttentionPaged", ts...)
	if err != nil {
		return err
	}
	if kPool.DType == F16 && (offs[1]%2 != 0 || offs[2]%2 != 0) {
		return fmt.Errorf("ops.AttentionPaged: f16 pool views must start at an even element (offsets %d, %d)", kPool.Off, vPool.Off)
	}
	var scOff uint32
	if kPool.DType == Q8_0 {
		for _, pool := range []Tensor{kPool, vPool} {
			if scOff, err = kvQ8ScaleWord(pool); err != nil {
				return fmt.Errorf("ops.AttentionPaged: %w", err)
			}
		}
	}
	prm := attnParams{
		NRows: uint32(d.nq * d.group), Group: uint32(d.group),
		QOff: offs[0], KOff: offs[1], VOff: offs[2], OOff: offs[3],
		QBStride: uint32(d.nq * d.heads * d.hd), QTStride: uint32(d.heads * d.hd),
		KVTStride: uint32(d.kvHeads * d.hd),
		NKVH:      uint32(d.kvHeads), Batch: uint32(d.batch),
		NBlocks: uint32(d.blocks), TblOff: offs[4], TblStride: uint32(d.tableWidth), TblRows: uint32(d.tableRows),
		InfoOff: offs[5], KVScOff: scOff,
	}
	var sinkOff uint32
	if mods.Sinks != nil {
		sinkOff = offs[6]
	}
	mods.setParams(&prm, opt.Scale, sinkOff)
	feat := mods.features()
	variant := pickAttentionVariant(opt.Variant, d.nq, d.group)
	if variant == AttentionPrefill {
		tiles, err := choosePrefillTiles(d.hd, smem)
		if err != nil {
			return fmt.Errorf("ops.AttentionPaged: %w", err)
		}
		key := attnPagedPrefillKey{attnPrefillKey{D: d.hd, KV: kPool.DType, Causal: opt.Causal, T: tiles, attnFeatures: feat}, d.blockSize}
		pipe, err := ctx.Pipeline(key, key.build)
		if err != nil {
			return err
		}
		rowTiles := ceilDiv(d.nq*d.group, tiles.BQ)
		prm.RowTiles = uint32(rowTiles)
		gx, gy := ctx.Grid(uint32(rowTiles))
		return enc.Dispatch(pipe, prm, args, gx, gy, uint32(d.batch*d.kvHeads))
	}

	tiles, err := chooseSplitTiles(d.hd, kPool.DType, d.nq*d.group, smem)
	if err != nil {
		return fmt.Errorf("ops.AttentionPaged: %w", err)
	}
	rowTiles := ceilDiv(d.nq*d.group, tiles.RT)
	prm.RowTiles = uint32(rowTiles)
	maxSplit := attentionSplits(ctx, d.kvHeads, rowTiles)
	prm.MaxSplit = uint32(maxSplit)
	// The grid has room for the most chunks any sequence of at most
	// MaxKVLen keys uses; each sequence derives its own chunking from its
	// kvLen in the shader, and chunks past its end record "no key seen".
	// With a causal window a sequence's chunks span at most Window+nq-1
	// keys (from its first query's window start to its last query).
	span := opt.MaxKVLen
	if opt.Window > 0 && opt.Causal {
		span = min(span, opt.Window+d.nq-1)
	}
	nSplit := min(maxSplit, ceilDiv(span, tiles.BK))
	partials := d.batch * d.nq * d.heads * nSplit
	scratchArg, err := splitScratch(ctx, "AttentionPaged", partials, d.hd)
	if err != nil {
		return err
	}
	prm.NSplit = uint32(nSplit)
	prm.PartOff, prm.MLOff = 0, uint32(partials*d.hd)

	skey := attnPagedSplitKey{attnSplitKey{D: d.hd, KV: kPool.DType, Causal: opt.Causal, T: tiles, attnFeatures: feat.split()}, d.blockSize}
	spipe, err := ctx.Pipeline(skey, skey.build)
	if err != nil {
		return err
	}
	ckey := attnCombineKey{D: d.hd, WG: combineWG, Sinks: feat.Sinks}
	cpipe, err := ctx.Pipeline(ckey, ckey.build)
	if err != nil {
		return err
	}
	if err := enc.Dispatch(spipe, prm, []gpu.Arg{args[0], args[1], args[2], scratchArg, args[4], args[5]},
		uint32(nSplit), uint32(rowTiles), uint32(d.batch*d.kvHeads)); err != nil {
		return err
	}
	gx, gy := ctx.Grid(uint32(d.batch * d.nq * d.heads)) // a workgroup per output row
	return enc.Dispatch(cpipe, prm, combineArgs(scratchArg, args[3], args[6:]), gx, gy, 1)
}

// attnPagedPrefillKey and attnPagedSplitKey are the paged builds of the
// contiguous kernels (the same shader text with the block-table lookup),
// specialised on the block size.
type attnPagedPrefillKey struct {
	attnPrefillKey
	BS int
}

func (k attnPagedPrefillKey) String() string {
	return fmt.Sprintf("%s_paged_bs%d", k.attnPrefillKey, k.BS)
}

func (k attnPagedPrefillKey) build() (gpu.PipelineSpec, error) { return k.render(k.BS) }

type attnPagedSplitKey struct {
	attnSplitKey
	BS int
}

func (k attnPagedSplitKey) String() string {
	return fmt.Sprintf("%s_paged_bs%d", k.attnSplitKey, k.BS)
}

func (k attnPagedSplitKey) build() (gpu.PipelineSpec, error) { return k.render(k.BS) }

type pagedShape struct {
	batch, nq, heads, hd, kvHeads, group     int
	blocks, blockSize, tableRows, tableWidth int
}

// checkPaged validates AttentionPaged's operands and fills opt's defaults.
func checkPaged(out, q, k, v, table, info Tensor, opt *PagedOptions) (pagedShape, error) {
	var d pagedShape
	fail := func(format string, a ...any) (pagedShape, error) {
		return d, fmt.Errorf("ops.AttentionPaged: q %s, kPool %s, vPool %s, blockTable %s, seqInfo %s, out %s: %s",
			q, k, v, table, info, out, fmt.Sprintf(format, a...))
	}
	if len(q.Shape) != 4 {
		return fail("q must be [nSeq, nq, heads, headDim]")
	}
	d.batch, d.nq, d.heads, d.hd = q.Shape[0], q.Shape[1], q.Shape[2], q.Shape[3]
	if len(k.Shape) != 4 {
		return fail("kPool must be [nBlocks, blockSize, kvHeads, headDim]")
	}
	d.blocks, d.blockSize, d.kvHeads = k.Shape[0], k.Shape[1], k.Shape[2]
	if len(table.Shape) != 2 {
		return fail("blockTable must be [rows, maxBlocksPerSeq]")
	}
	d.tableRows, d.tableWidth = table.Shape[0], table.Shape[1]
	switch {
	case q.DType != F32 || out.DType != F32:
		return fail("q and out must be f32")
	case k.DType != v.DType || !IsKVPoolType(k.DType):
		return fail("kPool and vPool must both be f32, f16 or q8_0")
	case k.DType == Q8_0 && (k.Shape[2]*k.Shape[3])%Q8_0.BlockSize() != 0:
		return fail("q8_0 pool rows of %d×%d values are not whole blocks of %d", k.Shape[2], k.Shape[3], Q8_0.BlockSize())
	case table.DType != U32 || info.DType != U32:
		return fail("blockTable and seqInfo must be u32")
	case !equalShape(k.Shape, v.Shape):
		return fail("kPool and vPool shapes differ")
	case !equalShape(out.Shape, q.Shape):
		return fail("out must have q's shape")
	case !equalShape(info.Shape, []int{d.batch, SeqInfoFields}):
		return fail("seqInfo must be [nSeq, %d] = (kvLen, qOffset, table row) with nSeq = %d", SeqInfoFields, d.batch)
	case k.Shape[3] != d.hd:
		return fail("head dims of q and the pools differ")
	case d.batch <= 0 || d.nq <= 0 || d.heads <= 0 || d.hd <= 0 || d.kvHeads <= 0 ||
		d.blocks <= 0 || d.blockSize <= 0 || d.tableRows <= 0 || d.tableWidth <= 0:
		return fail("empty dimension")
	case d.hd%4 != 0 || d.hd > maxAttentionHeadDim:
		return fail("head dim %d must be a multiple of 4 and at most %d", d.hd, maxAttentionHeadDim)
	case d.heads%d.kvHeads != 0:
		return fail("%d kv heads do not divide %d heads", d.kvHeads, d.heads)
	case out.Buf == q.Buf || out.Buf == k.Buf || out.Buf == v.Buf || out.Buf == table.Buf || out.Buf == info.Buf:
		return fail("out must not share a buffer with an input")
	case !fitsU32(q.Off+q.Len(), k.Off+k.Len(), v.Off+v.Len(), out.Off+out.Len(), table.Off+table.Len(), info.Off+info.Len(),
		d.tableWidth*d.blockSize):
		return fail("too large for 32-bit indexing")
	}
	d.group = d.heads / d.kvHeads
	capacity := d.tableWidth * d.blockSize
	if opt.MaxKVLen == 0 {
		opt.MaxKVLen = capacity
	}
	if opt.MaxKVLen < 1 || opt.MaxKVLen > capacity {
		return fail("maxKVLen %d outside [1, %d] (table width × block size)", opt.MaxKVLen, capacity)
	}
	if opt.Scale == 0 {
		opt.Scale = float32(1 / math.Sqrt(float64(d.hd)))
	}
	if math.IsNaN(float64(opt.Scale)) || math.IsInf(float64(opt.Scale), 0) {
		return fail("scale %v is not finite", opt.Scale)
	}
	if opt.Variant > AttentionSplitK {
		return fail("unknown variant %v", opt.Variant)
	}
	if err := opt.mods().check(d.heads, out); err != nil {
		return fail("%v", err)
	}
	return d, nil
}
