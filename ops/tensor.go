// Package ops records GPU operations: one file per op, each with its
// pipeline key (the specialisation), its uniform parameters (per-call
// offsets, strides, sizes) and a dispatch function that validates shapes.
// A view, reshape or slice never costs a dispatch: it is an offset and
// strides in the uniform.
package ops

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/half"
)

// DType is how a tensor's elements are stored.
type DType uint8

const (
	F32 DType = iota
	F16
	U32 // token ids, positions, argmax results
)

func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case F16:
		return "f16"
	case U32:
		return "u32"
	}
	return fmt.Sprintf("dtype(%d)", d)
}

// Size is the bytes per element.
func (d DType) Size() int {
	if d == F16 {
		return 2
	}
	return 4
}

// Tensor is a view of a GPU buffer: elements start at Off (in elements) and
// are laid out row-major by Shape unless an op takes explicit strides.
type Tensor struct {
	Buf   *gpu.Buffer
	Off   int
	DType DType
	Shape []int
}

// Len is the number of elements.
func (t Tensor) Len() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Bytes is the size of the view in bytes.
func (t Tensor) Bytes() uint64 { return uint64(t.Len() * t.DType.Size()) }

func (t Tensor) String() string { return fmt.Sprintf("%s%v", t.DType, t.Shape) }

// View is the same memory from element off with another shape.
func (t Tensor) View(off int, shape ...int) Tensor {
	return Tensor{Buf: t.Buf, Off: t.Off + off, DType: t.DType, Shape: shape}
}

// New allocates a tensor of the given shape.
func New(ctx *gpu.Context, label string, dt DType, shape ...int) (Tensor, error) {
	t := Tensor{DType: dt, Shape: shape}
	for _, d := range shape {
		if d <= 0 {
			return Tensor{}, fmt.Errorf("ops: tensor %q: dimension %d in %v", label, d, shape)
		}
	}
	b, err := ctx.NewBuffer(label, t.Bytes())
	if err != nil {
		return Tensor{}, err
	}
	t.Buf = b
	return t, nil
}

// FromFloat32 allocates a tensor and fills it (converting to dt).
func FromFloat32(ctx *gpu.Context, label string, dt DType, data []float32, shape ...int) (Tensor, error) {
	t, err := New(ctx, label, dt, shape...)
	if err != nil {
		return t, err
	}
	if len(data) != t.Len() {
		t.Buf.Destroy()
		return Tensor{}, fmt.Errorf("ops: tensor %q: %d values for shape %v", label, len(data), shape)
	}
	return t, t.Write(data)
}

// Write stores values into the view, converting to its dtype. An f16 view
// must start at an even element.
func (t Tensor) Write(data []float32) error {
	return t.Buf.Write(uint64(t.Off*t.DType.Size()), Encode(t.DType, data))
}

// Encode converts float32 values to a dtype's bytes.
func Encode(dt DType, data []float32) []byte {
	switch dt {
	case F16:
		out := make([]byte, 2*len(data))
		for i, v := range data {
			binary.LittleEndian.PutUint16(out[2*i:], half.FromFloat32(v))
		}
		return out
	default:
		out := make([]byte, 4*len(data))
		for i, v := range data {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
		return out
	}
}

// FromUint32 allocates a u32 tensor and fills it.
func FromUint32(ctx *gpu.Context, label string, data []uint32, shape ...int) (Tensor, error) {
	t, err := New(ctx, label, U32, shape...)
	if err != nil {
		return t, err
	}
	if len(data) != t.Len() {
		t.Buf.Destroy()
		return Tensor{}, fmt.Errorf("ops: tensor %q: %d values for shape %v", label, len(data), shape)
	}
	return t, t.WriteUint32(data)
}

// WriteUint32 stores values into a u32 view.
func (t Tensor) WriteUint32(data []uint32) error {
	out := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(out[4*i:], v)
	}
	return t.Buf.Write(uint64(t.Off*4), out)
}

// ReadUint32 copies a u32 view back.
func (t Tensor) ReadUint32() ([]uint32, error) {
	raw, err := t.readRaw()
	if err != nil {
		return nil, err
	}
	out := make([]uint32, t.Len())
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	return out, nil
}

func (t Tensor) readRaw() ([]byte, error) {
	start := uint64(t.Off * t.DType.Size())
	end := start + t.Bytes()
	a0, a1 := start/4*4, (end+3)/4*4
	raw, err := t.Buf.Read(a0, a1-a0)
	if err != nil {
		return nil, err
	}
	return raw[start-a0:], nil
}

// Read copies the view back as float32 (waits for submitted work).
func (t Tensor) Read() ([]float32, error) {
	if t.DType == U32 {
		return nil, fmt.Errorf("ops: Read of u32 tensor %s: use ReadUint32", t)
	}
	raw, err := t.readRaw()
	if err != nil {
		return nil, err
	}
	out := make([]float32, t.Len())
	for i := range out {
		if t.DType == F16 {
			out[i] = half.ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
		} else {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	}
	return out, nil
}

// bind returns the binding covering the view and the view's first element
// inside that binding (in elements of dt; for f16, in halves).
func (t Tensor) bind() (gpu.Arg, uint32, error) {
	if t.Buf == nil {
		return gpu.Arg{}, 0, fmt.Errorf("tensor %s has no buffer", t)
	}
	es := uint64(t.DType.Size())
	off, size, inner, err := t.Buf.Window(uint64(t.Off)*es, t.Bytes())
	if err != nil {
		return gpu.Arg{}, 0, err
	}
	return gpu.Arg{Buf: t.Buf, Offset: off, Size: size}, uint32(inner / es), nil
}

// binds resolves several tensors at once, naming the op on failure.
func binds(op string, ts ...Tensor) ([]gpu.Arg, []uint32, error) {
	args := make([]gpu.Arg, len(ts))
	offs := make([]uint32, len(ts))
	for i, t := range ts {
		a, o, err := t.bind()
		if err != nil {
			return nil, nil, fmt.Errorf("ops.%s: operand %d %s: %w", op, i, t, err)
		}
		args[i], offs[i] = a, o
	}
	return args, offs, nil
}

func f32bits(f float32) uint32 { return math.Float32bits(f) }

func ceilDiv(a, b int) int { return (a + b - 1) / b }
