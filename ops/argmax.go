package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

type argmaxKey struct {
	WG int
}

func (k argmaxKey) String() string { return fmt.Sprintf("argmax_wg%d", k.WG) }

type argmaxParams struct {
	Rows, Cols    uint32
	XOff, XStride uint32
	DOff          uint32
}

// argmaxWG is the workgroup size: one workgroup scans one row.
const argmaxWG = 256

// Argmax writes, for each row of x [..., cols] (f32), the column of its
// largest value into dst [rows] (u32): greedy decoding picks the token on
// the GPU instead of reading the logits back. Ties go to the lowest
// index, as a CPU argmax scanning left to right with > does, and -inf is
// allowed (a row of only -inf gives 0); x must hold no NaN. The winner is
// the first element of a total order, so it does not depend on the
// reduction's shape or on the other rows.
func Argmax(enc *gpu.Encoder, dst, x Tensor) error {
	rows, cols, err := rowsCols("Argmax", x)
	if err != nil {
		return err
	}
	if x.DType != F32 {
		return fmt.Errorf("ops.Argmax: x %s must be f32", x)
	}
	if dst.DType != U32 || dst.Len() != rows {
		return fmt.Errorf("ops.Argmax: dst %s must be u32 with %d elements, one per row of x %s", dst, rows, x)
	}
	if x.Buf != nil && x.Buf == dst.Buf {
		return fmt.Errorf("ops.Argmax: dst %s must not share a buffer with x %s", dst, x)
	}
	args, offs, err := binds("Argmax", x, dst)
	if err != nil {
		return err
	}
	key := argmaxKey{WG: argmaxWG}
	pipe, err := enc.Context().Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("argmax.wgsl", map[string]any{"WG": key.WG})
		return gpu.PipelineSpec{Source: src, Storage: []gpu.Access{gpu.ReadOnly, gpu.ReadWrite}}, err
	})
	if err != nil {
		return err
	}
	gx, gy := enc.Context().Grid(uint32(rows))
	return enc.Dispatch(pipe, argmaxParams{
		Rows: uint32(rows), Cols: uint32(cols),
		XOff: offs[0], XStride: uint32(cols),
		DOff: offs[1],
	}, args, gx, gy, 1)
}
