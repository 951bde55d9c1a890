package gguf_test

import (
	"bytes"
	"testing"

	"github.com/wgllm/wgllm/runtime/gguf"
)

// tinyFile is the seed of FuzzParse: a little of every section.
func tinyFile(version uint32) []byte {
	meta := []gguf.KV{
		{"general.architecture", gguf.Val("llama")},
		{"general.alignment", gguf.Val(uint32(16))},
		{"llama.block_count", gguf.Val(uint32(2))},
		{"f", gguf.Val(float32(0.5))},
		{"ok", gguf.Val(true)},
		{"tokens", gguf.Val([]string{"a", "bc"})},
		{"scores", gguf.Val([]float32{1, -1})},
		{"nest", gguf.Val([]any{[]int32{1}, []uint8{}})},
	}
	tensors := []gguf.TensorToWrite{
		{Name: "a", Dims: []uint64{3, 2}, Type: gguf.F16, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{Name: "q", Dims: []uint64{32}, Type: gguf.Q8_0, Data: make([]byte, 34)},
	}
	var buf bytes.Buffer
	if err := (gguf.Writer{Version: version}).Write(&buf, meta, tensors); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// FuzzParse: no input makes Parse panic; whatever parses can be read
// tensor by tensor, written back, and re-parsed to the same file.
func FuzzParse(f *testing.F) {
	for _, v := range []uint32{1, 2, 3} {
		f.Add(tinyFile(v))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := gguf.Parse(bytes.NewReader(data), uint64(len(data)))
		if err != nil {
			return
		}
		for _, k := range g.Keys {
			_ = g.Metadata[k].Describe()
		}
		tensors := make([]gguf.TensorToWrite, len(g.Tensors))
		for i, ti := range g.Tensors {
			b, err := g.ReadTensor(ti)
			if err != nil {
				t.Fatalf("ReadTensor(%s) of a parsed file: %v", ti.Name, err)
			}
			m, err := g.TensorBytes(ti)
			if err != nil || !bytes.Equal(b, m) {
				t.Fatalf("TensorBytes(%s): %v", ti.Name, err)
			}
			tensors[i] = gguf.TensorToWrite{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: b}
		}
		meta := make([]gguf.KV, len(g.Keys))
		for i, k := range g.Keys {
			meta[i] = gguf.KV{Key: k, Value: g.Metadata[k]}
		}
		var w1 bytes.Buffer
		if err := (gguf.Writer{Version: g.Version}).Write(&w1, meta, tensors); err != nil {
			return // e.g. a tensor name the writer refuses (empty or over 63 bytes)
		}
		g2, err := gguf.Parse(bytes.NewReader(w1.Bytes()), uint64(w1.Len()))
		if err != nil {
			t.Fatalf("re-parsing a written file: %v", err)
		}
		meta2 := make([]gguf.KV, len(g2.Keys))
		for i, k := range g2.Keys {
			meta2[i] = gguf.KV{Key: k, Value: g2.Metadata[k]}
		}
		tensors2 := make([]gguf.TensorToWrite, len(g2.Tensors))
		for i, ti := range g2.Tensors {
			b, err := g2.ReadTensor(ti)
			if err != nil {
				t.Fatal(err)
			}
			tensors2[i] = gguf.TensorToWrite{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: b}
		}
		var w2 bytes.Buffer
		if err := (gguf.Writer{Version: g2.Version}).Write(&w2, meta2, tensors2); err != nil {
			t.Fatalf("rewriting a re-parsed file: %v", err)
		}
		if !bytes.Equal(w1.Bytes(), w2.Bytes()) {
			t.Fatalf("write(parse(write(parse(x)))) differs from write(parse(x))")
		}
	})
}
