package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

// SoftmaxLayout views memory as Rows rows of Cols f32 elements: row r of x
// starts XStride*r elements after the start of x's view, row r of dst
// DstStride*r elements after dst's. A zero stride means Cols (rows packed).
// Elements between Cols and the stride are never read or written.
type SoftmaxLayout struct {
	Rows, Cols         int
	XStride, DstStride int
}

type softmaxKey struct {
	WG      int
	InPlace bool // x and dst share one binding (the same buffer)
}

func (k softmaxKey) String() string {
	if k.InPlace {
		return fmt.Sprintf("softmax_inplace_wg%d", k.WG)
	}
	return fmt.Sprintf("softmax_wg%d", k.WG)
}

type softmaxParams struct {
	Rows, Cols    uint32
	XOff, XStride uint32
	DOff, DStride uint32
}

// Softmax writes the numerically stable softmax of every row of x (f32)
// into dst (f32), laid out by l. Entries of x equal to -inf are masked out:
// they get 0, a row with a single finite entry becomes exactly one-hot and
// a row entirely -inf becomes zeros (never NaN). Other entries must be
// finite. dst may be x itself (in place: the same view and strides) or
// another region of x's buffer that does not overlap it.
func Softmax(enc *gpu.Encoder, dst, x Tensor, l SoftmaxLayout) error {
	if l.XStride == 0 {
		l.XStride = l.Cols
	}
	if l.DstStride == 0 {
		l.DstStride = l.Cols
	}
	if l.Rows <= 0 || l.Cols <= 0 || l.XStride < l.Cols || l.DstStride < l.Cols {
		return fmt.Errorf("ops.Softmax: invalid layout %+v (need rows, cols > 0 and strides >= cols)", l)
	}
	if x.DType != F32 || dst.DType != F32 {
		return fmt.Errorf("ops.Softmax: x %s and dst %s must be f32", x, dst)
	}
	xSpan := (l.Rows-1)*l.XStride + l.Cols
	dSpan := (l.Rows-1)*l.DstStride + l.Cols
	if x.Len() < xSpan {
		return fmt.Errorf("ops.Softmax: x %s holds %d elements, layout %+v needs %d", x, x.Len(), l, xSpan)
	}
	if dst.Len() < dSpan {
		return fmt.Errorf("ops.Softmax: dst %s holds %d elements, layout %+v needs %d", dst, dst.Len(), l, dSpan)
	}
	if !fitsU32(xSpan+x.Off, dSpan+dst.Off) {
		return fmt.Errorf("ops.Softmax: layout %+v too large for 32-bit indexing", l)
	}
	key := softmaxKey{WG: 256}
	if l.Cols <= 256 {
		key.WG = 64
	}
	var args []gpu.Arg
	var xOff, dOff uint32
	if x.Buf == dst.Buf && x.Buf != nil {
		sameView := x.Off == dst.Off && l.XStride == l.DstStride
		disjoint := x.Off+xSpan <= dst.Off || dst.Off+dSpan <= x.Off
		if !sameView && !disjoint {
			return fmt.Errorf("ops.Softmax: dst (offset %d) partly overlaps x (offset %d) in buffer %q with layout %+v: use the same view or disjoint regions",
				dst.Off, x.Off, x.Buf.Label(), l)
		}
		// One binding for both: WebGPU forbids binding a buffer both
		// read-only and writable in one dispatch.
		arg, offs, err := bindShared("Softmax", x.View(0, xSpan), dst.View(0, dSpan))
		if err != nil {
			return err
		}
		args, xOff, dOff = []gpu.Arg{arg}, offs[0], offs[1]
		key.InPlace = true
	} else {
		a, offs, err := binds("Softmax", x.View(0, xSpan), dst.View(0, dSpan))
		if err != nil {
			return err
		}
		args, xOff, dOff = a, offs[0], offs[1]
	}
	pipe, err := enc.Context().Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("softmax.wgsl", map[string]any{"WG": key.WG, "InPlace": key.InPlace})
		storage := []gpu.Access{gpu.ReadOnly, gpu.ReadWrite}
		if key.InPlace {
			storage = []gpu.Access{gpu.ReadWrite}
		}
		return gpu.PipelineSpec{Source: src, Storage: storage}, err
	})
	if err != nil {
		return err
	}
	gx, gy := enc.Context().Grid(uint32(l.Rows))
	return enc.Dispatch(pipe, softmaxParams{
		Rows: uint32(l.Rows), Cols: uint32(l.Cols),
		XOff: xOff, XStride: uint32(l.XStride),
		DOff: dOff, DStride: uint32(l.DstStride),
	}, args, gx, gy, 1)
}

// bindShared binds several views of one buffer through a single binding
// that spans them all, returning each view's first element inside it.
func bindShared(op string, ts ...Tensor) (gpu.Arg, []uint32, error) {
	lo, hi := ts[0].Off, ts[0].Off+ts[0].Len()
	for _, t := range ts[1:] {
		if t.Buf != ts[0].Buf || t.DType != ts[0].DType {
			return gpu.Arg{}, nil, fmt.Errorf("ops.%s: bindShared: views of different buffers or dtypes", op)
		}
		lo, hi = min(lo, t.Off), max(hi, t.Off+t.Len())
	}
	span := Tensor{Buf: ts[0].Buf, Off: lo, DType: ts[0].DType, Shape: []int{hi - lo}}
	arg, base, err := span.bind()
	if err != nil {
		return gpu.Arg{}, nil, fmt.Errorf("ops.%s: %s: %w", op, span, err)
	}
	offs := make([]uint32, len(ts))
	for i, t := range ts {
		offs[i] = base + uint32(t.Off-lo)
	}
	return arg, offs, nil
}

// fitsU32 reports whether every element index stays below 2^32.
func fitsU32(ns ...int) bool {
	for _, n := range ns {
		if n < 0 || uint64(n) > 1<<32-1 {
			return false
		}
	}
	return true
}
