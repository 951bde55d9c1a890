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

// argmaxWorkgroup is the workgroup size, one workgroup scanning one row.
// On GPUs, the largest power of two up to 1024 the device allows: a single
// 151936-wide row took 12 µs with 1024 threads and 32 µs with 256 on an
// H100, and batches of rows ran the same with either. On CPU adapters
// (lavapipe) 1024-thread workgroups ran 10x slower than 256.
func argmaxWorkgroup(ctx *gpu.Context) int {
	wg := 1024
	if ctx.Software() {
		wg = 256
	}
	for wg > 64 && (uint32(wg) > ctx.Limits.MaxComputeInvocationsPerWorkgroup ||
		uint32(wg) > ctx.Limits.MaxComputeWorkgroupSizeX ||
		uint32(wg*8) > ctx.Limits.MaxComputeWorkgroupStorageSize) {
		wg /= 2
	}
	return wg
}

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
	key := argmaxKey{WG: argmaxWorkgroup(enc.Context())}
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
