package gguf_test

import (
	"bytes"
	"math/rand"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/runtime/gguf"
)

func checkTensorBytes(t *testing.T, g *gguf.File) {
	t.Helper()
	for _, ti := range g.Tensors {
		mapped, err := g.TensorBytes(ti)
		if err != nil {
			t.Fatal(err)
		}
		read, err := g.ReadTensor(ti)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(mapped, read) || uint64(len(mapped)) != ti.Size || cap(mapped) != len(mapped) {
			t.Fatalf("%s: TensorBytes (len %d cap %d) differs from ReadTensor (len %d)", ti.Name, len(mapped), cap(mapped), len(read))
		}
	}
}

func TestMmap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := gguf.WriteFile(path, allValues(), randomTensors(rand.New(rand.NewSource(5)))); err != nil {
		t.Fatal(err)
	}
	g, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	b1, err := g.Mmap()
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := g.Mmap()
	if uint64(len(b1)) != g.FileSize || &b1[0] != &b2[0] {
		t.Fatalf("Mmap: len %d (file %d), same slice %v", len(b1), g.FileSize, &b1[0] == &b2[0])
	}
	if want := runtime.GOOS == "linux" || runtime.GOOS == "darwin" || runtime.GOOS == "freebsd"; g.Mapped() != want {
		t.Errorf("Mapped() = %v on %s", g.Mapped(), runtime.GOOS)
	}
	if string(b1[:4]) != "GGUF" {
		t.Errorf("mapping starts %q", b1[:4])
	}
	checkTensorBytes(t, g)
	// A tensor info that does not belong to the file is refused, not sliced.
	bogus := g.Tensors[0]
	bogus.Offset = g.FileSize
	if _, err := g.TensorBytes(bogus); err == nil {
		t.Error("TensorBytes past the end: no error")
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := g.Mmap(); err == nil {
		t.Error("Mmap after Close: no error")
	}

	// A file parsed from memory falls back to reading.
	var buf bytes.Buffer
	if err := gguf.Write(&buf, allValues(), randomTensors(rand.New(rand.NewSource(6)))); err != nil {
		t.Fatal(err)
	}
	m, err := gguf.Parse(bytes.NewReader(buf.Bytes()), uint64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	data, err := m.Mmap()
	if err != nil || !bytes.Equal(data, buf.Bytes()) || m.Mapped() {
		t.Fatalf("Mmap of an in-memory file: err %v, equal %v, mapped %v", err, bytes.Equal(data, buf.Bytes()), m.Mapped())
	}
	checkTensorBytes(t, m)

	// ParseBytes uses the caller's bytes without copying them.
	p, err := gguf.ParseBytes(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	pdata, err := p.Mmap()
	if err != nil || &pdata[0] != &buf.Bytes()[0] || len(pdata) != buf.Len() {
		t.Fatalf("Mmap of ParseBytes: err %v, aliases the input %v", err, err == nil && &pdata[0] == &buf.Bytes()[0])
	}
	checkTensorBytes(t, p)
	if _, err := gguf.ParseBytes(buf.Bytes()[:buf.Len()/2]); err == nil {
		t.Error("ParseBytes of half a file: no error")
	}
}

func TestMmapKJV(t *testing.T) {
	path := filepath.Join(sharedfiles.SharedDir(t), "models", "kjv-30m-q4_0.gguf")
	g, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	checkTensorBytes(t, g)
}
