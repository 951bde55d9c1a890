//go:build !(linux || darwin || freebsd)

package hub

import "os"

// lockFile is a no-op where flock is unavailable: two concurrent pulls of
// one file can then spoil its partial download, which the checksum catches.
func lockFile(*os.File) error { return nil }
