package ops

import (
	"encoding/binary"
	"errors"
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

// ArgmaxNone is Argmax's result for a row with no token to pick: one
// holding a NaN or +Inf, or only -Inf.
const ArgmaxNone = 0xffffffff

// ErrNonFinite is wrapped by the error of a row Argmax could not pick from.
var ErrNonFinite = errors.New("non-finite logits (NaN or +Inf, or every one -Inf): the model's weights or activations are broken")

// NonFiniteError names the rows (of an Argmax's input) with non-finite
// logits.
type NonFiniteError struct{ Rows []int }

func (e *NonFiniteError) Error() string { return fmt.Sprintf("%v in rows %v", ErrNonFinite, e.Rows) }
func (e *NonFiniteError) Unwrap() error { return ErrNonFinite }

// ArgmaxResults decodes Argmax's output as read back (little-endian u32s)
// into ids; rows that had no token to pick get -1 and a *NonFiniteError.
func ArgmaxResults(raw []byte, ids []int32) error {
	var bad []int
	for i := range ids {
		v := binary.LittleEndian.Uint32(raw[4*i:])
		if v == ArgmaxNone {
			bad = append(bad, i)
		}
		ids[i] = int32(v)
	}
	if bad != nil {
		return &NonFiniteError{Rows: bad}
	}
	return nil
}

// Argmax writes each row's index of its largest value into dst (the
// lowest index among equals), or ArgmaxNone for a row that holds a NaN or
// +Inf or only -Inf.
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
