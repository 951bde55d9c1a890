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
	Two   bool // RMSNormTwo: two row sets in place, two weights
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
	if k.Two {
		s += "_two"
	}
	return s
}

type rmsNormParams struct {
	Rows, Cols    uint32
	XOff, XStride uint32
	WOff          uint32
	DOff, DStride uint32
	Eps           float32
	Split, XOff2  uint32 // RMSNormTwo
	W2Off         uint32
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
		src, err := wgsl.Render("rmsnorm.wgsl", map[string]any{"WG": key.WG, "W": key.W.String(), "AliasX": key.AliasX, "SameX": key.SameX, "Add": key.Add, "Two": false})
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

// RMSNormTwo normalises, in place, the rows of a by wa and the rows of b by
// wb in one dispatch (per-head q and k norms: qwen3, gemma3): a and b f32
// views of one buffer with rows of the same length, not overlapping, wa
// and wb of that length and one dtype (f32 or f16). Each row gets the bits
// RMSNorm gives it.
func RMSNormTwo(enc *gpu.Encoder, a, b, wa, wb Tensor, eps float32) error {
	ra, cols, err := rowsCols("RMSNormTwo", a)
	if err != nil {
		return err
	}
	rb, cb, err := rowsCols("RMSNormTwo", b)
	if err != nil {
		return err
	}
	switch {
	case a.DType != F32 || b.DType != F32:
		return fmt.Errorf("ops.RMSNormTwo: a %s and b %s must be f32", a, b)
	case a.Buf == nil || a.Buf != b.Buf:
		return fmt.Errorf("ops.RMSNormTwo: a %s and b %s must share one buffer", a, b)
	case cb != cols || wa.Len() != cols || wb.Len() != cols || wa.DType != wb.DType:
		return fmt.Errorf("ops.RMSNormTwo: rows of %d and %d columns, weights %s and %s: want one length and dtype", cols, cb, wa, wb)
	case a.Off < b.Off+b.Len() && b.Off < a.Off+a.Len():
		return fmt.Errorf("ops.RMSNormTwo: a %s and b %s overlap", a, b)
	}
	lo, hi := min(a.Off, b.Off), max(a.Off+a.Len(), b.Off+b.Len())
	span := Tensor{Buf: a.Buf, Off: lo, DType: F32, Shape: []int{hi - lo}}
	args, offs, err := binds("RMSNormTwo", wa, span, wb)
	if err != nil {
		return err
	}
	key := rmsNormKey{WG: 256, W: wa.DType, SameX: true, Two: true}
	pipe, err := enc.Context().Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("rmsnorm.wgsl", map[string]any{"WG": key.WG, "W": key.W.String(), "AliasX": false, "SameX": true, "Add": false, "Two": true})
		return gpu.PipelineSpec{Source: src, Storage: []gpu.Access{gpu.ReadOnly, gpu.ReadWrite, gpu.ReadOnly}}, err
	})
	if err != nil {
		return err
	}
	base := offs[1]
	gx, gy := enc.Context().Grid(uint32(ra + rb))
	return enc.Dispatch(pipe, rmsNormParams{
		Rows: uint32(ra + rb), Cols: uint32(cols),
		XOff: base + uint32(a.Off-lo), XStride: uint32(cols),
		WOff: offs[0], DOff: base + uint32(a.Off-lo), DStride: uint32(cols), Eps: eps,
		Split: uint32(ra), XOff2: base + uint32(b.Off-lo), W2Off: offs[2],
	}, args, gx, gy, 1)
}
