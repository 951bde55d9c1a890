//go:build (linux || darwin) && cgo

package dawn

import (
	"bufio"
	"os"
	"strings"
	"sync"
	"syscall"
)

// Dawn writes its adapter-initialisation warnings (e.g. "Vulkan
// shaderUniform*ArrayDynamicIndexing required" on old lavapipe) straight
// to file descriptor 2, which would put unstructured text among the
// program's JSON log lines. So the probe runs with fd 2 pointed at a pipe
// and the lines go to Warn instead.

var (
	warnMu sync.Mutex
	// Warn receives each line Dawn printed while probing (nil: dropped).
	Warn func(line string)
)

// SetWarn sets the receiver of Dawn's probe messages.
func SetWarn(f func(line string)) {
	warnMu.Lock()
	Warn = f
	warnMu.Unlock()
}

// captureStderr runs f with fd 2 redirected into a pipe and hands each
// line written meanwhile to Warn. If the redirection cannot be set up, f
// runs with stderr as it is.
func captureStderr(f func()) {
	saved, err := syscall.Dup(2)
	if err != nil {
		f()
		return
	}
	defer syscall.Close(saved)
	r, w, err := os.Pipe()
	if err != nil {
		f()
		return
	}
	if err := dup2(int(w.Fd()), 2); err != nil {
		r.Close()
		w.Close()
		f()
		return
	}
	done := make(chan []string)
	go func() { // read while f writes: a full pipe would block Dawn
		var lines []string
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				lines = append(lines, l)
			}
		}
		r.Close()
		done <- lines
	}()
	f()
	_ = dup2(saved, 2)
	w.Close()
	lines := <-done
	warnMu.Lock()
	warn := Warn
	warnMu.Unlock()
	if warn != nil && len(lines) > 0 {
		warn(strings.Join(lines, " "))
	}
}
