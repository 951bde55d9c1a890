package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

// Elementwise f32 ops: one thread per output element, the workgroups spread
// over x and y by ctx.Grid so any size that fits a binding dispatches.
//
//	Add(enc, dst, a, b)        dst[i] = a[i] + b[i]      (residual add)
//	Mul(enc, dst, a, b)        dst[i] = a[i] * b[i]
//	Scale(enc, dst, x, s)      dst[i] = x[i] * s
//	SiluMul(enc, dst, g, u)    dst[i] = silu(g[i]) * u[i] (SwiGLU; silu(x) = x/(1+exp(-x)))
//	AddRow(enc, dst, x, bias)  dst[r, c] = x[r, c] + bias[c] (x [rows, n], bias [n])
//	GatedAct(enc, dst, g, u, a) dst[i] = act(g[i], u[i]) (activation.go)
//	SoftCap(enc, dst, x, cap)  dst[i] = cap*tanh(x[i]/cap) (activation.go)
//
// Operands are matched by element count (shapes are views; only AddRow
// reads a row length, from the last dimension of x). dst may be the very
// same view as an input (in place), and may share a buffer with inputs at
// ranges that do not overlap; a partial overlap is an error because
// threads would race.

type elemOp uint8

const (
	opAdd elemOp = iota
	opMul
	opScale
	opSiluMul
	opAddRow
	opGeluMul
	opSwiGLUOAI
	opSoftCap
)

var elemOpNames = [...]string{opAdd: "add", opMul: "mul", opScale: "scale", opSiluMul: "silu_mul", opAddRow: "add_row",
	opGeluMul: "gelu_mul", opSwiGLUOAI: "swiglu_oai_mul", opSoftCap: "softcap"}

func (o elemOp) String() string { return elemOpNames[o] }

// elemKey specialises the shader. AliasA/AliasB mark an input that shares
// dst's buffer: WebGPU rejects one buffer bound both read-only and writable
// in a dispatch, so such an input is declared read_write. SameA/SameB mark
// an input in dst's binding window (dst's very view in place, or a disjoint
// view of the buffer): it is not bound at all and the shader reads it
// through dst's binding, since Dawn (natively and in browsers) rejects two
// writable bindings of overlapping ranges.
type elemKey struct {
	Op             elemOp
	WG             int
	AliasA, AliasB bool
	SameA, SameB   bool
}

func (k elemKey) String() string {
	s := fmt.Sprintf("%s_wg%d", k.Op, k.WG)
	if k.AliasA {
		s += "_aliasa"
	}
	if k.AliasB {
		s += "_aliasb"
	}
	if k.SameA {
		s += "_samea"
	}
	if k.SameB {
		s += "_sameb"
	}
	return s
}

type elemParams struct {
	N                uint32 // output elements
	AOff, BOff, DOff uint32
	Cols             uint32  // AddRow: bias length
	Scale            float32 // Scale: the factor; SoftCap: the cap
	Inv              float32 // SoftCap: 1/cap, rounded once on the host
}

const elemWG = 256

// Add writes dst = a + b elementwise (f32). dst may be a (in place).
func Add(enc *gpu.Encoder, dst, a, b Tensor) error { return binaryOp(enc, opAdd, "Add", dst, a, b) }

// Mul writes dst = a * b elementwise (f32).
func Mul(enc *gpu.Encoder, dst, a, b Tensor) error { return binaryOp(enc, opMul, "Mul", dst, a, b) }

// SiluMul writes dst = silu(gate) * up elementwise (f32), the SwiGLU
// activation. silu is computed from exp(-|x|), which never overflows, so
// any finite input gives a finite output.
func SiluMul(enc *gpu.Encoder, dst, gate, up Tensor) error {
	return binaryOp(enc, opSiluMul, "SiluMul", dst, gate, up)
}

// Scale writes dst = x * s elementwise (f32).
func Scale(enc *gpu.Encoder, dst, x Tensor, s float32) error {
	if err := sameF32("Scale", dst, x); err != nil {
		return err
	}
	return elemDispatch(enc, opScale, "Scale", dst, x, nil, elemParams{Scale: s})
}

// AddRow adds bias [n] to every row of x [rows, n] into dst (x's shape),
// all f32: the broadcast bias add of a projection (qwen2's QKV bias).
func AddRow(enc *gpu.Encoder, dst, x, bias Tensor) error {
	_, cols, err := rowsCols("AddRow", x)
	if err != nil {
		return err
	}
	if err := sameF32("AddRow", dst, x); err != nil {
		return err
	}
	if bias.DType != F32 || bias.Len() != cols {
		return fmt.Errorf("ops.AddRow: bias %s must be f32 with %d elements, the row length of x %s", bias, cols, x)
	}
	return elemDispatch(enc, opAddRow, "AddRow", dst, x, &bias, elemParams{Cols: uint32(cols)})
}

func binaryOp(enc *gpu.Encoder, op elemOp, name string, dst, a, b Tensor) error {
	if err := sameF32(name, dst, a, b); err != nil {
		return err
	}
	return elemDispatch(enc, op, name, dst, a, &b, elemParams{})
}

// sameF32 checks that every tensor is f32 with the element count of the first.
func sameF32(op string, ts ...Tensor) error {
	for i, t := range ts {
		if t.DType != F32 {
			return fmt.Errorf("ops.%s: operand %d %s must be f32", op, i, t)
		}
		if t.Len() == 0 {
			return fmt.Errorf("ops.%s: operand %d %s is empty", op, i, t)
		}
		if t.Len() != ts[0].Len() {
			return fmt.Errorf("ops.%s: operand %d %s has %d elements, dst %s has %d", op, i, t, t.Len(), ts[0], ts[0].Len())
		}
	}
	return nil
}

func elemDispatch(enc *gpu.Encoder, op elemOp, name string, dst, a Tensor, b *Tensor, p elemParams) error {
	key := elemKey{Op: op, WG: elemWG}
	var err error
	if key.AliasA, err = aliasOf(name, dst, a, true); err != nil {
		return err
	}
	var aOff, bOff uint32
	if key.AliasA {
		key.SameA, aOff = inWindowOf(dst, a)
	}
	var ins []Tensor
	if !key.SameA {
		ins = append(ins, a)
	}
	if b != nil {
		// The bias of AddRow is indexed by column, not by element, so it
		// may not be the output's own view.
		if key.AliasB, err = aliasOf(name, dst, *b, op != opAddRow); err != nil {
			return err
		}
		if key.AliasB {
			key.SameB, bOff = inWindowOf(dst, *b)
		}
		if !key.SameB {
			ins = append(ins, *b)
		}
	}
	args, offs, err := binds(name, append(ins, dst)...)
	if err != nil {
		return err
	}
	p.N = uint32(dst.Len())
	p.DOff = offs[len(offs)-1]
	p.AOff, p.BOff = aOff, bOff // an input in dst's window is read through dst's binding
	next := 0
	if !key.SameA {
		p.AOff, next = offs[0], 1
	}
	if b != nil && !key.SameB {
		p.BOff = offs[next]
	}
	pipe, err := enc.Context().Pipeline(key, func() (gpu.PipelineSpec, error) {
		// Bindings are numbered from 1 in order: the inputs that are
		// bound, then dst.
		bind := 1
		bindA, bindB := 0, 0
		var storage []gpu.Access
		if !key.SameA {
			bindA, bind = bind, bind+1
			storage = append(storage, access(key.AliasA))
		}
		if b != nil && !key.SameB {
			bindB, bind = bind, bind+1
			storage = append(storage, access(key.AliasB))
		}
		src, err := wgsl.Render("elementwise.wgsl", map[string]any{
			"Op": key.Op.String(), "WG": key.WG, "HasB": b != nil, "AliasA": key.AliasA, "AliasB": key.AliasB,
			"SameA": key.SameA, "SameB": key.SameB, "BindA": bindA, "BindB": bindB, "BindD": bind,
		})
		return gpu.PipelineSpec{Source: src, Storage: append(storage, gpu.ReadWrite)}, err
	})
	if err != nil {
		return err
	}
	gx, gy := enc.Context().Grid(uint32(ceilDiv(dst.Len(), key.WG)))
	return enc.Dispatch(pipe, p, args, gx, gy, 1)
}

func access(writable bool) gpu.Access {
	if writable {
		return gpu.ReadWrite
	}
	return gpu.ReadOnly
}

// aliasOf reports whether src lives in dst's buffer, in which case the
// shader must bind it read_write. Disjoint ranges of one buffer are fine;
// the identical view is fine when sameOK (each thread reads exactly the
// element it writes); any other overlap races and is an error. Ranges are
// compared in whole 4-byte words, the unit a shader stores.
func aliasOf(op string, dst, src Tensor, sameOK bool) (bool, error) {
	if src.Buf == nil || dst.Buf == nil || src.Buf != dst.Buf {
		return false, nil
	}
	if sameOK && src.Off == dst.Off && src.DType == dst.DType && src.Len() == dst.Len() {
		return true, nil
	}
	s0, s1 := wordRange(src)
	d0, d1 := wordRange(dst)
	if s0 < d1 && d0 < s1 {
		return false, fmt.Errorf("ops.%s: input %s at element %d overlaps dst %s at element %d in buffer %q",
			op, src, src.Off, dst, dst.Off, dst.Buf.Label())
	}
	return true, nil
}

// inWindowOf reports whether src (of dst's dtype) binds to exactly dst's
// binding window (the whole buffer, when it fits one binding), and then
// src's element offset in it, so a shader can read src through dst's
// binding.
func inWindowOf(dst, src Tensor) (bool, uint32) {
	if src.DType != dst.DType {
		return false, 0
	}
	return windowOf(dst, src)
}

// windowOf is inWindowOf for a src of any dtype: the offset is in src's
// elements (a shader reads them as words of dst's binding).
func windowOf(dst, src Tensor) (bool, uint32) {
	if src.Buf != dst.Buf {
		return false, 0
	}
	sa, so, err1 := src.bind()
	da, _, err2 := dst.bind()
	if err1 != nil || err2 != nil || sa != da {
		return false, 0
	}
	return true, so
}

// sameView reports whether src is exactly dst's view (same buffer, offset,
// type and length).
func sameView(dst, src Tensor) bool {
	return src.Buf == dst.Buf && src.Off == dst.Off && src.DType == dst.DType && src.Len() == dst.Len()
}

// wordRange is the range of 4-byte words a view touches.
func wordRange(t Tensor) (lo, hi uint64) {
	start := uint64(t.Off * t.DType.Size())
	return start / 4, (start + t.Bytes() + 3) / 4
}

type copyKey struct {
	Src, Dst DType
	AliasSrc bool // src shares dst's buffer (disjoint ranges; bound read_write)
	// SameSrc: src is in dst's binding window with dst's dtype: not bound,
	// read through dst's binding (Dawn rejects overlapping writable bindings).
	SameSrc bool
	WG      int
}

func (k copyKey) String() string {
	s := fmt.Sprintf("copy_rows_%s_to_%s_wg%d", k.Src, k.Dst, k.WG)
	if k.SameSrc {
		s += "_samesrc"
	} else if k.AliasSrc {
		s += "_aliassrc"
	}
	return s
}

type copyParams struct {
	Rows, Cols    uint32
	SOff, SStride uint32
	DOff, DStride uint32
	PerRow, Total uint32
}

// CopyRows copies a rows×cols block from src to dst,
//
//	dst[r*dstStride + c] = src[r*srcStride + c]   (r < rows, c < cols)
//
// with indices counted from each view's first element and strides in
// elements (ignored when rows is 1). It converts f32 to f16 (rounding to a
// neighbouring f16; WGSL lets the device pick which) and f16 to f32
// (exactly), and copies f32, f16 or u32 (raw words: u32 only to u32)
// unchanged: writing K/V rows into a KV cache at an offset, or copying a
// KV block's words. Every dst element outside the block keeps its value,
// even an f16 neighbour sharing a 4-byte word with a copied element: each
// word of an f16 dst is written by exactly one thread, which merges the
// half it does not own. src and dst may share a buffer if they do not
// overlap.
func CopyRows(enc *gpu.Encoder, dst, src Tensor, rows, cols, dstStride, srcStride int) error {
	for _, t := range []Tensor{dst, src} {
		if t.DType != F32 && t.DType != F16 && t.DType != U32 {
			return fmt.Errorf("ops.CopyRows: %s is not f32, f16 or u32", t)
		}
	}
	if (dst.DType == U32) != (src.DType == U32) {
		return fmt.Errorf("ops.CopyRows: u32 copies only to u32 (dst %s, src %s)", dst, src)
	}
	if rows < 1 || cols < 1 {
		return fmt.Errorf("ops.CopyRows: %dx%d block is empty", rows, cols)
	}
	if rows == 1 {
		dstStride, srcStride = cols, cols
	}
	if dstStride < cols || srcStride < cols {
		return fmt.Errorf("ops.CopyRows: strides dst %d, src %d must be at least cols %d (rows would overlap)", dstStride, srcStride, cols)
	}
	dSpan, sSpan := (rows-1)*dstStride+cols, (rows-1)*srcStride+cols
	if dst.Len() < dSpan || src.Len() < sSpan {
		return fmt.Errorf("ops.CopyRows: %dx%d block with strides dst %d, src %d needs %d dst and %d src elements; dst %s, src %s",
			rows, cols, dstStride, srcStride, dSpan, sSpan, dst, src)
	}
	if uint64(dSpan) >= 1<<32 || uint64(sSpan) >= 1<<32 {
		return fmt.Errorf("ops.CopyRows: block spans more than 2^32 elements")
	}
	dst, src = dst.View(0, dSpan), src.View(0, sSpan)
	key := copyKey{Src: src.DType, Dst: dst.DType, WG: 256}
	var err error
	if key.AliasSrc, err = aliasOf("CopyRows", dst, src, false); err != nil {
		return err
	}
	var srcOff uint32
	if key.AliasSrc {
		key.SameSrc, srcOff = inWindowOf(dst, src)
	}
	bound := []Tensor{src, dst}
	if key.SameSrc {
		bound = bound[1:]
	}
	args, offs, err := binds("CopyRows", bound...)
	if err != nil {
		return err
	}
	if key.SameSrc {
		offs = []uint32{srcOff, offs[0]}
	}
	perRow := cols
	if key.Dst == F16 {
		perRow = cols/2 + 1 // 4-byte words a row of cols halves can touch
	}
	total := uint64(rows) * uint64(perRow)
	if total >= 1<<32 {
		return fmt.Errorf("ops.CopyRows: %dx%d block is too large for one dispatch", rows, cols)
	}
	pipe, err := enc.Context().Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("copy_rows.wgsl", map[string]any{
			"Src": key.Src.String(), "Dst": key.Dst.String(), "AliasSrc": key.AliasSrc, "SameSrc": key.SameSrc, "WG": key.WG,
		})
		storage := []gpu.Access{access(key.AliasSrc), gpu.ReadWrite}
		if key.SameSrc {
			storage = storage[1:]
		}
		return gpu.PipelineSpec{Source: src, Storage: storage}, err
	})
	if err != nil {
		return err
	}
	gx, gy := enc.Context().Grid(uint32(ceilDiv(int(total), key.WG)))
	return enc.Dispatch(pipe, copyParams{
		Rows: uint32(rows), Cols: uint32(cols),
		SOff: offs[0], SStride: uint32(srcStride),
		DOff: offs[1], DStride: uint32(dstStride),
		PerRow: uint32(perRow), Total: uint32(total),
	}, args, gx, gy, 1)
}
