package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

type scatterKey struct {
	Src, Dst DType
	WG       int
}

func (k scatterKey) String() string {
	return fmt.Sprintf("scatter_rows_%s_to_%s_wg%d", k.Src, k.Dst, k.WG)
}

type scatterParams struct {
	N, Cols, DRows, PerRow uint32
	SOff, DOff, IOff       uint32
	ScOff                  uint32 // q8_0 dst: word of the scale plane
}

// ScatterSkip as a row index makes ScatterRows skip that source row (any
// index at or past dst's row count does).
const ScatterSkip = ^uint32(0)

// ScatterRows copies each row of src to the dst row its index names, in
// one dispatch:
//
//	dst[index[i], :] = src[i, :]   for i < n with index[i] < dstRows
//
// src is f32 or f16 [n, cols]; dst is f32 or f16 [dstRows, cols]; index is
// u32 with n elements. It converts f32 to f16 (rounding to a neighbouring
// f16; WGSL lets the device pick which), f16 to f32 exactly, and copies
// f16 to f16 bit for bit. This is the KV-cache write of a paged cache:
// the new K (or V) rows of several sequences, each to its pool slot
// (block·blockSize + offset). Rows whose index is out of range (e.g.
// ScatterSkip, for padding) are skipped; index is read on the GPU, so it is
// not validated here. Indices must be distinct: two rows scattered to one
// dst row race. An f16 dst needs an even cols and an even offset (rows of
// whole 4-byte words). A q8_0 dst is a whole KV pool (kv_pool.go) with
// rows of whole blocks: each row's blocks are quantised as ggml's
// quantize_row_q8_0_ref does. dst may not share a buffer with src or index.
func ScatterRows(enc *gpu.Encoder, dst, src, index Tensor) error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("ops.ScatterRows: dst %s, src %s, index %s: %s", dst, src, index, fmt.Sprintf(format, a...))
	}
	if (src.DType != F32 && src.DType != F16) || !IsKVPoolType(dst.DType) {
		return fail("src must be f32 or f16, dst f32, f16 or q8_0")
	}
	if len(dst.Shape) != 2 || len(src.Shape) != 2 {
		return fail("dst must be [dstRows, cols] and src [n, cols]")
	}
	n, cols, dRows := src.Shape[0], src.Shape[1], dst.Shape[0]
	switch {
	case index.DType != U32:
		return fail("index must be u32")
	case n <= 0 || cols <= 0 || dRows <= 0:
		return fail("empty dimension")
	case dst.Shape[1] != cols:
		return fail("rows of %d and %d elements", dst.Shape[1], cols)
	case index.Len() != n:
		return fail("%d indices for %d rows", index.Len(), n)
	case dst.DType == F16 && (cols%2 != 0 || dst.Off%2 != 0):
		return fail("an f16 dst needs an even row length and offset (rows of whole words)")
	case dst.DType == Q8_0 && cols%Q8_0.BlockSize() != 0:
		return fail("q8_0 rows of %d values are not whole blocks of %d", cols, Q8_0.BlockSize())
	case dst.Buf == src.Buf || dst.Buf == index.Buf:
		return fail("dst must not share a buffer with src or index")
	case !fitsU32(dst.Off+dst.Len(), src.Off+src.Len(), index.Off+index.Len()):
		return fail("too large for 32-bit indexing")
	}
	var scOff uint32
	perRow := cols
	switch dst.DType {
	case F16:
		perRow = cols / 2
	case Q8_0:
		perRow = cols / Q8_0.BlockSize()
		var err error
		if scOff, err = kvQ8ScaleWord(dst); err != nil {
			return fail("%v", err)
		}
	}
	if uint64(n)*uint64(perRow) >= 1<<32 {
		return fail("too many elements for one dispatch")
	}
	args, offs, err := binds("ScatterRows", src, index, dst)
	if err != nil {
		return err
	}
	key := scatterKey{Src: src.DType, Dst: dst.DType, WG: 256}
	pipe, err := enc.Context().Pipeline(key, func() (gpu.PipelineSpec, error) {
		text, err := wgsl.Render("scatter_rows.wgsl", map[string]any{"Src": key.Src.String(), "Dst": key.Dst.String(), "WG": key.WG})
		return gpu.PipelineSpec{Source: text, Storage: []gpu.Access{gpu.ReadOnly, gpu.ReadOnly, gpu.ReadWrite}}, err
	})
	if err != nil {
		return err
	}
	gx, gy := enc.Context().Grid(uint32(ceilDiv(n*perRow, key.WG)))
	return enc.Dispatch(pipe, scatterParams{
		N: uint32(n), Cols: uint32(cols), DRows: uint32(dRows), PerRow: uint32(perRow),
		SOff: offs[0], DOff: offs[2], IOff: offs[1], ScOff: scOff,
	}, args, gx, gy, 1)
}
