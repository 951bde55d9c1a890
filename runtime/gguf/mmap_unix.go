//go:build linux || darwin || freebsd

package gguf

import (
	"errors"
	"os"
	"syscall"
)

var errNoMmap = errors.New("mmap not supported")

func mmapFile(f *os.File, size int) ([]byte, func() error, error) {
	b, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return b, func() error { return syscall.Munmap(b) }, nil
}
