//go:build js || !cgo || !(linux || darwin)

package gpu

import (
	"fmt"
	"runtime"

	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

// dawnAdapters: this build has no Dawn loader (the browser's WebGPU is
// used through the wgpu binding; other builds need cgo on Linux or macOS).
func dawnAdapters(Options, Backend) ([]hal.Adapter, error) {
	return nil, fmt.Errorf("gpu: %w in this build (%s/%s; it needs cgo on linux or darwin)", hal.ErrDawnAbsent, runtime.GOOS, runtime.GOARCH)
}

// DawnLibrary says why this build has no Dawn.
func DawnLibrary(opts Options) (string, error) {
	_, err := dawnAdapters(opts, BackendAuto)
	return "", err
}
