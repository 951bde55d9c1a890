//go:build linux && cgo

package dawn

import "syscall"

// dup2 with Dup3, which every Linux architecture has (arm64 lacks dup2).
func dup2(from, to int) error { return syscall.Dup3(from, to, 0) }
