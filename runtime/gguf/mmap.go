package gguf

import (
	"errors"
	"fmt"
	"os"
)

// Mmap returns the bytes of the whole file. On Linux, macOS and FreeBSD a
// file opened with Open (or parsed from an *os.File) is mapped read-only,
// so tensor data is paged in from the page cache as it is touched and is
// never copied into the Go heap; elsewhere, or for other readers, the
// file is read into memory once. Every call returns the same slice. It is
// valid until Close (touching a mapping after Close crashes the process)
// and must not be written to.
func (g *File) Mmap() ([]byte, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errors.New("gguf: Mmap after Close")
	}
	if g.data != nil {
		return g.data, nil
	}
	if int64(g.FileSize) < 0 || uint64(int(g.FileSize)) != g.FileSize {
		return nil, fmt.Errorf("gguf: file of %d bytes does not fit in memory", g.FileSize)
	}
	if f, ok := g.r.(*os.File); ok && g.FileSize > 0 {
		b, unmap, err := mmapFile(f, int(g.FileSize))
		if err == nil {
			g.data, g.unmap = b, unmap
			return b, nil
		}
		if !errors.Is(err, errNoMmap) {
			return nil, fmt.Errorf("gguf: mmap: %w", err)
		}
	}
	b := make([]byte, g.FileSize)
	if _, err := g.r.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("gguf: reading file: %w", err)
	}
	g.data = b
	return b, nil
}

// Mapped reports whether Mmap has mapped the file (rather than read it).
func (g *File) Mapped() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.unmap != nil
}

// TensorBytes returns a tensor's bytes inside the slice Mmap returns
// (mapping the file on first use), without copying them.
func (g *File) TensorBytes(t TensorInfo) ([]byte, error) {
	b, err := g.Mmap()
	if err != nil {
		return nil, err
	}
	start := g.DataOffset + t.Offset
	if start < g.DataOffset || start > uint64(len(b)) || t.Size > uint64(len(b))-start {
		return nil, fmt.Errorf("gguf: tensor %q (%d bytes at %d) lies outside the %d-byte file", t.Name, t.Size, start, len(b))
	}
	return b[start : start+t.Size : start+t.Size], nil
}

// Close releases the mapping, if any, and the underlying file.
func (g *File) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	var err error
	if g.unmap != nil {
		err = g.unmap()
		g.unmap = nil
	}
	g.data = nil
	if g.closer != nil {
		if cerr := g.closer.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
