package gguf_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"runtime"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/runtime/gguf"
)

// rawFile builds GGUF bytes field by field, so malformed files can say
// exactly what they hold. lenSize is 8 (v2, v3) or 4 (v1).
type rawFile struct {
	b       []byte
	lenSize int
}

func newRaw(version uint32) *rawFile {
	r := &rawFile{lenSize: 8}
	if version == 1 {
		r.lenSize = 4
	}
	return r.u32(gguf.Magic).u32(version)
}

func (r *rawFile) u8(v uint8) *rawFile { r.b = append(r.b, v); return r }
func (r *rawFile) u32(v uint32) *rawFile {
	r.b = binary.LittleEndian.AppendUint32(r.b, v)
	return r
}
func (r *rawFile) u64(v uint64) *rawFile {
	r.b = binary.LittleEndian.AppendUint64(r.b, v)
	return r
}

// n writes a count, length or dimension in the version's width.
func (r *rawFile) n(v uint64) *rawFile {
	if r.lenSize == 4 {
		return r.u32(uint32(v))
	}
	return r.u64(v)
}
func (r *rawFile) str(s string) *rawFile { r.n(uint64(len(s))); r.b = append(r.b, s...); return r }

func (r *rawFile) kvU32(key string, v uint32) *rawFile {
	return r.str(key).u32(uint32(gguf.TypeUint32)).u32(v)
}
func (r *rawFile) kvStr(key, v string) *rawFile {
	return r.str(key).u32(uint32(gguf.TypeString)).str(v)
}

// info writes a tensor info.
func (r *rawFile) info(name string, typ gguf.GGMLType, off uint64, dims ...uint64) *rawFile {
	r.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		r.n(d)
	}
	return r.u32(uint32(typ)).u64(off)
}

// data pads to align and appends n bytes of tensor data.
func (r *rawFile) data(align, n int) []byte {
	for len(r.b)%align != 0 {
		r.b = append(r.b, 0)
	}
	return append(r.b, make([]byte, n)...)
}

// parseChecked parses data, failing the test on a panic or on more than
// maxAlloc bytes allocated (files here are at most a few KB, so any
// allocation sized from a hostile count stands out).
func parseChecked(t *testing.T, name string, data []byte) (*gguf.File, error) {
	t.Helper()
	const maxAlloc = 1 << 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	g, err := func() (g *gguf.File, err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
				t.Errorf("%s: Parse panicked: %v", name, p)
			}
		}()
		return gguf.Parse(bytes.NewReader(data), uint64(len(data)))
	}()
	runtime.ReadMemStats(&after)
	if a := after.TotalAlloc - before.TotalAlloc; a > maxAlloc {
		t.Errorf("%s: Parse allocated %d bytes for a %d-byte file", name, a, len(data))
	}
	return g, err
}

func TestMalformed(t *testing.T) {
	const big60, big40, big62 = 1 << 60, 1 << 40, 1 << 62
	cases := []struct {
		name string
		file []byte
		want string // substring of the error
	}{
		{"empty file", nil, "unexpected end of file"},
		{"bad magic", append([]byte("GGML"), newRaw(3).u64(0).u64(0).b[4:]...), "bad magic"},
		{"version 0", newRaw(0).u64(0).u64(0).b, "unsupported GGUF version 0 (1 to 3 are supported)"},
		{"version 4", newRaw(4).u64(0).u64(0).b, "unsupported GGUF version 4"},
		{"big-endian v3", newRaw(3 << 24).u64(0).u64(0).b, "big-endian"},
		{"tensor count 2^60", newRaw(3).u64(big60).u64(0).b, "tensor count 1152921504606846976 exceeds the limit"},
		{"tensor count beyond file", newRaw(3).u64(1000).u64(0).b, "tensor count 1000 cannot fit"},
		{"metadata count 2^60", newRaw(3).u64(0).u64(big60).b, "metadata count 1152921504606846976 exceeds the limit"},
		{"metadata count beyond file", newRaw(3).u64(0).u64(5000).kvU32("a", 1).b, "metadata count 5000 cannot fit"},
		{"array of 2^40 strings", newRaw(3).u64(0).u64(1).str("a").u32(uint32(gguf.TypeArray)).u32(uint32(gguf.TypeString)).u64(big40).str("x").b,
			"array length 1099511627776 cannot fit"},
		{"array of 2^40 u64", newRaw(3).u64(0).u64(1).str("a").u32(uint32(gguf.TypeArray)).u32(uint32(gguf.TypeUint64)).u64(big40).b,
			"array length 1099511627776 cannot fit"},
		{"array of 2^40 arrays", newRaw(3).u64(0).u64(1).str("a").u32(uint32(gguf.TypeArray)).u32(uint32(gguf.TypeArray)).u64(big40).b,
			"array length 1099511627776 cannot fit"},
		{"string length 2^62 (key)", newRaw(3).u64(0).u64(1).u64(big62).str("padding so that one entry could fit").b, "string length 4611686018427387904 exceeds the limit"},
		{"string length 2^62 (value)", newRaw(3).u64(0).u64(1).str("k").u32(uint32(gguf.TypeString)).u64(big62).b, "string length 4611686018427387904 exceeds the limit"},
		{"string longer than file", newRaw(3).u64(0).u64(1).str("k").u32(uint32(gguf.TypeString)).u64(100).str("abc").b, "string length 100 cannot fit"},
		{"unknown value type", newRaw(3).u64(0).u64(1).str("k").u32(13).u32(0).b, "unknown value type 13"},
		{"unknown array element type", newRaw(3).u64(0).u64(1).str("k").u32(uint32(gguf.TypeArray)).u32(77).u64(0).b, "unknown array element type 77"},
		{"arrays nested too deep", func() []byte {
			r := newRaw(3).u64(0).u64(1).str("k").u32(uint32(gguf.TypeArray))
			for i := 0; i < 5; i++ {
				r.u32(uint32(gguf.TypeArray)).u64(1)
			}
			return r.u32(uint32(gguf.TypeUint8)).u64(0).b
		}(), "nested too deeply"},
		{"bool value 2", newRaw(3).u64(0).u64(1).str("k").u32(uint32(gguf.TypeBool)).u8(2).b, "bool value 2"},
		{"bool array value 7", newRaw(3).u64(0).u64(1).str("k").u32(uint32(gguf.TypeArray)).u32(uint32(gguf.TypeBool)).u64(2).u8(1).u8(7).b, "bool value 7"},
		{"duplicate key", newRaw(3).u64(0).u64(2).kvU32("k", 1).kvU32("k", 2).b, `duplicate metadata key "k"`},
		{"alignment 0", newRaw(3).u64(0).u64(1).kvU32("general.alignment", 0).b, "general.alignment 0 is not a power of two"},
		{"alignment 48", newRaw(3).u64(0).u64(1).kvU32("general.alignment", 48).b, "general.alignment 48 is not a power of two"},
		{"alignment as string", newRaw(3).u64(0).u64(1).kvStr("general.alignment", "32").b, "general.alignment 32 is not a power of two uint32"},
		{"zero dimensions", newRaw(3).u64(1).u64(0).info("w", gguf.F32, 0).data(32, 4), `tensor "w" has 0 dimensions`},
		{"five dimensions", newRaw(3).u64(1).u64(0).info("w", gguf.F32, 0, 1, 1, 1, 1, 1).data(32, 4), `tensor "w" has 5 dimensions`},
		{"zero dimension", newRaw(3).u64(1).u64(0).info("w", gguf.F32, 0, 4, 0).data(32, 16), `tensor "w" dimension 1 is 0`},
		{"negative dimension", newRaw(3).u64(1).u64(0).info("w", gguf.F32, 0, 4, uint64(1<<64-5)).data(32, 16), `tensor "w" dimension 1 is -5`},
		{"dims product overflows u64", newRaw(3).u64(1).u64(0).info("w", gguf.F32, 0, 1<<40, 1<<40, 2).data(32, 16), `tensor "w" dimensions [1099511627776 1099511627776] are absurdly large`},
		{"dims product 2^60", newRaw(3).u64(1).u64(0).info("w", gguf.F32, 0, 1<<30, 1<<30).data(32, 16), "absurdly large"},
		{"type id 99", newRaw(3).u64(1).u64(0).info("w", 99, 0, 4).data(32, 16), `tensor "w" has unknown type 99`},
		{"partial block", newRaw(3).u64(1).u64(0).info("w", gguf.Q4_K, 0, 128).data(32, 144), "not a whole number of Q4_K blocks of 256"},
		{"misaligned offset", newRaw(3).u64(2).u64(0).info("a", gguf.F32, 0, 4).info("b", gguf.F32, 16, 4).data(32, 64), `tensor "b" offset 16 is not aligned to 32`},
		{"misaligned offset, alignment 64", newRaw(3).u64(1).u64(1).kvU32("general.alignment", 64).info("a", gguf.F32, 32, 4).data(64, 128), "not aligned to 64"},
		{"offset past the end", newRaw(3).u64(1).u64(0).info("w", gguf.F32, 1<<40, 8).data(32, 32), `tensor "w" (32 bytes at data offset 1099511627776) runs past the end`},
		{"offset near 2^64", newRaw(3).u64(1).u64(0).info("w", gguf.F32, 1<<64-32, 8).data(32, 32), "runs past the end"},
		{"data too short", newRaw(3).u64(1).u64(0).info("w", gguf.F32, 0, 8).data(32, 31), "runs past the end"},
		{"overlapping tensors", newRaw(3).u64(2).u64(0).info("a", gguf.F32, 0, 16).info("b", gguf.F32, 32, 16).data(32, 128), `tensor "b" overlaps`},
		{"same offset", newRaw(3).u64(2).u64(0).info("a", gguf.F32, 0, 4).info("b", gguf.F32, 0, 4).data(32, 64), "overlaps"},
		{"duplicate tensor", newRaw(3).u64(2).u64(0).info("a", gguf.F32, 0, 4).info("a", gguf.F32, 32, 4).data(32, 64), `duplicate tensor name "a"`},
		{"no data section", newRaw(3).u64(1).u64(0).info("a", gguf.F32, 0, 4).b, "file ends before the tensor data section"},
	}
	for _, c := range cases {
		_, err := parseChecked(t, c.name, c.file)
		if err == nil {
			t.Errorf("%s: parsed without error", c.name)
			continue
		}
		if !errors.Is(err, gguf.ErrFormat) {
			t.Errorf("%s: error %v is not a FormatError", c.name, err)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
	}
}

// Valid files the reader must accept: every version, with hand-built bytes
// (not the writer's), tensors out of offset order and gaps between them.
func TestValidHandBuilt(t *testing.T) {
	for _, version := range []uint32{1, 2, 3} {
		r := newRaw(version).n(2).n(3).
			kvStr("general.architecture", "llama").
			kvU32("llama.block_count", 8).
			str("tokens").u32(uint32(gguf.TypeArray)).u32(uint32(gguf.TypeString)).n(2).str("<s>").str("a").
			info("second", gguf.Q8_0, 64, 32, 1).
			info("first", gguf.F16, 0, 3, 5)
		file := r.data(32, 64+34)
		name := fmt.Sprintf("v%d", version)
		g, err := parseChecked(t, name, file)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if g.Version != version || g.Architecture() != "llama" {
			t.Errorf("%s: version %d arch %q", name, g.Version, g.Architecture())
		}
		if n, _ := g.Uint("llama.block_count"); n != 8 {
			t.Errorf("%s: block_count %d", name, n)
		}
		if toks, _ := g.Strings("tokens"); len(toks) != 2 || toks[1] != "a" {
			t.Errorf("%s: tokens %q", name, toks)
		}
		ti, ok := g.Tensor("first")
		if !ok || ti.Size != 30 || ti.Offset != 0 || ti.Dims[1] != 5 {
			t.Errorf("%s: first = %+v", name, ti)
		}
		ti, ok = g.Tensor("second")
		if !ok || ti.Size != 34 || ti.Offset != 64 || ti.Type != gguf.Q8_0 {
			t.Errorf("%s: second = %+v", name, ti)
		}
	}
}

// section names the part of a valid file that byte offset k falls in.
func section(g *gguf.File, headerEnd, metaEnd, infoEnd, k uint64) string {
	switch {
	case k < headerEnd:
		return "header"
	case k < metaEnd:
		return "metadata"
	case k < infoEnd:
		return "tensor infos"
	case k < g.DataOffset:
		return "padding"
	}
	return "tensor data"
}

// Truncating a valid file anywhere before the end of its last tensor gives
// an error; truncating in the padding after it does not.
func TestTruncatedEverywhere(t *testing.T) {
	meta := allValues()
	tensors := randomTensors(rand.New(rand.NewSource(9)))[:4]
	var buf bytes.Buffer
	if err := gguf.Write(&buf, meta, tensors); err != nil {
		t.Fatal(err)
	}
	file := buf.Bytes()
	g, err := gguf.Parse(bytes.NewReader(file), uint64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	// Section boundaries: the header is 24 bytes; metadata ends where the
	// first tensor info (its name length, then name) starts.
	first := append(binary.LittleEndian.AppendUint64(nil, uint64(len(tensors[0].Name))), tensors[0].Name...)
	metaEnd := uint64(bytes.Index(file, first))
	last := tensors[len(tensors)-1]
	lastName := append(binary.LittleEndian.AppendUint64(nil, uint64(len(last.Name))), last.Name...)
	// name, n_dims, dims, type, offset
	infoEnd := uint64(bytes.LastIndex(file, lastName) + len(lastName) + 4 + 8*len(last.Dims) + 4 + 8)
	dataEnd := uint64(0)
	for _, ti := range g.Tensors {
		dataEnd = max(dataEnd, g.DataOffset+ti.Offset+ti.Size)
	}
	if dataEnd >= uint64(len(file)) {
		t.Fatalf("test file has no trailing padding (data ends at %d of %d)", dataEnd, len(file))
	}
	errorsBySection := map[string]int{}
	for k := 0; k < len(file); k++ {
		name := fmt.Sprintf("truncated at %d", k)
		_, err := parseChecked(t, name, file[:k])
		if uint64(k) >= dataEnd {
			if err != nil {
				t.Errorf("%s (after the last tensor, which ends at %d): %v", name, dataEnd, err)
			}
			continue
		}
		sec := section(g, 24, metaEnd, infoEnd, uint64(k))
		if err == nil {
			t.Errorf("%s (in %s): no error", name, sec)
			continue
		}
		msg := err.Error()
		if !errors.Is(err, gguf.ErrFormat) || !(strings.Contains(msg, "end of file") || strings.Contains(msg, "cannot fit") ||
			strings.Contains(msg, "past the end") || strings.Contains(msg, "file ends before")) {
			t.Errorf("%s (in %s): error %q does not say the file is short", name, sec, msg)
		}
		errorsBySection[sec]++
	}
	for _, sec := range []string{"header", "metadata", "tensor infos", "tensor data"} {
		if errorsBySection[sec] == 0 {
			t.Errorf("no truncation point fell in the %s", sec)
		}
	}
	t.Logf("truncation errors by section: %v", errorsBySection)
}
