// Package gguf reads GGUF model files (versions 1 to 3): the header,
// metadata of every value type, tensor infos and the aligned data section.
// Every count, length and offset read from the file is checked against the
// file's size before anything is allocated, so a hostile file gets an error
// that says what is wrong and where, never a panic or a huge allocation.
package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
)

// Magic is "GGUF" read as a little-endian uint32.
const Magic = 0x46554747

// DefaultAlignment applies when general.alignment is absent.
const DefaultAlignment = 32

// ValueType is the type tag of a metadata value.
type ValueType uint32

const (
	TypeUint8 ValueType = iota
	TypeInt8
	TypeUint16
	TypeInt16
	TypeUint32
	TypeInt32
	TypeFloat32
	TypeBool
	TypeString
	TypeArray
	TypeUint64
	TypeInt64
	TypeFloat64
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// Value is one metadata value. Scalars are stored in their Go type (uint8 ...
// float64, bool, string); arrays as []T of the element's Go type ([]string,
// []float32, []int32, ...), or []any for arrays of arrays.
type Value struct {
	Type     ValueType
	ElemType ValueType // for arrays
	V        any
}

// TensorInfo describes one tensor. Dims are in GGUF order: Dims[0] is the
// innermost (contiguous) dimension, so a weight with Dims [K, N] is N rows
// of K elements.
type TensorInfo struct {
	Name   string
	Dims   []uint64
	Type   GGMLType
	Offset uint64 // relative to the data section
	Size   uint64 // bytes
}

// Elements is the product of the dimensions.
func (t TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is a parsed GGUF header. The tensor data stays in the file; read it
// with TensorData (a section reader) or ReadTensor.
type File struct {
	Version    uint32
	Metadata   map[string]Value
	Keys       []string // metadata keys in file order
	Tensors    []TensorInfo
	Alignment  uint64
	DataOffset uint64 // absolute offset of the data section
	FileSize   uint64

	r      io.ReaderAt
	closer io.Closer
	byName map[string]int

	mu     sync.Mutex   // guards the fields below
	closed bool         // Close ran
	data   []byte       // the file's bytes once Mmap ran
	unmap  func() error // releases data when it is a mapping
}

// Open parses the file at path.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	g, err := Parse(f, uint64(st.Size()))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	g.closer = f
	return g, nil
}

// ParseBytes parses a file held in memory (in the browser: a model the page
// downloaded or the user picked). Mmap and TensorBytes return b and slices
// of it, never a copy, so a model costs its size once; b must not be
// changed while the File is in use.
func ParseBytes(b []byte) (*File, error) {
	g, err := Parse(bytes.NewReader(b), uint64(len(b)))
	if err != nil {
		return nil, err
	}
	g.data = b
	return g, nil
}

// FormatError says what is wrong with a file and at which byte offset.
type FormatError struct {
	Offset uint64
	Msg    string
}

func (e *FormatError) Error() string { return fmt.Sprintf("gguf: at byte %d: %s", e.Offset, e.Msg) }

// ErrFormat is matched by every FormatError through errors.Is.
var ErrFormat = errors.New("gguf: malformed file")

func (e *FormatError) Is(target error) bool { return target == ErrFormat }

// Limits that keep a hostile header from asking for absurd work.
const (
	maxTensors   = 1 << 20
	maxKVs       = 1 << 20
	maxDims      = 4
	maxStringLen = 1 << 28
)

type reader struct {
	r    io.ReaderAt
	off  uint64
	size uint64
	buf  [8]byte
}

func (r *reader) fail(format string, a ...any) error {
	return &FormatError{Offset: r.off, Msg: fmt.Sprintf(format, a...)}
}

func (r *reader) read(n int) ([]byte, error) {
	if r.off+uint64(n) > r.size {
		return nil, r.fail("unexpected end of file (need %d bytes, file is %d)", n, r.size)
	}
	b := r.buf[:n]
	if err := readFullAt(r.r, b, r.off); err != nil {
		return nil, r.fail("read: %v", err)
	}
	r.off += uint64(n)
	return b, nil
}

// readFullAt fills b from offset off. Unlike a bare ReadAt it accepts an
// empty read at the end of the input (bytes.Reader reports io.EOF there)
// and a full read that also reports io.EOF, as io.ReaderAt allows.
func readFullAt(r io.ReaderAt, b []byte, off uint64) error {
	if len(b) == 0 {
		return nil
	}
	if off > math.MaxInt64 {
		return fmt.Errorf("offset %d out of range", off)
	}
	n, err := r.ReadAt(b, int64(off))
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (r *reader) u8() (uint8, error) {
	b, err := r.read(1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (r *reader) u16() (uint16, error) {
	b, err := r.read(2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

func (r *reader) u32() (uint32, error) {
	b, err := r.read(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *reader) u64() (uint64, error) {
	b, err := r.read(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// count reads a length or count (u64 in v2 and v3, u32 in v1) and checks that that
// many items of at least minItem bytes each could fit in the rest of the file.
func (r *reader) count(version uint32, what string, minItem uint64, limit uint64) (uint64, error) {
	at := r.off
	var n uint64
	if version == 1 {
		v, err := r.u32()
		if err != nil {
			return 0, err
		}
		n = uint64(v)
	} else {
		v, err := r.u64()
		if err != nil {
			return 0, err
		}
		n = v
	}
	if limit > 0 && n > limit {
		return 0, &FormatError{Offset: at, Msg: fmt.Sprintf("%s %d exceeds the limit of %d", what, n, limit)}
	}
	if minItem > 0 && n > (r.size-r.off)/minItem {
		return 0, &FormatError{Offset: at, Msg: fmt.Sprintf("%s %d cannot fit in the %d bytes left in the file", what, n, r.size-r.off)}
	}
	return n, nil
}

func (r *reader) str(version uint32) (string, error) {
	n, err := r.count(version, "string length", 1, maxStringLen)
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	if err := readFullAt(r.r, b, r.off); err != nil {
		return "", r.fail("read string: %v", err)
	}
	r.off += n
	return string(b), nil
}

// scalarSize is the encoded size of a scalar type, 0 for string/array.
func scalarSize(t ValueType) uint64 {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

func (r *reader) scalar(t ValueType) (any, error) {
	switch t {
	case TypeUint8:
		return r.u8()
	case TypeInt8:
		v, err := r.u8()
		return int8(v), err
	case TypeUint16:
		return r.u16()
	case TypeInt16:
		v, err := r.u16()
		return int16(v), err
	case TypeUint32:
		return r.u32()
	case TypeInt32:
		v, err := r.u32()
		return int32(v), err
	case TypeFloat32:
		v, err := r.u32()
		return math.Float32frombits(v), err
	case TypeBool:
		v, err := r.u8()
		if err == nil && v > 1 {
			return nil, r.fail("bool value %d is neither 0 nor 1", v)
		}
		return v == 1, err
	case TypeUint64:
		return r.u64()
	case TypeInt64:
		v, err := r.u64()
		return int64(v), err
	case TypeFloat64:
		v, err := r.u64()
		return math.Float64frombits(v), err
	}
	return nil, r.fail("unknown value type %d", uint32(t))
}

func (r *reader) value(version uint32, t ValueType, depth int) (Value, error) {
	switch t {
	case TypeString:
		s, err := r.str(version)
		return Value{Type: t, V: s}, err
	case TypeArray:
		if depth > 2 {
			return Value{}, r.fail("arrays nested too deeply")
		}
		et, err := r.u32()
		if err != nil {
			return Value{}, err
		}
		elem := ValueType(et)
		if elem > TypeFloat64 {
			return Value{}, r.fail("unknown array element type %d", et)
		}
		minItem := scalarSize(elem)
		if minItem == 0 {
			minItem = 8 // a string or array header is at least a length
			if version == 1 {
				minItem = 4
			}
		}
		n, err := r.count(version, "array length", minItem, 0)
		if err != nil {
			return Value{}, err
		}
		v, err := r.array(version, elem, int(n), depth)
		return Value{Type: TypeArray, ElemType: elem, V: v}, err
	default:
		if scalarSize(t) == 0 {
			return Value{}, r.fail("unknown value type %d", uint32(t))
		}
		v, err := r.scalar(t)
		return Value{Type: t, V: v}, err
	}
}

func (r *reader) array(version uint32, elem ValueType, n int, depth int) (any, error) {
	switch elem {
	case TypeString:
		out := make([]string, n)
		for i := range out {
			s, err := r.str(version)
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	case TypeArray:
		out := make([]any, n)
		for i := range out {
			v, err := r.value(version, TypeArray, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = v.V
		}
		return out, nil
	}
	// Scalars: read the whole block at once (its size was checked by count).
	size := scalarSize(elem)
	raw := make([]byte, uint64(n)*size)
	if err := readFullAt(r.r, raw, r.off); err != nil {
		return nil, r.fail("read array: %v", err)
	}
	r.off += uint64(len(raw))
	le := binary.LittleEndian
	switch elem {
	case TypeUint8:
		return raw, nil
	case TypeInt8:
		out := make([]int8, n)
		for i := range out {
			out[i] = int8(raw[i])
		}
		return out, nil
	case TypeBool:
		out := make([]bool, n)
		for i := range out {
			if raw[i] > 1 {
				return nil, &FormatError{Offset: r.off - uint64(len(raw)) + uint64(i), Msg: fmt.Sprintf("bool value %d is neither 0 nor 1", raw[i])}
			}
			out[i] = raw[i] == 1
		}
		return out, nil
	case TypeUint16:
		out := make([]uint16, n)
		for i := range out {
			out[i] = le.Uint16(raw[2*i:])
		}
		return out, nil
	case TypeInt16:
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(le.Uint16(raw[2*i:]))
		}
		return out, nil
	case TypeUint32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = le.Uint32(raw[4*i:])
		}
		return out, nil
	case TypeInt32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(raw[4*i:]))
		}
		return out, nil
	case TypeFloat32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		return out, nil
	case TypeUint64:
		out := make([]uint64, n)
		for i := range out {
			out[i] = le.Uint64(raw[8*i:])
		}
		return out, nil
	case TypeInt64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(raw[8*i:]))
		}
		return out, nil
	case TypeFloat64:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
		}
		return out, nil
	}
	return nil, r.fail("unknown array element type %d", uint32(elem))
}

// Parse reads a GGUF header from r, whose total size is size bytes.
func Parse(ra io.ReaderAt, size uint64) (*File, error) {
	r := &reader{r: ra, size: size}
	magic, err := r.u32()
	if err != nil {
		return nil, err
	}
	if magic != Magic {
		return nil, &FormatError{Offset: 0, Msg: fmt.Sprintf("bad magic %#08x: not a GGUF file", magic)}
	}
	version, err := r.u32()
	if err != nil {
		return nil, err
	}
	if version < 1 || version > 3 {
		hint := ""
		if version != 0 && version&0xFFFF == 0 {
			hint = "; a big-endian file?"
		}
		return nil, &FormatError{Offset: 4, Msg: fmt.Sprintf("unsupported GGUF version %d (1 to 3 are supported%s)", version, hint)}
	}
	// Version 1 wrote counts, lengths and dimensions as u32; versions 2 and
	// 3 as u64 (3 only added big-endian files, which this reader rejects
	// through their byte-swapped version number).
	lenSize := uint64(8)
	if version == 1 {
		lenSize = 4
	}
	// A tensor info is at least a name length, n_dims, one dim, type and offset.
	nTensors, err := r.count(version, "tensor count", lenSize+4+lenSize+4+8, maxTensors)
	if err != nil {
		return nil, err
	}
	// A metadata entry is at least a key length, a type and a 1-byte value.
	nKV, err := r.count(version, "metadata count", lenSize+4+1, maxKVs)
	if err != nil {
		return nil, err
	}
	g := &File{Version: version, Metadata: make(map[string]Value, nKV), FileSize: size, r: ra, byName: map[string]int{}}
	for i := uint64(0); i < nKV; i++ {
		at := r.off
		key, err := r.str(version)
		if err != nil {
			return nil, err
		}
		t, err := r.u32()
		if err != nil {
			return nil, err
		}
		v, err := r.value(version, ValueType(t), 0)
		if err != nil {
			return nil, fmt.Errorf("metadata %q: %w", key, err)
		}
		if _, dup := g.Metadata[key]; dup {
			return nil, &FormatError{Offset: at, Msg: fmt.Sprintf("duplicate metadata key %q", key)}
		}
		g.Metadata[key] = v
		g.Keys = append(g.Keys, key)
	}
	g.Alignment = DefaultAlignment
	if v, ok := g.Metadata["general.alignment"]; ok {
		a, ok := v.V.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return nil, &FormatError{Offset: 0, Msg: fmt.Sprintf("general.alignment %v is not a power of two uint32", v.V)}
		}
		g.Alignment = uint64(a)
	}
	g.Tensors = make([]TensorInfo, 0, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		at := r.off
		name, err := r.str(version)
		if err != nil {
			return nil, err
		}
		nd, err := r.u32()
		if err != nil {
			return nil, err
		}
		if nd == 0 || nd > maxDims {
			return nil, &FormatError{Offset: at, Msg: fmt.Sprintf("tensor %q has %d dimensions (1..%d allowed)", name, nd, maxDims)}
		}
		ti := TensorInfo{Name: name, Dims: make([]uint64, nd)}
		elems := uint64(1)
		for d := range ti.Dims {
			var v uint64
			if version == 1 {
				x, err := r.u32()
				if err != nil {
					return nil, err
				}
				v = uint64(x)
			} else if v, err = r.u64(); err != nil {
				return nil, err
			}
			if v == 0 || int64(v) < 0 {
				return nil, &FormatError{Offset: at, Msg: fmt.Sprintf("tensor %q dimension %d is %d", name, d, int64(v))}
			}
			ti.Dims[d] = v
			if elems > math.MaxUint64/v || elems*v > 1<<50 {
				return nil, &FormatError{Offset: at, Msg: fmt.Sprintf("tensor %q dimensions %v are absurdly large", name, ti.Dims[:d+1])}
			}
			elems *= v
		}
		typ, err := r.u32()
		if err != nil {
			return nil, err
		}
		ti.Type = GGMLType(typ)
		if !ti.Type.Known() {
			return nil, &FormatError{Offset: at, Msg: fmt.Sprintf("tensor %q has unknown type %d", name, typ)}
		}
		if ti.Dims[0]%uint64(ti.Type.BlockSize()) != 0 {
			return nil, &FormatError{Offset: at, Msg: fmt.Sprintf("tensor %q: row of %d elements is not a whole number of %s blocks of %d", name, ti.Dims[0], ti.Type, ti.Type.BlockSize())}
		}
		ti.Size = elems / uint64(ti.Type.BlockSize()) * uint64(ti.Type.BlockBytes())
		if ti.Offset, err = r.u64(); err != nil {
			return nil, err
		}
		if ti.Offset%g.Alignment != 0 {
			return nil, &FormatError{Offset: at, Msg: fmt.Sprintf("tensor %q offset %d is not aligned to %d", name, ti.Offset, g.Alignment)}
		}
		if _, dup := g.byName[name]; dup {
			return nil, &FormatError{Offset: at, Msg: fmt.Sprintf("duplicate tensor name %q", name)}
		}
		g.byName[name] = len(g.Tensors)
		g.Tensors = append(g.Tensors, ti)
	}
	g.DataOffset = (r.off + g.Alignment - 1) / g.Alignment * g.Alignment
	if nTensors > 0 && g.DataOffset > size {
		return nil, &FormatError{Offset: r.off, Msg: "file ends before the tensor data section"}
	}
	dataSize := size - min(g.DataOffset, size)
	// Tensors must lie inside the file and must not overlap.
	order := make([]int, len(g.Tensors))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return g.Tensors[order[a]].Offset < g.Tensors[order[b]].Offset })
	end := uint64(0)
	for _, i := range order {
		t := g.Tensors[i]
		if t.Offset > dataSize || t.Size > dataSize-t.Offset {
			return nil, &FormatError{Offset: g.DataOffset + t.Offset, Msg: fmt.Sprintf("tensor %q (%d bytes at data offset %d) runs past the end of the file (%d data bytes): truncated?", t.Name, t.Size, t.Offset, dataSize)}
		}
		if t.Offset < end {
			return nil, &FormatError{Offset: g.DataOffset + t.Offset, Msg: fmt.Sprintf("tensor %q overlaps the tensor before it", t.Name)}
		}
		end = t.Offset + t.Size
	}
	return g, nil
}

// Tensor returns the named tensor's info.
func (g *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := g.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return g.Tensors[i], true
}

// TensorData returns a reader over a tensor's bytes.
func (g *File) TensorData(t TensorInfo) *io.SectionReader {
	return io.NewSectionReader(g.r, int64(g.DataOffset+t.Offset), int64(t.Size))
}

// ReadTensor reads a tensor's bytes into memory.
func (g *File) ReadTensor(t TensorInfo) ([]byte, error) {
	b := make([]byte, t.Size)
	if err := readFullAt(g.r, b, g.DataOffset+t.Offset); err != nil {
		return nil, fmt.Errorf("gguf: reading tensor %q: %w", t.Name, err)
	}
	return b, nil
}

// Architecture is general.architecture ("llama", "qwen2", ...).
func (g *File) Architecture() string {
	s, _ := g.String("general.architecture")
	return s
}

// String returns a string value.
func (g *File) String(key string) (string, bool) {
	v, ok := g.Metadata[key]
	if !ok {
		return "", false
	}
	s, ok := v.V.(string)
	return s, ok
}

// Uint returns any unsigned or non-negative signed integer value as uint64.
func (g *File) Uint(key string) (uint64, bool) {
	v, ok := g.Metadata[key]
	if !ok {
		return 0, false
	}
	switch x := v.V.(type) {
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	case int8:
		return uint64(x), x >= 0
	case int16:
		return uint64(x), x >= 0
	case int32:
		return uint64(x), x >= 0
	case int64:
		return uint64(x), x >= 0
	}
	return 0, false
}

// Uint32 returns an integer value that fits a uint32.
func (g *File) Uint32(key string) (uint32, bool) {
	v, ok := g.Uint(key)
	if !ok || v > math.MaxUint32 {
		return 0, false
	}
	return uint32(v), true
}

// Float returns any numeric value as float64.
func (g *File) Float(key string) (float64, bool) {
	v, ok := g.Metadata[key]
	if !ok {
		return 0, false
	}
	switch x := v.V.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	if u, ok := g.Uint(key); ok {
		return float64(u), true
	}
	return 0, false
}

// Bool returns a bool value.
func (g *File) Bool(key string) (bool, bool) {
	v, ok := g.Metadata[key]
	if !ok {
		return false, false
	}
	b, ok := v.V.(bool)
	return b, ok
}

// Strings returns a string array.
func (g *File) Strings(key string) ([]string, bool) {
	v, ok := g.Metadata[key]
	if !ok {
		return nil, false
	}
	s, ok := v.V.([]string)
	return s, ok
}

// Float32s returns a float32 array.
func (g *File) Float32s(key string) ([]float32, bool) {
	v, ok := g.Metadata[key]
	if !ok {
		return nil, false
	}
	s, ok := v.V.([]float32)
	return s, ok
}

// Int32s returns an integer array (int32 or uint32 elements) as int32.
func (g *File) Int32s(key string) ([]int32, bool) {
	v, ok := g.Metadata[key]
	if !ok {
		return nil, false
	}
	switch s := v.V.(type) {
	case []int32:
		return s, true
	case []uint32:
		out := make([]int32, len(s))
		for i, x := range s {
			out[i] = int32(x)
		}
		return out, true
	}
	return nil, false
}

// ArchUint reads "<arch>.<suffix>", e.g. ArchUint("block_count").
func (g *File) ArchUint(suffix string) (uint64, bool) {
	return g.Uint(g.Architecture() + "." + suffix)
}

// ArchFloat reads "<arch>.<suffix>" as float64.
func (g *File) ArchFloat(suffix string) (float64, bool) {
	return g.Float(g.Architecture() + "." + suffix)
}

// Describe renders a value briefly (arrays summarised), for `wgllm info`.
func (v Value) Describe() string {
	if v.Type != TypeArray {
		return fmt.Sprint(v.V)
	}
	n := 0
	switch x := v.V.(type) {
	case []string:
		n = len(x)
		if n <= 4 {
			return "[" + strings.Join(x, ", ") + "]"
		}
	case []byte:
		n = len(x)
	default:
		n = lenAny(v.V)
	}
	return fmt.Sprintf("[%d × %s]", n, v.ElemType)
}

func lenAny(v any) int {
	switch x := v.(type) {
	case []int8:
		return len(x)
	case []bool:
		return len(x)
	case []uint16:
		return len(x)
	case []int16:
		return len(x)
	case []uint32:
		return len(x)
	case []int32:
		return len(x)
	case []float32:
		return len(x)
	case []uint64:
		return len(x)
	case []int64:
		return len(x)
	case []float64:
		return len(x)
	case []any:
		return len(x)
	}
	return 0
}
