package gguf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
)

// KV is one metadata entry to write.
type KV struct {
	Key   string
	Value Value
}

// TensorToWrite is one tensor to write: its name, dimensions in GGUF order
// (Dims[0] contiguous), type and encoded bytes (exactly the size the type
// and dimensions call for).
type TensorToWrite struct {
	Name string
	Dims []uint64
	Type GGMLType
	Data []byte
	// Encode, used when Data is nil, produces the bytes when the writer
	// reaches this tensor, so a model larger than memory can be converted
	// one tensor at a time. Its result is checked like Data; an error (or a
	// wrong size) stops the write partway through.
	Encode func() ([]byte, error)
}

// Writer writes GGUF files. Its zero value writes version 3.
type Writer struct {
	// Version is 3 (used when zero), 2 (the same layout) or 1 (u32 counts,
	// lengths and dimensions; ggml no longer reads it, this package does).
	Version uint32
}

// maxNameLen is ggml's GGML_MAX_NAME less its terminator: llama.cpp
// rejects longer tensor names, so the writer does too.
const maxNameLen = 63

// maxArrayDepth matches the reader: an array may hold arrays two levels deep.
const maxArrayDepth = 2

// invalidType marks a Value built by Val from a Go type GGUF cannot hold.
const invalidType = ValueType(math.MaxUint32)

// Val wraps a Go value as a metadata Value, inferring its type from the Go
// type: uint8, int8, uint16, int16, uint32, int32, float32, bool, string,
// uint64, int64, float64, a slice of one of these (an array), or []any
// whose elements are such slices (an array of arrays). Anything else, int
// included (its size is ambiguous), gives a Value that Write rejects.
func Val(v any) Value {
	if t, ok := scalarType(v); ok {
		return Value{Type: t, V: v}
	}
	if et, ok := arrayElemType(v); ok {
		return Value{Type: TypeArray, ElemType: et, V: v}
	}
	return Value{Type: invalidType, V: v}
}

func scalarType(v any) (ValueType, bool) {
	switch v.(type) {
	case uint8:
		return TypeUint8, true
	case int8:
		return TypeInt8, true
	case uint16:
		return TypeUint16, true
	case int16:
		return TypeInt16, true
	case uint32:
		return TypeUint32, true
	case int32:
		return TypeInt32, true
	case float32:
		return TypeFloat32, true
	case bool:
		return TypeBool, true
	case string:
		return TypeString, true
	case uint64:
		return TypeUint64, true
	case int64:
		return TypeInt64, true
	case float64:
		return TypeFloat64, true
	}
	return 0, false
}

// arrayElemType is the element type of a slice as the reader returns it.
func arrayElemType(v any) (ValueType, bool) {
	switch v.(type) {
	case []uint8:
		return TypeUint8, true
	case []int8:
		return TypeInt8, true
	case []uint16:
		return TypeUint16, true
	case []int16:
		return TypeInt16, true
	case []uint32:
		return TypeUint32, true
	case []int32:
		return TypeInt32, true
	case []float32:
		return TypeFloat32, true
	case []bool:
		return TypeBool, true
	case []string:
		return TypeString, true
	case []uint64:
		return TypeUint64, true
	case []int64:
		return TypeInt64, true
	case []float64:
		return TypeFloat64, true
	case []any:
		return TypeArray, true
	}
	return 0, false
}

// Write writes a version 3 file; see Writer.Write.
func Write(w io.Writer, meta []KV, tensors []TensorToWrite) error {
	return Writer{}.Write(w, meta, tensors)
}

// WriteFile writes a version 3 file at path, removing it on failure.
func WriteFile(path string, meta []KV, tensors []TensorToWrite) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = Write(bw, meta, tensors)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// Write writes a GGUF file: the header with meta in order, tensor infos in
// order, and each tensor's data at the next multiple of the alignment
// (general.alignment when meta has it, which must then be a power-of-two
// uint32; else 32), zero-padded, as ggml writes them. It checks everything
// the reader checks, so what it writes parses; nothing is written when a
// check fails (but a tensor's Encode runs, and is checked, only when the
// writer reaches it).
func (wr Writer) Write(w io.Writer, meta []KV, tensors []TensorToWrite) error {
	version := wr.Version
	if version == 0 {
		version = 3
	}
	if version > 3 {
		return fmt.Errorf("gguf: cannot write version %d (1 to 3)", version)
	}
	e := &encoder{version: version}
	align := uint64(DefaultAlignment)
	seenKey := make(map[string]bool, len(meta))
	for _, kv := range meta {
		if seenKey[kv.Key] {
			return fmt.Errorf("gguf: duplicate metadata key %q", kv.Key)
		}
		seenKey[kv.Key] = true
		if kv.Key == "general.alignment" {
			a, ok := kv.Value.V.(uint32)
			if kv.Value.Type != TypeUint32 || !ok || a == 0 || a&(a-1) != 0 {
				return fmt.Errorf("gguf: general.alignment %v is not a power-of-two uint32", kv.Value.V)
			}
			align = uint64(a)
		}
	}
	seenName := make(map[string]bool, len(tensors))
	sizes := make([]uint64, len(tensors))
	for i, t := range tensors {
		size, err := checkTensor(t, version)
		if err != nil {
			return err
		}
		if seenName[t.Name] {
			return fmt.Errorf("gguf: duplicate tensor name %q", t.Name)
		}
		seenName[t.Name] = true
		sizes[i] = size
	}

	e.u32(Magic)
	e.u32(version)
	if err := e.count(uint64(len(tensors)), "tensor count"); err != nil {
		return err
	}
	if err := e.count(uint64(len(meta)), "metadata count"); err != nil {
		return err
	}
	for _, kv := range meta {
		if err := e.str(kv.Key); err != nil {
			return fmt.Errorf("gguf: metadata key: %w", err)
		}
		if err := e.value(kv.Value, 0); err != nil {
			return fmt.Errorf("gguf: metadata %q: %w", kv.Key, err)
		}
	}
	offset := uint64(0)
	for i, t := range tensors {
		if err := e.str(t.Name); err != nil {
			return err
		}
		e.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			if err := e.count(d, "dimension"); err != nil {
				return fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
			}
		}
		e.u32(uint32(t.Type))
		e.u64(offset)
		offset = alignUp(offset+sizes[i], align)
	}
	e.pad(align)

	if _, err := w.Write(e.buf.Bytes()); err != nil {
		return err
	}
	zeros := make([]byte, align)
	for i, t := range tensors {
		data := t.Data
		if data == nil && t.Encode != nil {
			var err error
			if data, err = t.Encode(); err != nil {
				return fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
			}
			if uint64(len(data)) != sizes[i] {
				return fmt.Errorf("gguf: tensor %q (%s %v) needs %d bytes of data, Encode gave %d", t.Name, t.Type, t.Dims, sizes[i], len(data))
			}
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		if pad := alignUp(sizes[i], align) - sizes[i]; pad > 0 {
			if _, err := w.Write(zeros[:pad]); err != nil {
				return err
			}
		}
	}
	return nil
}

func alignUp(n, align uint64) uint64 { return (n + align - 1) / align * align }

// checkTensor validates a tensor as the reader would and returns its size.
func checkTensor(t TensorToWrite, version uint32) (uint64, error) {
	if t.Name == "" || len(t.Name) > maxNameLen {
		return 0, fmt.Errorf("gguf: tensor name %q must be 1 to %d bytes", t.Name, maxNameLen)
	}
	if len(t.Dims) == 0 || len(t.Dims) > maxDims {
		return 0, fmt.Errorf("gguf: tensor %q has %d dimensions (1..%d allowed)", t.Name, len(t.Dims), maxDims)
	}
	if !t.Type.Known() {
		return 0, fmt.Errorf("gguf: tensor %q has unknown type %d", t.Name, uint32(t.Type))
	}
	elems := uint64(1)
	for _, d := range t.Dims {
		if d == 0 || d > 1<<50 || elems > (1<<50)/d {
			return 0, fmt.Errorf("gguf: tensor %q has dimensions %v (each 1.., product at most 2^50)", t.Name, t.Dims)
		}
		if version == 1 && d > math.MaxUint32 {
			return 0, fmt.Errorf("gguf: tensor %q dimension %d does not fit version 1's u32", t.Name, d)
		}
		elems *= d
	}
	bs := uint64(t.Type.BlockSize())
	if t.Dims[0]%bs != 0 {
		return 0, fmt.Errorf("gguf: tensor %q: row of %d elements is not a whole number of %s blocks of %d", t.Name, t.Dims[0], t.Type, bs)
	}
	size := elems / bs * uint64(t.Type.BlockBytes())
	if t.Data == nil && t.Encode != nil {
		return size, nil // checked when Encode runs
	}
	if uint64(len(t.Data)) != size {
		return 0, fmt.Errorf("gguf: tensor %q (%s %v) needs %d bytes of data, has %d", t.Name, t.Type, t.Dims, size, len(t.Data))
	}
	return size, nil
}

type encoder struct {
	version uint32
	buf     bytes.Buffer
	scratch [8]byte
}

func (e *encoder) u8(v uint8) { e.buf.WriteByte(v) }
func (e *encoder) u16(v uint16) {
	binary.LittleEndian.PutUint16(e.scratch[:], v)
	e.buf.Write(e.scratch[:2])
}
func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.scratch[:], v)
	e.buf.Write(e.scratch[:4])
}
func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.scratch[:], v)
	e.buf.Write(e.scratch[:8])
}

// count writes a count, length or dimension in the version's width.
func (e *encoder) count(n uint64, what string) error {
	if e.version == 1 {
		if n > math.MaxUint32 {
			return fmt.Errorf("%s %d does not fit version 1's u32", what, n)
		}
		e.u32(uint32(n))
		return nil
	}
	e.u64(n)
	return nil
}

func (e *encoder) str(s string) error {
	if len(s) > maxStringLen {
		return fmt.Errorf("string of %d bytes exceeds the reader's limit of %d", len(s), maxStringLen)
	}
	if err := e.count(uint64(len(s)), "string length"); err != nil {
		return err
	}
	e.buf.WriteString(s)
	return nil
}

func (e *encoder) pad(align uint64) {
	for uint64(e.buf.Len())%align != 0 {
		e.buf.WriteByte(0)
	}
}

// value writes a value's type tag and the value.
func (e *encoder) value(v Value, depth int) error {
	if v.Type == invalidType {
		return fmt.Errorf("cannot encode Go type %T", v.V)
	}
	if v.Type == TypeArray {
		e.u32(uint32(TypeArray))
		return e.array(v.ElemType, v.V, depth)
	}
	if t, ok := scalarType(v.V); !ok || t != v.Type {
		return fmt.Errorf("%s value holds Go type %T", v.Type, v.V)
	}
	e.u32(uint32(v.Type))
	if s, ok := v.V.(string); ok {
		return e.str(s)
	}
	e.scalar(v.V)
	return nil
}

// scalar writes a scalar whose Go type scalarType accepted.
func (e *encoder) scalar(v any) {
	switch x := v.(type) {
	case uint8:
		e.u8(x)
	case int8:
		e.u8(uint8(x))
	case uint16:
		e.u16(x)
	case int16:
		e.u16(uint16(x))
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case bool:
		if x {
			e.u8(1)
		} else {
			e.u8(0)
		}
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	}
}

// array writes an array's element type, length and elements (the tag
// TypeArray is already written).
func (e *encoder) array(elem ValueType, v any, depth int) error {
	if depth > maxArrayDepth {
		return fmt.Errorf("arrays nested more than %d deep", maxArrayDepth+1)
	}
	et, ok := arrayElemType(v)
	if !ok || et != elem {
		return fmt.Errorf("array of %s holds Go type %T", elem, v)
	}
	e.u32(uint32(elem))
	switch x := v.(type) {
	case []string:
		if err := e.count(uint64(len(x)), "array length"); err != nil {
			return err
		}
		for _, s := range x {
			if err := e.str(s); err != nil {
				return err
			}
		}
		return nil
	case []any:
		if err := e.count(uint64(len(x)), "array length"); err != nil {
			return err
		}
		for i, inner := range x {
			it, ok := arrayElemType(inner)
			if !ok {
				return fmt.Errorf("array of arrays: element %d is Go type %T, not a slice", i, inner)
			}
			if err := e.array(it, inner, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	n := sliceLen(v)
	if err := e.count(uint64(n), "array length"); err != nil {
		return err
	}
	forEachScalar(v, e.scalar)
	return nil
}

func sliceLen(v any) int {
	if b, ok := v.([]byte); ok {
		return len(b)
	}
	return lenAny(v)
}

func forEachScalar(v any, f func(any)) {
	switch x := v.(type) {
	case []uint8:
		for _, s := range x {
			f(s)
		}
	case []int8:
		for _, s := range x {
			f(s)
		}
	case []uint16:
		for _, s := range x {
			f(s)
		}
	case []int16:
		for _, s := range x {
			f(s)
		}
	case []uint32:
		for _, s := range x {
			f(s)
		}
	case []int32:
		for _, s := range x {
			f(s)
		}
	case []float32:
		for _, s := range x {
			f(s)
		}
	case []bool:
		for _, s := range x {
			f(s)
		}
	case []uint64:
		for _, s := range x {
			f(s)
		}
	case []int64:
		for _, s := range x {
			f(s)
		}
	case []float64:
		for _, s := range x {
			f(s)
		}
	}
}
