package gguf_test

import (
	"bytes"
	"errors"
	"io"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/runtime/gguf"
)

// allValues holds one metadata entry of every value type, arrays of every
// element type (empty ones too) and arrays of arrays.
func allValues() []gguf.KV {
	return []gguf.KV{
		{"general.architecture", gguf.Val("llama")},
		{"t.u8", gguf.Val(uint8(200))},
		{"t.i8", gguf.Val(int8(-100))},
		{"t.u16", gguf.Val(uint16(60000))},
		{"t.i16", gguf.Val(int16(-30000))},
		{"t.u32", gguf.Val(uint32(4000000000))},
		{"t.i32", gguf.Val(int32(-2000000000))},
		{"t.f32", gguf.Val(float32(-1.5e-7))},
		{"t.bool.true", gguf.Val(true)},
		{"t.bool.false", gguf.Val(false)},
		{"t.str", gguf.Val("héllo\x00wörld")},
		{"t.str.empty", gguf.Val("")},
		{"t.u64", gguf.Val(uint64(math.MaxUint64))},
		{"t.i64", gguf.Val(int64(math.MinInt64))},
		{"t.f64", gguf.Val(math.Pi)},
		{"a.u8", gguf.Val([]uint8{0, 1, 255})},
		{"a.i8", gguf.Val([]int8{-128, 0, 127})},
		{"a.u16", gguf.Val([]uint16{1, 65535})},
		{"a.i16", gguf.Val([]int16{-32768, 32767})},
		{"a.u32", gguf.Val([]uint32{7, 4294967295})},
		{"a.i32", gguf.Val([]int32{-1, 2, -3})},
		{"a.f32", gguf.Val([]float32{0.5, float32(math.Inf(1)), -0})},
		{"a.bool", gguf.Val([]bool{true, false, true})},
		{"a.str", gguf.Val([]string{"<s>", "", "▁the", "\n"})},
		{"a.u64", gguf.Val([]uint64{1 << 63})},
		{"a.i64", gguf.Val([]int64{-1 << 62})},
		{"a.f64", gguf.Val([]float64{1e300, -2})},
		{"a.empty.f32", gguf.Val([]float32{})},
		{"a.empty.str", gguf.Val([]string{})},
		{"a.nested", gguf.Val([]any{[]int32{1, 2}, []string{"x"}, []any{[]uint8{9}}, []float64{}})},
	}
}

// randomTensors has one tensor of every known type with random bytes.
func randomTensors(rng *rand.Rand) []gguf.TensorToWrite {
	var ts []gguf.TensorToWrite
	for i, typ := range []gguf.GGMLType{gguf.F32, gguf.F16, gguf.BF16, gguf.Q4_0, gguf.Q4_1, gguf.Q5_0, gguf.Q5_1,
		gguf.Q8_0, gguf.Q8_1, gguf.Q2_K, gguf.Q3_K, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K, gguf.Q8_K} {
		dims := []uint64{uint64(typ.BlockSize() * (1 + i%3)), uint64(1 + i%4)}
		if i%5 == 0 {
			dims = append(dims, 3) // some 3-d tensors
		}
		n := uint64(1)
		for _, d := range dims {
			n *= d
		}
		data := make([]byte, n/uint64(typ.BlockSize())*uint64(typ.BlockBytes()))
		rng.Read(data)
		ts = append(ts, gguf.TensorToWrite{Name: "t." + typ.String(), Dims: dims, Type: typ, Data: data})
	}
	return ts
}

func checkRoundTrip(t *testing.T, file []byte, meta []gguf.KV, tensors []gguf.TensorToWrite, align uint64) *gguf.File {
	t.Helper()
	g, err := gguf.Parse(bytes.NewReader(file), uint64(len(file)))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(g.Keys) != len(meta) {
		t.Fatalf("%d keys, want %d", len(g.Keys), len(meta))
	}
	for i, kv := range meta {
		if g.Keys[i] != kv.Key {
			t.Fatalf("key %d is %q, want %q", i, g.Keys[i], kv.Key)
		}
		got := g.Metadata[kv.Key]
		if !reflect.DeepEqual(got, kv.Value) {
			t.Errorf("%s: read %#v, wrote %#v", kv.Key, got, kv.Value)
		}
	}
	if g.Alignment != align || g.DataOffset%align != 0 {
		t.Errorf("alignment %d, data offset %d; want alignment %d", g.Alignment, g.DataOffset, align)
	}
	if len(g.Tensors) != len(tensors) {
		t.Fatalf("%d tensors, want %d", len(g.Tensors), len(tensors))
	}
	for i, w := range tensors {
		ti := g.Tensors[i]
		if ti.Name != w.Name || ti.Type != w.Type || !reflect.DeepEqual(ti.Dims, w.Dims) {
			t.Errorf("tensor %d: read %s %s %v, wrote %s %s %v", i, ti.Name, ti.Type, ti.Dims, w.Name, w.Type, w.Dims)
		}
		if ti.Offset%align != 0 {
			t.Errorf("%s: offset %d not aligned to %d", ti.Name, ti.Offset, align)
		}
		got, err := g.ReadTensor(ti)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, w.Data) {
			t.Errorf("%s: data differs", ti.Name)
		}
	}
	return g
}

func TestWriteRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	tensors := randomTensors(rng)
	for _, version := range []uint32{1, 2, 3} {
		for _, align := range []uint32{0, 1, 8, 64, 4096} {
			meta := allValues()
			want := uint64(gguf.DefaultAlignment)
			if align != 0 {
				meta = append(meta, gguf.KV{Key: "general.alignment", Value: gguf.Val(align)})
				want = uint64(align)
			}
			var buf bytes.Buffer
			if err := (gguf.Writer{Version: version}).Write(&buf, meta, tensors); err != nil {
				t.Fatalf("v%d align %d: %v", version, align, err)
			}
			g := checkRoundTrip(t, buf.Bytes(), meta, tensors, want)
			if g.Version != version {
				t.Errorf("version %d, want %d", g.Version, version)
			}
		}
	}
	// No tensors and no metadata is a valid (header-only) file.
	var buf bytes.Buffer
	if err := gguf.Write(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	checkRoundTrip(t, buf.Bytes(), nil, nil, gguf.DefaultAlignment)
	if buf.Len() != 32 {
		t.Errorf("empty file is %d bytes, want 32 (magic, version, two counts, padding to 32)", buf.Len())
	}
}

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	tensors := randomTensors(rand.New(rand.NewSource(2)))
	if err := gguf.WriteFile(path, allValues(), tensors); err != nil {
		t.Fatal(err)
	}
	g, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Architecture() != "llama" || len(g.Tensors) != len(tensors) {
		t.Fatalf("arch %q, %d tensors", g.Architecture(), len(g.Tensors))
	}
	// A failed write leaves no file behind.
	bad := filepath.Join(t.TempDir(), "bad.gguf")
	if err := gguf.WriteFile(bad, []gguf.KV{{"x", gguf.Val(3)}}, nil); err == nil {
		t.Fatal("WriteFile with an int value: no error")
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("failed WriteFile left %s behind (%v)", bad, err)
	}
}

func TestWriteErrors(t *testing.T) {
	f16 := func(name string, dims []uint64, n int) gguf.TensorToWrite {
		return gguf.TensorToWrite{Name: name, Dims: dims, Type: gguf.F16, Data: make([]byte, 2*n)}
	}
	cases := []struct {
		name    string
		version uint32
		meta    []gguf.KV
		tensors []gguf.TensorToWrite
		want    string
	}{
		{"int value", 3, []gguf.KV{{"k", gguf.Val(5)}}, nil, "cannot encode Go type int"},
		{"type mismatch", 3, []gguf.KV{{"k", gguf.Value{Type: gguf.TypeUint32, V: int32(5)}}}, nil, "uint32 value holds Go type int32"},
		{"array mismatch", 3, []gguf.KV{{"k", gguf.Value{Type: gguf.TypeArray, ElemType: gguf.TypeString, V: []int32{1}}}}, nil, "array of string holds Go type []int32"},
		{"nested non-slice", 3, []gguf.KV{{"k", gguf.Val([]any{"x"})}}, nil, "element 0 is Go type string"},
		{"nested too deep", 3, []gguf.KV{{"k", gguf.Val([]any{[]any{[]any{[]any{}}}})}}, nil, "nested more than 3 deep"},
		{"duplicate key", 3, []gguf.KV{{"k", gguf.Val("a")}, {"k", gguf.Val("b")}}, nil, `duplicate metadata key "k"`},
		{"alignment type", 3, []gguf.KV{{"general.alignment", gguf.Val(uint64(32))}}, nil, "general.alignment"},
		{"alignment not power of two", 3, []gguf.KV{{"general.alignment", gguf.Val(uint32(24))}}, nil, "power-of-two"},
		{"version 4", 4, nil, nil, "cannot write version 4"},
		{"duplicate tensor", 3, nil, []gguf.TensorToWrite{f16("a", []uint64{2}, 2), f16("a", []uint64{2}, 2)}, `duplicate tensor name "a"`},
		{"empty name", 3, nil, []gguf.TensorToWrite{f16("", []uint64{2}, 2)}, "must be 1 to 63 bytes"},
		{"long name", 3, nil, []gguf.TensorToWrite{f16(strings.Repeat("n", 64), []uint64{2}, 2)}, "must be 1 to 63 bytes"},
		{"no dims", 3, nil, []gguf.TensorToWrite{f16("a", nil, 1)}, "0 dimensions"},
		{"five dims", 3, nil, []gguf.TensorToWrite{f16("a", []uint64{1, 1, 1, 1, 1}, 1)}, "5 dimensions"},
		{"zero dim", 3, nil, []gguf.TensorToWrite{f16("a", []uint64{2, 0}, 0)}, "dimensions [2 0]"},
		{"huge dims", 3, nil, []gguf.TensorToWrite{f16("a", []uint64{1 << 30, 1 << 30}, 0)}, "product at most 2^50"},
		{"short data", 3, nil, []gguf.TensorToWrite{f16("a", []uint64{4, 3}, 11)}, "needs 24 bytes of data, has 22"},
		{"unknown type", 3, nil, []gguf.TensorToWrite{{Name: "a", Dims: []uint64{1}, Type: 99, Data: []byte{0}}}, "unknown type 99"},
		{"partial block", 3, nil, []gguf.TensorToWrite{{Name: "a", Dims: []uint64{16}, Type: gguf.Q4_0, Data: make([]byte, 9)}}, "not a whole number of Q4_0 blocks"},
		{"v1 dim overflow", 1, nil, []gguf.TensorToWrite{f16("a", []uint64{1 << 32}, 0)}, "does not fit version 1"},
	}
	for _, c := range cases {
		var buf bytes.Buffer
		err := (gguf.Writer{Version: c.version}).Write(&buf, c.meta, c.tensors)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: %d bytes written before the error", c.name, buf.Len())
		}
	}
}

// Rewriting kjv-30m's metadata and tensors reproduces llama.cpp's file
// byte for byte: same value encodings, tensor offsets and padding.
func TestRewriteKJVIdentical(t *testing.T) {
	dir := filepath.Join(sharedfiles.SharedDir(t), "models")
	for _, name := range []string{"kjv-30m-f16.gguf", "kjv-30m-q4_k_m.gguf"} {
		path := filepath.Join(dir, name)
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		g, err := gguf.Parse(bytes.NewReader(orig), uint64(len(orig)))
		if err != nil {
			t.Fatal(err)
		}
		meta := make([]gguf.KV, len(g.Keys))
		for i, k := range g.Keys {
			meta[i] = gguf.KV{Key: k, Value: g.Metadata[k]}
		}
		// Write tensors in offset order, as llama.cpp laid them out.
		tensors := make([]gguf.TensorToWrite, len(g.Tensors))
		for i, ti := range g.Tensors {
			data, err := g.ReadTensor(ti)
			if err != nil {
				t.Fatal(err)
			}
			tensors[i] = gguf.TensorToWrite{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: data}
		}
		var buf bytes.Buffer
		if err := gguf.Write(&buf, meta, tensors); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), orig) {
			n := min(buf.Len(), len(orig))
			at := n
			for i := 0; i < n; i++ {
				if buf.Bytes()[i] != orig[i] {
					at = i
					break
				}
			}
			t.Errorf("%s: rewrite differs from the original at byte %d (lengths %d, %d)", name, at, buf.Len(), len(orig))
		}
	}
}

// countingWriter records how many bytes have gone through it.
type countingWriter struct{ n int }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += len(p); return len(p), nil }

// Tensors given by Encode are produced one at a time as the writer reaches
// them, and the file is the same as with Data.
func TestWriteEncode(t *testing.T) {
	tensors := randomTensors(rand.New(rand.NewSource(3)))
	var want bytes.Buffer
	if err := gguf.Write(&want, allValues(), tensors); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	cw := &countingWriter{}
	w := io.MultiWriter(&got, cw)
	lazy := make([]gguf.TensorToWrite, len(tensors))
	var writtenAtCall []int
	for i, ts := range tensors {
		lazy[i] = gguf.TensorToWrite{Name: ts.Name, Dims: ts.Dims, Type: ts.Type, Encode: func() ([]byte, error) {
			writtenAtCall = append(writtenAtCall, cw.n)
			return ts.Data, nil
		}}
	}
	if err := gguf.Write(w, allValues(), lazy); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatal("file written through Encode differs from the one written from Data")
	}
	if len(writtenAtCall) != len(tensors) {
		t.Fatalf("Encode ran %d times for %d tensors", len(writtenAtCall), len(tensors))
	}
	for i := 1; i < len(writtenAtCall); i++ {
		if writtenAtCall[i] <= writtenAtCall[i-1] {
			t.Fatalf("Encode %d ran before tensor %d was written (%d bytes out, then %d)", i, i-1, writtenAtCall[i-1], writtenAtCall[i])
		}
	}

	short := []gguf.TensorToWrite{{Name: "a", Dims: []uint64{4}, Type: gguf.F16, Encode: func() ([]byte, error) { return make([]byte, 6), nil }}}
	if err := gguf.Write(io.Discard, nil, short); err == nil || !strings.Contains(err.Error(), "needs 8 bytes of data, Encode gave 6") {
		t.Errorf("short Encode result: %v", err)
	}
	failing := []gguf.TensorToWrite{{Name: "a", Dims: []uint64{4}, Type: gguf.F16, Encode: func() ([]byte, error) { return nil, io.ErrUnexpectedEOF }}}
	if err := gguf.Write(io.Discard, nil, failing); !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), `tensor "a"`) {
		t.Errorf("failing Encode: %v", err)
	}
}
