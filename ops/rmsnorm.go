package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

type rmsNormKey struct {
	WG     int
	W      DType
	AliasX bool // x shares dst's buffer (disjoint ranges): bound read_write
	// SameX: x is dst's own view (in place): not bound, read through dst's
	// binding, as WebGPU forbids two writable bindings of overlapping
	// ranges (Dawn checks; wgpu-native does not).
	SameX bool
	Add   bool // dst += the normalised row (RMSNormAdd)
}

func (k rmsNormKey) String() string {
	s := fmt.Sprintf("rmsnorm_w%s_wg%d", k.W, k.WG)
	if k.SameX {
		s += "_inplace"
	} else if k.AliasX {
		s += "_aliasx"
	}
	if k.Add {
		s += "_add"
	}
	return s
}

type rmsNormParams struct {
	Rows, Cols    uint32
	XOff, XStride uint32
	WOff          uint32
	DOff, DStride uint32
	Eps           float32
}

// RMSNorm normalises each row of x ([..., cols], f32) by its root mean
// square and scales by w ([cols], f32 or f16) into dst (x's shape, f32).
func RMSNorm(enc *gpu.Encoder, dst, x, w Tensor, eps float32) error {
	return rmsNorm(enc, dst, x, w, eps, false)
}

// RMSNormAdd adds the RMS-normalised rows of x, scaled by w, to dst:
// dst += x / rms(x) * w. One dispatch for a post-norm residual (gemma2/3,
// glm4: x += norm(attention output)). dst may not share x's buffer.
func RMSNormAdd(enc *gpu.Encoder, dst, x, w Tensor, eps float32) error {
	if dst.Buf == x.Buf && dst.Buf != nil {
		return fmt.Errorf("ops.RMSNormAdd: dst %s shares x's buffer", dst)
	}
	return rmsNorm(enc, dst, x, w, eps, true)
}

func rmsNorm(enc *gpu.Encoder, dst, x, w Tensor, eps float32, add bool) error {
	rows, cols, err := rowsCols("RMSNorm", x)
	if err != nil {
		return err
	}
	if x.DType != F32 || dst.DType != F32 {
		return fmt.Errorf("ops.RMSNorm: x %s and dst %s must be f32", x, dst)
	}
	if w.Len() != cols {
		return fmt.Errorf("ops.RMSNorm: weight %s does not match %d columns of x %s", w, cols, x)
	}
	if dst.Len() != x.Len() {
		return fmt.Errorf("ops.RMSNorm: dst %s does not match x %s", dst, x)
	}
	key := rmsNormKey{WG: 256, W: w.DType, Add: add}
	// In place is safe: each thread rereads only the elements it writes.
	if key.AliasX, err = aliasOf("RMSNorm", dst, x, true); err != nil {
		return err
	}
	key.SameX = key.AliasX && sameView(dst, x)
	bound := []Tensor{x, w, dst}
	if key.SameX {
		bound = bound[1:]
	}
	args, offs, err := binds("RMSNorm", bound...)
	if err != nil {
		return err
	}
	if key.SameX {
		offs = append([]uint32{offs[1]}, offs...) // x's offset is dst's
	}
	pipe, err := enc.Context().Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("rmsnorm.wgsl", map[string]any{"WG": key.WG, "W": key.W.String(), "AliasX": key.AliasX, "SameX": key.SameX, "Add": key.Add})
		storage := []gpu.Access{access(key.AliasX), gpu.ReadOnly, gpu.ReadWrite}
		if key.SameX {
			storage = storage[1:]
		}
		return gpu.PipelineSpec{Source: src, Storage: storage}, err
	})
	if err != nil {
		return err
	}
	gx, gy := enc.Context().Grid(uint32(rows))
	return enc.Dispatch(pipe, rmsNormParams{
		Rows: uint32(rows), Cols: uint32(cols),
		XOff: offs[0], XStride: uint32(cols),
		WOff: offs[1],
		DOff: offs[2], DStride: uint32(cols),
		Eps: eps,
	}, args, gx, gy, 1)
}

// rowsCols flattens every dimension but the last into rows.
func rowsCols(op string, t Tensor) (rows, cols int, err error) {
	if len(t.Shape) == 0 || t.Len() == 0 {
		return 0, 0, fmt.Errorf("ops.%s: empty tensor %s", op, t)
	}
	cols = t.Shape[len(t.Shape)-1]
	return t.Len() / cols, cols, nil
}
