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
	BF16
	// Block-quantised weight types, stored exactly as in GGUF (ggml's block
	// layouts): a row of K elements is K/BlockSize blocks of BlockBytes.
	Q4_0
	Q4_1
	Q5_0
	Q5_1
	Q8_0
	Q2_K
	Q3_K
	Q4_K
	Q5_K
	Q6_K
	IQ4_NL // 4-bit indices into ggml's non-linear table, f16 scale per 32
	IQ4_XS // IQ4_NL's table, 6-bit scales per 32 under an f16 one per 256
	MXFP4  // E2M1 values, an E8M0 exponent per 32 (17-byte blocks)
)

var dtypeInfo = [...]struct {
	name              string
	blockSize, blockB int
}{
	F32: {"f32", 1, 4}, F16: {"f16", 1, 2}, U32: {"u32", 1, 4}, BF16: {"bf16", 1, 2},
	Q4_0: {"q4_0", 32, 18}, Q4_1: {"q4_1", 32, 20}, Q5_0: {"q5_0", 32, 22}, Q5_1: {"q5_1", 32, 24},
	Q8_0: {"q8_0", 32, 34}, Q2_K: {"q2_k", 256, 84}, Q3_K: {"q3_k", 256, 110}, Q4_K: {"q4_k", 256, 144},
	Q5_K: {"q5_k", 256, 176}, Q6_K: {"q6_k", 256, 210},
	IQ4_NL: {"iq4_nl", 32, 18}, IQ4_XS: {"iq4_xs", 256, 136}, MXFP4: {"mxfp4", 32, 17},
}

func (d DType) String() string {
	if int(d) < len(dtypeInfo) {
		return dtypeInfo[d].name
	}
	return fmt.Sprintf("dtype(%d)", d)
}

// Quantized reports a block-quantised type.
func (d DType) Quantized() bool { return d.BlockSize() > 1 }

// BlockSize is the number of elements per block (1 for plain types).
func (d DType) BlockSize() int { return dtypeInfo[d].blockSize }

// BlockBytes is the encoded size of one block.
func (d DType) BlockBytes() int { return dtypeInfo[d].blockB }

// Size is the bytes per element of a plain type (not meaningful for
// block-quantised types: use BlockBytes).
func (d DType) Size() int { return dtypeInfo[d].blockB }

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
func (t Tensor) Bytes() uint64 {
	return uint64(t.Len() / t.DType.BlockSize() * t.DType.BlockBytes())
}

// byteOff is where the view starts in its buffer. Off of a block-quantised
// view must be a whole number of blocks.
func (t Tensor) byteOff() uint64 {
	return uint64(t.Off / t.DType.BlockSize() * t.DType.BlockBytes())
}

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
	if len(shape) > 0 && shape[len(shape)-1]%dt.BlockSize() != 0 {
		return Tensor{}, fmt.Errorf("ops: tensor %q: rows of %d elements are not whole %s blocks of %d", label, shape[len(shape)-1], dt, dt.BlockSize())
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
	if t.DType.Quantized() || t.DType == U32 {
		return fmt.Errorf("ops: Write of float32 values to %s tensor: quantise on the host and use FromBytes", t.DType)
	}
	return t.Buf.Write(t.byteOff(), Encode(t.DType, data))
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
	case BF16:
		out := make([]byte, 2*len(data))
		for i, v := range data {
			binary.LittleEndian.PutUint16(out[2*i:], half.BF16FromFloat32(v))
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
	start := t.byteOff()
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
	if t.DType == U32 || t.DType.Quantized() {
		return nil, fmt.Errorf("ops: Read of %s tensor %s as float32", t.DType, t)
	}
	raw, err := t.readRaw()
	if err != nil {
		return nil, err
	}
	out := make([]float32, t.Len())
	for i := range out {
		if t.DType == F16 {
			out[i] = half.ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
		} else if t.DType == BF16 {
			out[i] = half.BF16ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
		} else {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	}
	return out, nil
}

// bind returns the binding covering the view and where the view starts
// inside that binding: in elements for plain types (for f16, in halves), in
// bytes for block-quantised types.
func (t Tensor) bind() (gpu.Arg, uint32, error) {
	if t.Buf == nil {
		return gpu.Arg{}, 0, fmt.Errorf("tensor %s has no buffer", t)
	}
	if t.Off%t.DType.BlockSize() != 0 {
		return gpu.Arg{}, 0, fmt.Errorf("tensor %s starts inside a block (offset %d)", t, t.Off)
	}
	off, size, inner, err := t.Buf.Window(t.byteOff(), t.Bytes())
	if err != nil {
		return gpu.Arg{}, 0, err
	}
	if t.DType.Quantized() {
		return gpu.Arg{Buf: t.Buf, Offset: off, Size: size}, uint32(inner), nil
	}
	return gpu.Arg{Buf: t.Buf, Offset: off, Size: size}, uint32(inner / uint64(t.DType.Size())), nil
}

// FromBytes allocates a tensor holding raw stored bytes (e.g. a GGUF
// tensor's blocks, uploaded as they are).
func FromBytes(ctx *gpu.Context, label string, dt DType, raw []byte, shape ...int) (Tensor, error) {
	t, err := New(ctx, label, dt, shape...)
	if err != nil {
		return t, err
	}
	if uint64(len(raw)) != t.Bytes() {
		t.Buf.Destroy()
		return Tensor{}, fmt.Errorf("ops: tensor %q: %d bytes for %s%v (want %d)", label, len(raw), dt, shape, t.Bytes())
	}
	return t, t.Buf.Write(0, raw)
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
