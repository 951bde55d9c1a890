//go:build !(linux || darwin || freebsd)

package gguf

import (
	"errors"
	"os"
)

var errNoMmap = errors.New("mmap not supported")

// mmapFile is unavailable here; Mmap falls back to reading the file.
func mmapFile(f *os.File, size int) ([]byte, func() error, error) {
	return nil, nil, errNoMmap
}
