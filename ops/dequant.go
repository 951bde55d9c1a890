package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

// halfKey specialises wgsl/dequant_half.wgsl (f16 and bf16 sources).
type halfKey struct {
	Src    DType
	DstF16 bool
	Embed  bool
}

func (k halfKey) String() string {
	op := "dequant"
	if k.Embed {
		op = "embed"
	}
	d := "f32"
	if k.DstF16 {
		d = "f16"
	}
	return fmt.Sprintf("%s_%s_d%s", op, k.Src, d)
}

// halfParams mirrors Params in wgsl/dequant_half.wgsl.
type halfParams struct {
	N, K       uint32
	SOff, DOff uint32
	XOff       uint32
	IDLo, IDHi uint32
	Vocab      uint32
	ZeroOOB    uint32
}

func halfPipeline(ctx *gpu.Context, key halfKey) (*gpu.Pipeline, error) {
	return ctx.Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("dequant_half.wgsl", map[string]any{
			"Embed": key.Embed, "DstF16": key.DstF16, "BF16": key.Src == BF16,
		})
		storage := []gpu.Access{gpu.ReadOnly, gpu.ReadWrite}
		if key.Embed {
			storage = []gpu.Access{gpu.ReadOnly, gpu.ReadOnly, gpu.ReadWrite}
		}
		return gpu.PipelineSpec{Source: src, Storage: storage}, err
	})
}

// sourceRowBytes is the stored size of one row of k elements.
func sourceRowBytes(dt DType, k int) uint64 {
	return uint64(k / dt.BlockSize() * dt.BlockBytes())
}

func decodable(dt DType) bool { return dt.Quantized() || dt == BF16 || dt == F16 }

// Dequantize decodes src [rows, K] (block-quantised as in GGUF, bf16 or f16;
// a row range of a bigger tensor is fine) into dst (f32 or f16, the same
// shape): f32 values are exactly those of ggml's dequantize_row_*, f16 values
// are those rounded to f16. A quantised source into f16 needs dst to start at
// an even element. Tensors larger than one storage binding are split over
// several dispatches by rows.
func Dequantize(enc *gpu.Encoder, dst, src Tensor) error {
	if !decodable(src.DType) {
		return fmt.Errorf("ops.Dequantize: source %s is not block-quantised, bf16 or f16", src)
	}
	if dst.DType != F32 && dst.DType != F16 {
		return fmt.Errorf("ops.Dequantize: dst %s must be f32 or f16", dst)
	}
	rows, k, err := rowsCols("Dequantize", src)
	if err != nil {
		return err
	}
	if k%src.DType.BlockSize() != 0 {
		return fmt.Errorf("ops.Dequantize: source %s: rows must be whole %s blocks", src, src.DType)
	}
	if len(dst.Shape) == 0 || dst.Shape[len(dst.Shape)-1] != k || dst.Len() != src.Len() {
		return fmt.Errorf("ops.Dequantize: dst %s does not match source %s", dst, src)
	}
	return decodeRows(enc, "Dequantize", dst, src, Tensor{}, rows, k)
}

// EmbedQuant gathers rows of a table [vocab, dim] stored block-quantised, bf16
// or f16 into dst [nTokens, dim] (f32, or f16), decoded: dst[t] =
// table[ids[t]] for ids [nTokens] u32. A row whose id is not below vocab is
// written as zeros; nothing outside the table is read.
func EmbedQuant(enc *gpu.Encoder, dst, table, ids Tensor) error {
	if !decodable(table.DType) {
		return fmt.Errorf("ops.EmbedQuant: table %s is not block-quantised, bf16 or f16", table)
	}
	if len(table.Shape) != 2 {
		return fmt.Errorf("ops.EmbedQuant: table %s must be [vocab, dim]", table)
	}
	dim := table.Shape[1]
	if dim%table.DType.BlockSize() != 0 {
		return fmt.Errorf("ops.EmbedQuant: table %s: rows must be whole %s blocks", table, table.DType)
	}
	if ids.DType != U32 || ids.Len() == 0 {
		return fmt.Errorf("ops.EmbedQuant: ids %s must be a non-empty u32 tensor", ids)
	}
	if dst.DType != F32 && dst.DType != F16 {
		return fmt.Errorf("ops.EmbedQuant: dst %s must be f32 or f16", dst)
	}
	tokens := ids.Len()
	if len(dst.Shape) == 0 || dst.Shape[len(dst.Shape)-1] != dim || dst.Len() != tokens*dim {
		return fmt.Errorf("ops.EmbedQuant: dst %s is not [%d, %d] for ids %s and table %s", dst, tokens, dim, ids, table)
	}
	return decodeRows(enc, "EmbedQuant", dst, table, ids, tokens, dim)
}

// decodeRows records Dequantize (ids.Buf == nil: output row r is source row
// r) or EmbedQuant (output row t is table row ids[t]). A source bigger than
// one binding is walked in row chunks: for Dequantize each chunk writes its
// own rows; for EmbedQuant every chunk sees every id and writes the rows whose
// id falls inside it, and the last chunk also writes the zero rows.
func decodeRows(enc *gpu.Encoder, op string, dst, src, ids Tensor, rows, k int) error {
	ctx := enc.Context()
	embed := ids.Buf != nil
	dstF16 := dst.DType == F16
	srcRows := rows
	if embed {
		srcRows = src.Shape[0]
	}
	srcChunk, err := rowsPerBinding(ctx, src, sourceRowBytes(src.DType, k), srcRows)
	if err != nil {
		return fmt.Errorf("ops.%s: source %s: %w", op, src, err)
	}
	dstChunk := rows
	var dArgs, iArgs []gpu.Arg
	var dOffs, iOffs []uint32
	if embed {
		if dArgs, dOffs, err = binds(op, dst); err != nil {
			return err
		}
		if iArgs, iOffs, err = binds(op, ids); err != nil {
			return err
		}
	} else if dstChunk, err = rowsPerBinding(ctx, dst, uint64(k*dst.DType.Size()), rows); err != nil {
		return fmt.Errorf("ops.%s: dst %s: %w", op, dst, err)
	}

	half := !src.DType.Quantized()
	var pipe *gpu.Pipeline
	bs, bb, ppb := 0, 0, 0
	if half {
		pipe, err = halfPipeline(ctx, halfKey{Src: src.DType, DstF16: dstF16, Embed: embed})
	} else {
		bs, bb, ppb, _ = quantLayout(src.DType)
		kernel := "dequant"
		if embed {
			kernel = "embed"
		}
		pipe, err = quantPipeline(ctx, quantKey{Kernel: kernel, T: src.DType, DstF16: dstF16})
	}
	if err != nil {
		return err
	}

	chunk := srcChunk
	if !embed {
		chunk = min(srcChunk, dstChunk)
	}
	for r0 := 0; r0 < srcRows; r0 += chunk {
		rc := min(chunk, srcRows-r0)
		sa, so, err := binds(op, src.View(r0*k, rc, k))
		if err != nil {
			return err
		}
		// Output rows of this dispatch, and its bindings.
		outRows, dOff := rows, uint32(0)
		var args []gpu.Arg
		if embed {
			dOff = dOffs[0]
			args = []gpu.Arg{sa[0], iArgs[0], dArgs[0]}
		} else {
			outRows = rc
			da, do, err := binds(op, dst.View(r0*k, rc, k))
			if err != nil {
				return err
			}
			dOff = do[0]
			args = []gpu.Arg{sa[0], da[0]}
		}
		if dstF16 && !half && dOff%2 != 0 {
			return fmt.Errorf("ops.%s: f16 dst %s must start at an even element for a %s source", op, dst, src.DType)
		}
		idLo, idHi, zero := uint32(r0), uint32(r0+rc), uint32(0)
		if r0+rc >= srcRows {
			zero = 1
		}
		var xOff uint32
		if embed {
			xOff = iOffs[0]
		}
		if half {
			n := outRows * k
			threads := n
			if dstF16 {
				threads = n/2 + 1
			}
			gx, gy := ctx.Grid(uint32(ceilDiv(threads, 256)))
			err = enc.Dispatch(pipe, halfParams{
				N: uint32(n), K: uint32(k), SOff: so[0], DOff: dOff, XOff: xOff,
				IDLo: idLo, IDHi: idHi, Vocab: uint32(srcRows), ZeroOOB: zero,
			}, args, gx, gy, 1)
		} else {
			np := k / bs * ppb
			gx, gy := ctx.Grid(uint32(ceilDiv(outRows*np, 256)))
			err = enc.Dispatch(pipe, quantParams{
				Rows: uint32(outRows), K: uint32(k), NP: uint32(np),
				WOff: so[0], WRow: uint32(k / bs * bb),
				XOff: xOff, DOff: dOff, DStride: uint32(k),
				IDLo: idLo, IDHi: idHi, Vocab: uint32(srcRows), ZeroOOB: zero,
			}, args, gx, gy, 1)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
